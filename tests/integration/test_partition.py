"""A partition between real 'hosts': six network namespaces joined by a bridge, one node each.

The nodes get distinct addresses (10.231.0.11-16), so this also checks what loopback cannot:
that `redis-cli --cluster create` pairs each replica with the master our topology planned.
cluster_node_timeout is lowered to 2000 ms to keep the test short."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings

from .conftest import NetnsHosts, cluster_client, cluster_nodes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.netns]


@pytest.fixture(scope="module")
def spread(netns_hosts: NetnsHosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSandbox]:
    settings, config = sandbox_settings({"redis": {"base_port": 7150, "cluster_node_timeout": 2000}}, "test")
    sandbox = LocalSandbox(
        settings,
        tmp_path_factory.mktemp("netns"),
        address="10.231.0.1",  # the bridge: the test and the bootstrap reach every host through it
        placement=netns_hosts.placement(),
        host_prefix=netns_hosts.prefix,
        config=config,
    )
    try:
        sandbox.up()
        yield sandbox
    finally:
        sandbox.down()


def actual_pairs(sandbox: LocalSandbox) -> dict[str, str]:
    """replica endpoint -> its master's endpoint, as the cluster has it."""
    nodes = cluster_nodes(sandbox, sandbox.topology.nodes[0].port)
    # redis-py keys CLUSTER NODES by address:port; our endpoints are the announced addresses.
    assert set(nodes) == {n.endpoint for n in sandbox.topology.nodes}, nodes
    by_id = {d["node_id"]: endpoint for endpoint, d in nodes.items()}
    return {e: by_id.get(d["master_id"], "-") for e, d in nodes.items() if "slave" in d["flags"]}


def test_every_master_has_one_replica_on_another_host(spread: LocalSandbox) -> None:
    pairs = actual_pairs(spread)
    assert sorted(pairs.values()) == sorted(m.endpoint for m in spread.topology.masters), pairs
    assert all(r.split(":")[0] != m.split(":")[0] for r, m in pairs.items()), pairs


def test_cut_off_master_is_replaced_and_rejoins_as_replica(spread: LocalSandbox, netns_hosts: NetnsHosts) -> None:
    victim = spread.topology.nodes[0]
    nodes = cluster_nodes(spread, victim.port)
    victim_id = nodes[victim.endpoint]["node_id"]
    (replica_endpoint,) = [e for e, d in nodes.items() if d["master_id"] == victim_id]
    replica = next(n for n in spread.topology.nodes if n.endpoint == replica_endpoint)

    # Writes acknowledged by a replica (WAIT 1) before the cut, on every master's connection.
    acknowledged: dict[str, str] = {}
    for master in spread.topology.masters:
        slots = [range(int(lo), int(hi) + 1) for lo, hi in nodes[master.endpoint]["slots"]]
        with redis.Redis(host=master.address, port=master.port, username=USERS.app,
                         password=spread.passwords.app, socket_timeout=5, decode_responses=True) as client:
            written = 0
            for i in range(5000):
                key = f"enrolment:{i}"
                if any(key_slot(key.encode()) in r for r in slots):
                    client.set(key, master.name)
                    acknowledged[key] = master.name
                    written += 1
                if written == 100:
                    break
            assert client.execute_command("WAIT", 1, 5000) >= 1, f"no replica acknowledged {master.name}'s writes"

    netns_hosts.cut(victim.index)
    try:
        survivors = [n for n in spread.topology.nodes if n.index != victim.index]

        def replica_serves_all_slots() -> bool:
            with spread.admin_client(replica) as admin:
                if admin.info("replication")["role"] != "master":
                    return False
            for node in survivors:
                with spread.admin_client(node) as admin:
                    if admin.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                        return False
            return True

        wait_until(replica_serves_all_slots, 30, f"{replica.endpoint} to take over from the cut-off {victim.endpoint}")
    finally:
        netns_hosts.restore(victim.index)

    def rejoined() -> bool:
        with spread.admin_client(victim) as admin:
            replication = admin.info("replication")
        return (replication["role"], replication.get("master_host"), replication.get("master_link_status")) == (
            "slave", replica.address, "up")

    wait_until(rejoined, 30, f"{victim.endpoint} to rejoin as a replica of {replica.endpoint}")
    spread.wait_converged()

    client = cluster_client(spread)
    try:
        assert {key: client.get(key) for key in acknowledged} == acknowledged
    finally:
        client.close()
    served = sum(int(hi) - int(lo) + 1 for d in cluster_nodes(spread, replica.port).values() for lo, hi in d["slots"])
    assert served == TOTAL_SLOTS
