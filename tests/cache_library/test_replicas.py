"""The read policy on real processes: 3 masters with 2 replicas each, in cluster and in sentinel
topology. Which node answered is read from each server's INFO commandstats (GET/MGET calls since
CONFIG RESETSTAT), so a read counted on a replica was answered by that replica (in cluster mode
over a READONLY connection: without READONLY a replica answers MOVED, not the value)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cachelayer.plan.topology import Node
from cachelayer.sandbox.local import LocalSandbox
from integration.conftest import wait_until

pytestmark = pytest.mark.integration

CLUSTER_BASE = 7870  # 7870-7878
SENTINEL_BASE = 7880  # 7880-7888, sentinels 27880-27882
READS = ("cmdstat_get", "cmdstat_mget")


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def sandbox(request: pytest.FixtureRequest, sandbox_factory: Callable[..., LocalSandbox]) -> Iterator[LocalSandbox]:
    topology = str(request.param)
    base = CLUSTER_BASE if topology == "cluster" else SENTINEL_BASE
    sandbox = sandbox_factory(base, topology=topology, node_count=9, replicas_per_master=2)
    sandbox.up()
    wait_until(lambda: replicas_announced(sandbox), 30, "every master's 2 replicas announced to clients")
    yield sandbox
    sandbox.down()


def replicas_announced(sandbox: LocalSandbox) -> bool:
    """Clients learn replicas from CLUSTER SLOTS (cluster) or from the sentinels: a replica joins
    there a moment after the cluster reports ok, and a client made before reads the masters."""
    if sandbox.topology.kind == "cluster":
        # Every node's view: a client takes the slot map from whichever seed answers first.
        return all(replicas_listed(sandbox, node) == [2, 2, 2] for node in sandbox.topology.nodes)
    for sentinel in sandbox.topology.sentinels:
        with sandbox.admin_client(sentinel) as admin:
            for master in sandbox.topology.masters:
                state: dict[str, Any] = admin.execute_command("SENTINEL MASTER", master.group)
                if int(state["num-slaves"]) != 2:
                    return False
    return True


def reset_stats(sandbox: LocalSandbox) -> None:
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as admin:
            admin.config_resetstat()


def reads_by_role(sandbox: LocalSandbox) -> dict[str, int]:
    """GET + MGET calls answered by the masters and by the replicas since the last reset."""
    counts = {"master": 0, "replica": 0}
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as admin:
            role = admin.info("replication")["role"]
            stats = admin.info("commandstats")
        counts["master" if role == "master" else "replica"] += sum(int(stats.get(name, {}).get("calls", 0)) for name in READS)
    return counts


def replicated(sandbox: LocalSandbox) -> None:
    """Wait until every replica has applied every write its master acknowledged."""
    for master in sandbox.topology.masters:
        with sandbox.admin_client(master) as admin:
            assert admin.execute_command("WAIT", 2, 5000) == 2, master.name


def test_the_topology_has_two_replicas_per_master(sandbox: LocalSandbox) -> None:
    for master in sandbox.topology.masters:
        with sandbox.admin_client(master) as admin:
            assert admin.info("replication")["connected_slaves"] == 2, master.name


def test_stale_ok_reads_are_answered_by_replicas(sandbox: LocalSandbox, client_factory: Callable[..., Any]) -> None:
    writer = client_factory(sandbox)
    pages = {f"page:{i}": {"id": i} for i in range(60)}
    assert writer.mset(pages, tags=["catalog"], namespace="content")
    replicated(sandbox)
    reader = client_factory(sandbox, replica_namespaces=("content",))
    reset_stats(sandbox)
    for key, page in pages.items():
        assert reader.get(key, namespace="content") == page
    assert reader.mget(list(pages), namespace="content") == pages
    counts = reads_by_role(sandbox)
    assert counts["master"] == 0 and counts["replica"] >= 60, counts


def test_replicas_share_the_reads(sandbox: LocalSandbox, client_factory: Callable[..., Any]) -> None:
    """Cluster: redis-py's ROUND_ROBIN_REPLICAS picks the next replica per command, so one hot key
    is read from both its replicas. Sentinel: slave_for picks a replica per new connection, so one
    client's reads stay on one replica (processes spread over them); never on the master."""
    writer = client_factory(sandbox)
    assert writer.set("hot", "v", namespace="content")
    replicated(sandbox)
    reader = client_factory(sandbox, replica_namespaces=("*",))
    reset_stats(sandbox)
    for _ in range(40):
        assert reader.get("hot", namespace="content") == "v"
    per_replica = []
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as admin:
            if admin.info("replication")["role"] != "master":
                per_replica.append(int(admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0)))
    assert sum(per_replica) == 40, per_replica
    if sandbox.topology.kind == "cluster":
        assert sorted(per_replica)[-2:] == [20, 20], per_replica


def test_masters_only_by_default_and_for_sessions(sandbox: LocalSandbox, client_factory: Callable[..., Any]) -> None:
    everything = client_factory(sandbox, replica_namespaces=("*",))
    default = client_factory(sandbox)
    everything.set_session("sid-1", {"user": 1})
    assert default.set("course:1", {"id": 1})
    replicated(sandbox)
    reset_stats(sandbox)
    for _ in range(20):
        assert default.get("course:1") == {"id": 1}
        assert everything.get_session("sid-1", sliding=False) == {"user": 1}
    counts = reads_by_role(sandbox)
    assert counts == {"master": 40, "replica": 0}, counts


def test_reads_after_own_writes_go_to_the_master(sandbox: LocalSandbox, client_factory: Callable[..., Any]) -> None:
    cache = client_factory(sandbox, replica_namespaces=("*",), read_your_writes_window=30)
    reset_stats(sandbox)
    for i in range(30):
        # No WAIT here: a replica could still hold the previous value; the master never does.
        assert cache.set(f"mine:{i}", i)
        assert cache.get(f"mine:{i}") == i
    counts = reads_by_role(sandbox)
    assert counts == {"master": 30, "replica": 0}, counts


def test_an_own_invalidation_is_seen_at_once(sandbox: LocalSandbox, client_factory: Callable[..., Any]) -> None:
    writer = client_factory(sandbox)
    assert writer.set("lesson", "v1", tags=["course:9"], namespace="content")
    replicated(sandbox)
    cache = client_factory(sandbox, replica_namespaces=("content",))
    assert cache.get("lesson", namespace="content") == "v1"
    for _ in range(20):
        assert writer.set("lesson", "v1", tags=["course:9"], namespace="content")
        assert cache.invalidate_by_tags(["course:9"]) == 1
        assert cache.get("lesson", namespace="content") is None


@pytest.mark.parametrize("sandbox", ["cluster"], indirect=True)
def test_a_replica_missing_from_the_slot_map_is_read_from_again_once_it_is_back(
    sandbox: LocalSandbox, client_factory: Callable[..., Any]
) -> None:
    """Redis leaves a replica out of CLUSTER SLOTS while the cluster holds it failed (and before it
    has replicated anything), and redis-py reads that map only at start and after an error. A
    client made while one replica per shard was down reads the other one; once they are back, the
    client reads them too, within its `replica_refresh_interval`."""
    writer = client_factory(sandbox)
    assert writer.set("hot", "v", namespace="content")
    replicated(sandbox)
    paused = one_replica_per_master(sandbox)
    pids = [sandbox.running()[name].pid for name in paused]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: set(replicas_listed(sandbox, sandbox.topology.masters[0])) == {1}, 30,
                   "the paused replicas left out of CLUSTER SLOTS")
        reader = client_factory(sandbox, replica_namespaces=("content",), replica_refresh_interval=0.5)
        assert reader.get("hot", namespace="content") == "v"
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: replicas_announced(sandbox), 30, "the replicas back in CLUSTER SLOTS")
    time.sleep(0.6)  # one refresh interval
    reset_stats(sandbox)
    for _ in range(40):
        assert reader.get("hot", namespace="content") == "v"
    calls = {}
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as admin:
            calls[node.name] = int(admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0))
    assert sum(calls[name] for name in paused) > 0, calls
    assert sum(calls.values()) == 40 and not any(calls[m.name] for m in sandbox.topology.masters), calls


def replicas_listed(sandbox: LocalSandbox, node: Node) -> list[int]:
    """How many replicas each slot range lists in CLUSTER SLOTS ([start, end, master, replica,
    ...] per range), as `node` answers it."""
    with sandbox.admin_client(node) as admin:
        return [len(entry) - 3 for entry in admin.execute_command("CLUSTER SLOTS")]


def one_replica_per_master(sandbox: LocalSandbox) -> list[str]:
    """The node names of one replica of each master, as the cluster has them (`--cluster create`
    picks which replica follows which master)."""
    with sandbox.admin_client(sandbox.topology.masters[0]) as admin:
        nodes: dict[str, dict[str, Any]] = admin.execute_command("CLUSTER NODES")
    by_id = {fields["node_id"]: f"redis-{address.rsplit(':', 1)[1].split('@')[0]}" for address, fields in nodes.items()}
    chosen: dict[str, str] = {}
    for fields in nodes.values():
        if "slave" in fields["flags"]:
            chosen.setdefault(fields["master_id"], by_id[fields["node_id"]])
    return sorted(chosen.values())
