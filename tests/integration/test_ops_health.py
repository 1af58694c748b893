"""`cachelayer health` on real redis-server: healthy on a fresh deployment, and each check fails
on a deployment broken on purpose. Ports 7710-7715 (cluster), 7720-7725 + 27720-27722 (sentinel)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from cachelayer.cli import main
from cachelayer.sandbox import LocalSandbox

from .conftest import cluster_nodes, wait_until

pytestmark = pytest.mark.integration


def health(sandbox: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["health", "--workdir", str(sandbox.workdir), "--json"])
    return code, json.loads(capsys.readouterr().out)


def failing(document: dict[str, Any]) -> dict[str, list[str]]:
    return {c["name"]: c["problems"] for c in document["checks"] if not c["ok"]}


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7710)
    sandbox.up()
    return sandbox


def test_fresh_cluster_is_healthy_and_json_has_the_documented_shape(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = health(cluster, capsys)
    assert code == 0, failing(document)
    assert document["ok"] is True and document["command"] == "health"
    assert document["target"]["source"].startswith("local sandbox")
    assert [n["name"] for n in document["nodes"]] == [f"redis-{p}" for p in range(7710, 7716)]
    assert {c["name"] for c in document["checks"]} >= {
        "reachable", "cluster_state", "slots", "node_flags", "open_slots", "masters", "replicas", "replica_lag",
        "placement", "memory", "persistence",
    }
    assert all(set(c) == {"name", "description", "ok", "problems"} for c in document["checks"])


def test_an_open_slot_is_a_problem(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = cluster_nodes(cluster, 7710)
    masters = {e: d for e, d in nodes.items() if "master" in d["flags"] and d["slots"]}
    (source, source_detail), (_, dest_detail) = sorted(masters.items())[:2]
    slot = int(source_detail["slots"][0][0])
    source_port = int(source.rsplit(":", 1)[1])
    with cluster.admin_client(source_port) as admin:
        admin.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dest_detail["node_id"])
    try:
        code, document = health(cluster, capsys)
        assert code == 1
        assert [p.split(" (")[0] for p in failing(document)["open_slots"]] == [f"slot {slot} is migrating on redis-{source_port}"]
    finally:
        with cluster.admin_client(source_port) as admin:
            admin.execute_command("CLUSTER SETSLOT", slot, "STABLE")
    assert health(cluster, capsys)[0] == 0


def test_memory_near_maxmemory_is_a_problem(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with cluster.admin_client(7710) as admin:
        used = int(admin.info("memory")["used_memory"])
        original = str(admin.config_get("maxmemory")["maxmemory"])
        admin.config_set("maxmemory", str(int(used * 1.05)))
    try:
        code, document = health(cluster, capsys)
        assert code == 1
        assert failing(document).keys() == {"memory"}
        assert failing(document)["memory"][0].startswith("redis-7710 uses 9")
    finally:
        with cluster.admin_client(7710) as admin:
            admin.config_set("maxmemory", original)


def test_a_killed_replica_fails_reachable_and_replicas_then_pfail(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    replica = next(n for n in cluster.status().nodes if n.role == "replica")
    cluster.signal(replica.name, signal.SIGKILL)
    cluster.reap(replica.name)
    try:
        code, document = health(cluster, capsys)
        assert code == 1
        problems = failing(document)
        assert problems["reachable"][0].startswith(f"{replica.name} is down")
        assert any("has 0 linked replica(s)" in p for p in problems["replicas"])
        # After the node timeout the others flag it: PFAIL, then FAIL.
        flagged = wait_until(
            lambda: failing(health(cluster, capsys)[1]).get("node_flags"), 20, "the dead replica to be flagged"
        )
        assert flagged[0].startswith(f"{replica.endpoint} is flagged fail")
    finally:
        cluster.start(names=[replica.name])
        cluster.wait_converged(timeout=30)
    assert health(cluster, capsys)[0] == 0


def test_sentinel_topology_checks_quorum_agreement_and_a_stopped_sentinel(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7720, topology="sentinel")
    sandbox.up()
    code, document = health(sandbox, capsys)
    assert code == 0, failing(document)
    assert {"sentinel_quorum", "sentinel_agreement", "sentinel_replicas"} <= {c["name"] for c in document["checks"]}
    assert len(document["sentinels"]) == 3

    sandbox.stop(names=["redis-sentinel-27720", "redis-sentinel-27721"])
    code, document = health(sandbox, capsys)
    assert code == 1
    problems = failing(document)
    assert [p.split(" (")[0] for p in problems["reachable"]] == [
        "redis-sentinel-27720 is down", "redis-sentinel-27721 is down"]
    # One sentinel of three cannot authorise a failover: CKQUORUM says so for every group.
    assert len(problems["sentinel_quorum"]) == 3 and all("CKQUORUM" in p for p in problems["sentinel_quorum"])
