"""Which deployment `--stack` resolves to: sandbox, `pulumi stack output`, or the environment."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from cachelayer.ops.target import Endpoint, TargetError, from_environment, resolve

FIXTURE = Path(__file__).parent / "fixtures" / "stack-output-prod.json"


def no_sandbox(tmp_path: Path) -> Path:
    return tmp_path / "no-sandbox"


def test_pulumi_outputs_file_gives_nodes_users_and_tls(tmp_path: Path) -> None:
    target = resolve("prod", outputs_file=FIXTURE, env={"REDIS_TLS_CA": "/etc/ca.crt"})
    assert target.source == f"stack outputs file {FIXTURE}"
    assert target.kind == "cluster"
    assert target.nodes[0] == Endpoint("redis-7000", "192.0.2.11", 7000)
    assert [e.address for e in target.nodes][-1] == "192.0.2.16:7005"
    assert target.admin_user == "admin" and target.admin_password == "fixture-admin-secret"
    assert target.passwords == {"admin": "fixture-admin-secret", "app": "fixture-app-secret"}
    assert target.tls_ca == "/etc/ca.crt"
    assert target.settings is not None and target.settings.redis.tls  # Pulumi.prod.yaml, for drift


def test_pulumi_tls_without_a_ca_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_TLS_CA", raising=False)
    with pytest.raises(TargetError, match="REDIS_TLS_CA"):
        resolve("prod", outputs_file=FIXTURE, env={})


def test_pulumi_cli_is_run_with_show_secrets_and_the_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    outputs = json.loads(FIXTURE.read_text())
    outputs["connection"]["tls"] = False

    def runner(argv: Sequence[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, json.dumps(outputs), ""

    monkeypatch.setattr("cachelayer.ops.target.default_workdir", lambda stack: no_sandbox(tmp_path))
    target = resolve("prod", runner=runner, env={})
    assert calls == [["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", "prod"]]
    assert target.source == "pulumi stack output --stack prod" and target.tls_ca is None


def test_a_failing_pulumi_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("cachelayer.ops.target.default_workdir", lambda stack: no_sandbox(tmp_path))
    with pytest.raises(TargetError, match="no stack named"):
        resolve("prod", runner=lambda argv: (255, "", "error: no stack named 'prod' found"), env={})


def test_environment_nodes_and_sentinels() -> None:
    env = {
        "REDIS_PASSWORD": "admin-secret",
        "SENTINEL_PASSWORD": "sentinel-secret",
        "REDIS_NODE_1_HOST": "10.0.0.1", "REDIS_NODE_1_PORT": "7000",
        "REDIS_NODE_2_HOST": "10.0.0.2", "REDIS_NODE_2_PORT": "7001",
        "REDIS_SENTINEL_1_HOST": "10.0.0.1", "REDIS_SENTINEL_1_PORT": "26379",
    }
    target = from_environment("dev", env)
    assert target is not None
    assert target.kind == "sentinel"
    assert [e.address for e in target.nodes] == ["10.0.0.1:7000", "10.0.0.2:7001"]
    assert target.sentinels == (Endpoint("redis-sentinel-26379", "10.0.0.1", 26379),)
    assert (target.sentinel_user, target.sentinel_password) == ("sentinel", "sentinel-secret")
    assert target.groups == ("redis-master-1", "redis-master-2", "redis-master-3")  # from Pulumi.dev.yaml
    assert "secret" not in repr(target)


def test_environment_seed_comes_first_and_needs_a_password() -> None:
    target = from_environment("dev", {"REDIS_PASSWORD": "x"}, seed="10.0.0.9:7003", discover=False)
    assert target is not None and target.nodes == (Endpoint("redis-7003", "10.0.0.9", 7003),)
    assert target.source == "environment (REDIS_PASSWORD, --seed 10.0.0.9:7003)"
    assert from_environment("dev", {}, seed="10.0.0.9:7003") is None
    with pytest.raises(TargetError, match="no node"):
        from_environment("dev", {"REDIS_PASSWORD": "x"})
    with pytest.raises(TargetError, match="REDIS_NODE_1_PORT"):
        from_environment("dev", {"REDIS_PASSWORD": "x", "REDIS_NODE_1_PORT": "seven"})


def test_nothing_found_names_every_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("cachelayer.ops.target.default_workdir", lambda stack: no_sandbox(tmp_path))
    monkeypatch.setattr("cachelayer.ops.target.shutil.which", lambda name: None)
    with pytest.raises(TargetError) as raised:
        resolve("dev", env={})
    message = str(raised.value)
    assert "no running sandbox" in message and "no Pulumi CLI" in message and "REDIS_PASSWORD" in message
