"""Every stack file in the repo loads; dev and prod ask for what they say they ask for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.plan.topology import build_topology
from support.repo import REPO_ROOT

# Globbed, so a new Pulumi.<stack>.yaml is covered without touching this file.
STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in REPO_ROOT.glob("Pulumi.*.yaml"))


def load(stack: str) -> Settings:
    return load_settings(read_stack_config(stack), stack)


def test_the_repo_has_the_dev_and_prod_stacks() -> None:
    assert {"dev", "prod"} <= set(STACKS), STACKS


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_loads(stack: str) -> None:
    settings = load(stack)
    assert settings.stack == stack
    topology = build_topology(settings)
    assert len(topology.nodes) == settings.redis.node_count, stack


@pytest.mark.parametrize("stack", STACKS)
def test_every_project_key_in_a_stack_file_is_read(stack: str) -> None:
    """Keys are read under the project namespace; none is silently dropped (secure values aside)."""
    document = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    project_keys = {
        key.partition(":")[2]
        for key, value in (document.get("config") or {}).items()
        if key.startswith("cachelayer:") and not (isinstance(value, dict) and set(value) == {"secure"})
    }
    assert set(read_stack_config(stack)) == project_keys, stack


def test_dev_stack() -> None:
    settings = load("dev")
    assert settings.redis.target == "docker"
    assert settings.redis.topology == "cluster"
    assert settings.cdn is None
    assert settings.hosts is None
    assert settings.redis.tls is False
    assert settings.docker.network_name == "cachelayer-dev"
    assert [n.endpoint for n in build_topology(settings).nodes] == [f"172.30.70.{10 + i}:{7000 + i}" for i in range(6)]


def test_prod_stack() -> None:
    settings = load("prod")
    assert settings.redis.target == "hosts"
    assert settings.redis.tls is True
    assert settings.cdn is not None
    assert settings.cdn.zone_id
    assert settings.cdn.zone_name == "learn.example.com"
    assert settings.hosts is not None
    assert len(settings.hosts.machines) == 6
    topology = build_topology(settings)
    assert len({n.host for n in topology.nodes}) == 6  # one node per server
    for replica in topology.replicas:
        assert topology.master_of(replica).host != replica.host, replica.name


def test_a_missing_stack_file_names_the_known_stacks(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    with pytest.raises(SettingsError) as caught:
        read_stack_config("staging", tmp_path)
    assert caught.value.key == "stack"
    assert "Pulumi.staging.yaml" in caught.value.problem
    assert "dev" in caught.value.fix


def test_secure_values_and_provider_keys_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.x.yaml").write_text(
        "config:\n"
        "  docker:host: unix:///var/run/docker.sock\n"
        "  cachelayer:app_password:\n"
        "    secure: AAABAbcd\n"
        "  cachelayer:redis:\n"
        "    node_count: 8\n"
    )
    config = read_stack_config("x", tmp_path)
    assert config == {"redis": {"node_count": 8}}
    assert load_settings(config, "x").redis.masters == 4
