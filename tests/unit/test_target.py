"""Which deployment `--stack` resolves to: sandbox, `pulumi stack output`, or the environment
(cli/common.resolve_target; the sources themselves are ops/target.py and sandbox/targets.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from cachelayer.cli.common import resolve_target
from cachelayer.errors import UsageError
from cachelayer.ops.target import Endpoint, Target, TargetError, from_environment

FIXTURE = Path(__file__).parent / "fixtures" / "stack-output-prod.json"


def no_sandbox(stack: str, workdir: Path | None) -> Target | None:
    """A machine with no running sandbox."""
    return None


def test_pulumi_outputs_file_gives_nodes_users_and_tls(tmp_path: Path) -> None:
    target = resolve_target("prod", outputs_file=FIXTURE, env={"REDIS_TLS_CA": "/etc/ca.crt"})
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
        resolve_target("prod", outputs_file=FIXTURE, env={})


def test_pulumi_cli_is_run_with_show_secrets_and_the_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    outputs = json.loads(FIXTURE.read_text())
    outputs["connection"]["tls"] = False

    def runner(argv: Sequence[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, json.dumps(outputs), ""

    target = resolve_target("prod", runner=runner, env={}, find_sandbox=no_sandbox)
    assert calls == [["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", "prod"]]
    assert target.source == "pulumi stack output --stack prod" and target.tls_ca is None


def test_a_failing_pulumi_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no stack named"):
        resolve_target("prod", runner=lambda argv: (255, "", "error: no stack named 'prod' found"), env={},
                       find_sandbox=no_sandbox)


def test_environment_nodes_and_sentinels() -> None:
    env = {
        "REDIS_ADMIN_PASSWORD": "admin-secret",
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
    target = from_environment("dev", {"REDIS_ADMIN_PASSWORD": "x"}, seed="10.0.0.9:7003", discover=False)
    assert target is not None and target.nodes == (Endpoint("redis-7003", "10.0.0.9", 7003),)
    assert target.source == "environment (REDIS_ADMIN_PASSWORD, --seed 10.0.0.9:7003)"
    assert from_environment("dev", {}, seed="10.0.0.9:7003") is None
    with pytest.raises(TargetError, match="no node"):
        from_environment("dev", {"REDIS_ADMIN_PASSWORD": "x"})
    with pytest.raises(TargetError, match="REDIS_NODE_1_PORT"):
        from_environment("dev", {"REDIS_ADMIN_PASSWORD": "x", "REDIS_NODE_1_PORT": "seven"})


def test_nothing_found_names_every_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Pulumi CLI
    with pytest.raises(TargetError) as raised:
        resolve_target("dev", env={}, find_sandbox=no_sandbox)
    message = str(raised.value)
    assert "no running sandbox" in message and "no Pulumi CLI" in message and "REDIS_ADMIN_PASSWORD" in message


def test_the_application_password_is_not_taken_for_the_admin_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """REDIS_PASSWORD is the app user's (the cache library reads it so): the CLI never logs in as
    admin with it, and says which variable it wants instead."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no Pulumi CLI
    env = {"REDIS_PASSWORD": "app-secret", "REDIS_NODE_1_HOST": "10.0.0.1", "REDIS_NODE_1_PORT": "7000"}
    assert from_environment("dev", env, discover=False) is None
    with pytest.raises(TargetError) as raised:
        resolve_target("dev", env=env, find_sandbox=no_sandbox)
    assert "REDIS_PASSWORD is set, but it is the application's password" in str(raised.value)
    assert "app-secret" not in str(raised.value)
    admin = from_environment("dev", {**env, "REDIS_ADMIN_PASSWORD": "admin-secret"}, discover=False)
    assert admin is not None and (admin.admin_user, admin.admin_password) == ("admin", "admin-secret")


def test_an_unreadable_outputs_file_is_a_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / "outputs.json"
    broken.write_text("not json")
    with pytest.raises(UsageError, match="--outputs"):
        resolve_target("prod", outputs_file=broken, env={}, find_sandbox=no_sandbox)
