"""`cachelayer drift` on real redis-server: none on a fresh deployment, and each kind found.
Ports 7730-7735 (cluster), 7740-7745 + 27740-27742 (sentinel)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from cachelayer.cli.app import main
from cachelayer.sandbox.local import LocalSandbox

from .conftest import cluster_nodes, wait_until

pytestmark = pytest.mark.integration


def drift(sandbox: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]]]:
    code = main(["drift", "--workdir", str(sandbox.workdir), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["unreadable"] == []
    return code, document["drift"]


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7730)
    sandbox.up()
    return sandbox


def test_no_drift_on_a_fresh_cluster(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert drift(cluster, capsys) == (0, [])


def test_config_set_by_hand_is_drift_with_its_fix(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with cluster.admin_client(7731) as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "100mb")
    try:
        code, found = drift(cluster, capsys)
        assert code == 1
        assert {(d["where"], d["item"], d["expected"], d["actual"]) for d in found} == {
            ("redis-7731", "maxmemory-policy", "allkeys-lru", "noeviction"),
            ("redis-7731", "maxmemory", str(2 * 1024**3), str(100 * 1024**2)),
        }
        assert any("CONFIG SET maxmemory-policy allkeys-lru" in d["fix"] for d in found)
        # Each fix works as pasted into a shell where the operator's REDIS_ADMIN_PASSWORD is set.
        env = {**os.environ, "REDIS_ADMIN_PASSWORD": cluster.passwords.admin}
        for d in found:
            command = d["fix"].removesuffix(" (or re-run `pulumi up`)")
            pasted = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=10)
            assert pasted.stdout.strip() == "OK", (command, pasted.stdout, pasted.stderr)
        assert drift(cluster, capsys) == (0, [])
    finally:
        with cluster.admin_client(7731) as admin:
            admin.config_set("maxmemory-policy", "allkeys-lru")
            admin.config_set("maxmemory", "2gb")
    assert drift(cluster, capsys) == (0, [])


def test_acl_rules_and_password_changed_by_hand(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with cluster.admin_client(7732) as admin:
        admin.execute_command("ACL SETUSER", "app", "+flushall", ">a-new-password")
    try:
        code, found = drift(cluster, capsys)
        out = json.dumps(found)
        assert code == 1
        # Redis drops the -flushall rule when +flushall is added: the stack's rule is what is missing.
        assert [(d["where"], d["item"], d["expected"]) for d in found if d["item"] == "app rules"] == [
            ("redis-7732", "app rules", "-flushall")]
        assert [d["item"] for d in found if d["item"] == "app password"] == ["app password"]
        assert "a-new-password" not in out and cluster.passwords.app not in out
    finally:
        with cluster.admin_client(7732) as admin:
            admin.execute_command("ACL LOAD")
    assert drift(cluster, capsys) == (0, [])


def test_cluster_shape_drift(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = cluster_nodes(cluster, 7730)
    masters = sorted((e, d["node_id"]) for e, d in nodes.items() if "master" in d["flags"])
    (_, bare_id), (other, other_id) = masters[0], masters[1]
    (moved,) = [e for e, d in nodes.items() if d["master_id"] == bare_id]
    moved_port = int(moved.rsplit(":", 1)[1])
    with cluster.admin_client(moved_port) as admin:
        admin.execute_command("CLUSTER REPLICATE", other_id)
    try:
        # The move reaches the node drift reads CLUSTER NODES from through gossip.
        wait_until(lambda: drift(cluster, capsys)[0] == 1, 10, "drift to see the moved replica")
        code, found = drift(cluster, capsys)
        assert code == 1
        shape = {(d["item"], d["expected"], d["actual"]) for d in found if d["kind"] == "shape"}
        assert (f"replicas of {other}", "1", "2") in shape
        assert any(item.startswith("replicas of ") and actual == "0" for item, _, actual in shape)
    finally:
        with cluster.admin_client(moved_port) as admin:
            admin.execute_command("CLUSTER REPLICATE", bare_id)
        cluster.wait_converged(timeout=30)


def test_environment_and_seed_find_the_whole_cluster(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_ADMIN_PASSWORD", cluster.passwords.admin)
    code = main(["health", "--stack", "dev", "--seed", "127.0.0.1:7733", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0, document
    assert document["target"]["source"] == "environment (REDIS_ADMIN_PASSWORD, --seed 127.0.0.1:7733)"
    assert document["target"]["nodes"] == [f"127.0.0.1:{p}" for p in range(7730, 7736)]


def test_sentinel_settings_changed_by_hand(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7740, topology="sentinel")
    sandbox.up()
    assert drift(sandbox, capsys) == (0, [])
    with sandbox.admin_client(27741) as admin:
        admin.execute_command("SENTINEL SET", "redis-master-2", "quorum", "1")
    code, found = drift(sandbox, capsys)
    assert code == 1
    assert [(d["where"], d["item"], d["expected"], d["actual"]) for d in found] == [
        ("redis-sentinel-27741", "redis-master-2 quorum", "2", "1")]
    assert found[0]["fix"] == "SENTINEL SET redis-master-2 quorum 2 on every sentinel"
