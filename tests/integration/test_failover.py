"""Native cluster failover, a full restart (AOF), and re-running the bootstrap (idempotence,
scale-out). cluster_node_timeout is lowered to 2000 ms in the failover fixture so the suite
stays fast; the stack's 5000 ms is measured in the benchmark, not here."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from support.sandbox_processes import kill

from .conftest import cluster_client, cluster_nodes, wait_until

pytestmark = pytest.mark.integration


def served_slots(sandbox: LocalSandbox, port: int) -> int:
    nodes = cluster_nodes(sandbox, port)
    return sum(
        int(high) - int(low) + 1
        for d in nodes.values()
        if "master" in d["flags"] and "fail" not in d["flags"]
        for low, high in d["slots"]
    )


def write_keys(sandbox: LocalSandbox, count: int, prefix: str) -> dict[str, str]:
    client = cluster_client(sandbox)
    try:
        values = {f"{prefix}:{i}": f"v{i}" for i in range(count)}
        for key, value in values.items():
            client.set(key, value)
        return values
    finally:
        client.close()


def read_keys(sandbox: LocalSandbox, keys: list[str]) -> dict[str, Any]:
    client = cluster_client(sandbox)
    try:
        return {key: client.get(key) for key in keys}
    finally:
        client.close()


def test_killed_master_is_replaced_by_its_replica_and_rejoins_as_replica(
    sandbox_factory: Callable[..., LocalSandbox], record_property: Callable[[str, object], None]
) -> None:
    sandbox = sandbox_factory(7110, cluster_node_timeout=2000)
    sandbox.up()
    values = write_keys(sandbox, 300, "failover")
    victim = sandbox.topology.nodes[0]
    nodes = cluster_nodes(sandbox, victim.port)
    victim_id = nodes[victim.endpoint]["node_id"]
    (replica_endpoint,) = [e for e, d in nodes.items() if d["master_id"] == victim_id]
    replica_port = int(replica_endpoint.rsplit(":", 1)[1])
    with sandbox.admin_client(victim) as admin:
        assert admin.execute_command("WAIT", 1, 5000) >= 1  # every write is on the replica

    killed_at = time.monotonic()
    kill(sandbox, victim.name)  # SIGKILL
    survivors = [n.port for n in sandbox.topology.nodes if n.port != victim.port]

    def replica_took_over() -> bool:
        with sandbox.admin_client(replica_port) as admin:
            if admin.info("replication")["role"] != "master":
                return False
        return all(served_slots(sandbox, port) == TOTAL_SLOTS for port in survivors)

    wait_until(replica_took_over, 30, f"{replica_endpoint} to take over {victim.endpoint}'s slots")
    took = time.monotonic() - killed_at
    record_property("failover_seconds", round(took, 2))
    print(f"failover with cluster-node-timeout 2000 ms took {took:.2f} s")
    assert read_keys(sandbox, list(values)) == values

    sandbox.start(names=[victim.name])

    def rejoined_as_replica() -> bool:
        with sandbox.admin_client(victim) as admin:
            replication = admin.info("replication")
        return replication["role"] == "slave" and replication["master_port"] == replica_port and (
            replication["master_link_status"] == "up"
        )

    wait_until(rejoined_as_replica, 30, f"{victim.endpoint} to rejoin as a replica of {replica_endpoint}")
    sandbox.wait_converged()


def test_data_survives_a_restart_of_every_node(sandbox_factory: Callable[..., LocalSandbox]) -> None:
    sandbox = sandbox_factory(7120)
    sandbox.up()
    values = write_keys(sandbox, 500, "restart")
    stopped = sandbox.stop()
    assert len(stopped.stopped) == 6
    # Without the RDB snapshots the shutdown wrote, only the AOF can bring the data back.
    for node in sandbox.topology.nodes:
        data = Path(sandbox.paths(node).data_dir)
        assert (data / "appendonlydir").is_dir(), f"{node.name} has no AOF"
        (data / "dump.rdb").unlink(missing_ok=True)
    sandbox.start()
    sandbox.wait_converged()
    assert read_keys(sandbox, list(values)) == values


def test_bootstrap_rerun_is_harmless_and_scale_out_adds_two_nodes(
    sandbox_factory: Callable[..., LocalSandbox],
) -> None:
    sandbox = sandbox_factory(7130)
    sandbox.up()
    values = write_keys(sandbox, 300, "scale")
    before = cluster_nodes(sandbox, 7130)

    output = sandbox.bootstrap()  # the same script again, on a formed cluster
    assert "Performing hash slots allocation" not in output, output  # no second `--cluster create`
    after = cluster_nodes(sandbox, 7130)
    shape = lambda nodes: {e: (d["node_id"], d["master_id"], d["slots"]) for e, d in nodes.items()}  # noqa: E731
    assert shape(after) == shape(before)
    assert read_keys(sandbox, list(values)) == values

    # node_count 8 (4 masters): the same workdir, the new plan; up() starts the two new nodes
    # and re-runs the bootstrap, which adds them and rebalances.
    settings, config = sandbox_settings({"redis": {"base_port": 7130, "node_count": 8}}, "test")
    bigger = LocalSandbox(settings, sandbox.workdir, config=config)
    result = bigger.up()
    assert result.started == ("redis-7136", "redis-7137")
    nodes = cluster_nodes(bigger, 7130)
    assert len(nodes) == 8
    masters = {d["node_id"]: e for e, d in nodes.items() if "master" in d["flags"]}
    assert len(masters) == 4, nodes
    assert all(nodes[e]["slots"] for e in masters.values()), f"a master serves no slot: {nodes}"
    replicas = [d["master_id"] for d in nodes.values() if "slave" in d["flags"]]
    assert sorted(replicas) == sorted(masters), f"not one replica per master: {nodes}"
    assert served_slots(bigger, 7130) == TOTAL_SLOTS
    assert read_keys(bigger, list(values)) == values
