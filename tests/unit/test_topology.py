"""Topology: ports, roles, shards, sentinels and where every process runs."""

from __future__ import annotations

from typing import Any

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.errors import SettingsError
from cachelayer.plan.topology import (
    Placement,
    Topology,
    build_topology,
    docker_placement,
    hosts_placement,
    local_placement,
)
from support.machines import machine as hosts_machine

CDN = {"zone_id": "0123456789abcdef0123456789abcdef", "zone_name": "learn.example.com"}


def settings_for(**redis: Any) -> Settings:
    return load_settings({"redis": redis}, "test")


def hosts_settings(machine_count: int, placement: list[str] | None = None, **redis: Any) -> Settings:
    hosts: dict[str, Any] = {
        "machines": [hosts_machine(f"cache-{i + 1}", f"192.0.2.{11 + i}") for i in range(machine_count)]
    }
    if placement is not None:
        hosts["placement"] = placement
    return load_settings({"redis": {"target": "hosts", **redis}, "hosts": hosts, "cdn": CDN}, "prod")


def assert_replicas_off_their_masters_host(topology: Topology, context: str) -> None:
    assert topology.replicas, context
    for replica in topology.replicas:
        master = topology.master_of(replica)
        assert master.host != replica.host, (
            f"{context}: replica {replica.name} shares host {replica.host} with its master {master.name}"
        )


# ---------------------------------------------------------------------------------------------
# Ports, roles and shards


def test_default_ports_and_bus_ports() -> None:
    topology = build_topology(settings_for())
    assert [n.port for n in topology.nodes] == [7000, 7001, 7002, 7003, 7004, 7005]
    assert [n.bus_port for n in topology.nodes] == [17000, 17001, 17002, 17003, 17004, 17005]
    assert [n.name for n in topology.nodes] == [f"redis-{p}" for p in range(7000, 7006)]
    assert [n.index for n in topology.nodes] == list(range(6))


def test_base_port_and_offset_move_every_port() -> None:
    topology = build_topology(settings_for(base_port=7400, bus_port_offset=1000))
    assert [(n.port, n.bus_port) for n in topology.nodes] == [(7400 + i, 8400 + i) for i in range(6)]


def test_masters_are_the_first_nodes() -> None:
    topology = build_topology(settings_for())
    assert [n.port for n in topology.masters] == [7000, 7001, 7002]
    assert [n.port for n in topology.replicas] == [7003, 7004, 7005]
    assert all(n.master_index is None for n in topology.masters)


@pytest.mark.parametrize(("node_count", "replicas"), [(6, 1), (8, 1), (9, 2), (12, 1), (12, 3)])
def test_replica_i_follows_master_i_mod_masters(node_count: int, replicas: int) -> None:
    topology = build_topology(settings_for(node_count=node_count, replicas_per_master=replicas))
    masters = node_count // (replicas + 1)
    assert len(topology.masters) == masters
    assert len(topology.replicas) == node_count - masters
    for node in topology.nodes:
        assert node.shard == node.index % masters, node.name
        if node.index < masters:
            assert node.role == "master", node.name
            assert topology.master_of(node) is node
        else:
            assert node.role == "replica", node.name
            assert node.master_index == node.index % masters, node.name
            assert topology.master_of(node).port == 7000 + node.index % masters, node.name
    for master in topology.masters:
        assert len(topology.replicas_of(master)) == replicas, master.name


def test_default_shards_pair_7000_with_7003() -> None:
    topology = build_topology(settings_for())
    pairs = {m.port: [r.port for r in topology.replicas_of(m)] for m in topology.masters}
    assert pairs == {7000: [7003], 7001: [7004], 7002: [7005]}
    assert [n.group for n in topology.nodes] == [
        "redis-master-1",
        "redis-master-2",
        "redis-master-3",
        "redis-master-1",
        "redis-master-2",
        "redis-master-3",
    ]


def test_node_lookup_by_port() -> None:
    topology = build_topology(settings_for())
    assert topology.node(7004).index == 4
    with pytest.raises(KeyError, match="7042"):
        topology.node(7042)


# ---------------------------------------------------------------------------------------------
# Sentinels


def test_cluster_topology_has_no_sentinels() -> None:
    topology = build_topology(settings_for())
    assert topology.kind == "cluster"
    assert topology.sentinels == ()


def test_sentinel_names_and_ports() -> None:
    topology = build_topology(settings_for(topology="sentinel"))
    assert topology.kind == "sentinel"
    assert [s.port for s in topology.sentinels] == [26379, 26380, 26381]
    assert [s.name for s in topology.sentinels] == [
        "redis-sentinel-26379",
        "redis-sentinel-26380",
        "redis-sentinel-26381",
    ]
    assert [m.group for m in topology.masters] == ["redis-master-1", "redis-master-2", "redis-master-3"]


def test_sentinel_ports_follow_the_settings() -> None:
    settings = load_settings({"redis": {"topology": "sentinel"}, "sentinel": {"ports": [27000, 27001, 27002]}}, "t")
    assert [s.port for s in build_topology(settings).sentinels] == [27000, 27001, 27002]


# ---------------------------------------------------------------------------------------------
# Docker placement


def test_docker_addresses_come_from_the_subnet_in_port_order() -> None:
    settings = settings_for(topology="sentinel")
    topology = build_topology(settings)
    assert [n.address for n in topology.nodes] == [f"172.30.70.{10 + i}" for i in range(6)]
    assert [n.host for n in topology.nodes] == [f"redis-{7000 + i}" for i in range(6)]
    assert [n.endpoint for n in topology.nodes] == [f"172.30.70.{10 + i}:{7000 + i}" for i in range(6)]
    assert [s.address for s in topology.sentinels] == ["172.30.70.16", "172.30.70.17", "172.30.70.18"]
    assert [s.host for s in topology.sentinels] == [
        "redis-sentinel-26379",
        "redis-sentinel-26380",
        "redis-sentinel-26381",
    ]
    assert topology.sentinels[0].endpoint == "172.30.70.16:26379"


def test_docker_addresses_follow_subnet_and_first_address() -> None:
    settings = load_settings({"docker": {"subnet": "10.9.0.0/24", "first_host_address": 100}}, "dev")
    placement = docker_placement(settings)
    assert [address for _, address in placement.nodes] == [f"10.9.0.{100 + i}" for i in range(6)]
    assert [address for _, address in placement.sentinels] == ["10.9.0.106", "10.9.0.107", "10.9.0.108"]


def test_docker_addresses_are_unique() -> None:
    placement = docker_placement(settings_for(topology="sentinel", node_count=8))
    addresses = [a for _, a in placement.nodes] + [a for _, a in placement.sentinels]
    assert len(set(addresses)) == len(addresses) == 11


def test_local_placement_puts_everything_on_one_address() -> None:
    settings = settings_for(topology="sentinel")
    topology = build_topology(settings, local_placement(settings, "127.0.0.1"))
    assert {n.address for n in topology.nodes} == {"127.0.0.1"}
    assert {s.address for s in topology.sentinels} == {"127.0.0.1"}
    assert [n.endpoint for n in topology.nodes] == [f"127.0.0.1:{7000 + i}" for i in range(6)]


def test_an_explicit_placement_overrides_the_target() -> None:
    settings = settings_for()
    placement = Placement(tuple((f"h{i}", f"10.0.0.{i}") for i in range(6)), ())
    topology = build_topology(settings, placement)
    assert [(n.host, n.address) for n in topology.nodes] == [(f"h{i}", f"10.0.0.{i}") for i in range(6)]


# ---------------------------------------------------------------------------------------------
# Hosts placement


def test_six_machines_get_one_node_each() -> None:
    topology = build_topology(hosts_settings(6))
    assert [n.host for n in topology.nodes] == [f"cache-{i}" for i in range(1, 7)]
    assert [n.address for n in topology.nodes] == [f"192.0.2.{11 + i}" for i in range(6)]
    assert len({n.host for n in topology.nodes}) == 6


def test_three_machines_keep_replicas_off_their_masters_host() -> None:
    topology = build_topology(hosts_settings(3))
    assert [n.host for n in topology.masters] == ["cache-1", "cache-2", "cache-3"]
    for replica in topology.replicas:
        master = topology.master_of(replica)
        assert master.host != replica.host, f"{replica.name} and its master {master.name} both on {replica.host}"
    # and each machine still runs exactly one master and one replica
    for machine in ("cache-1", "cache-2", "cache-3"):
        roles = sorted(n.role for n in topology.nodes if n.host == machine)
        assert roles == ["master", "replica"], machine


def test_hosts_addresses_match_the_machine() -> None:
    settings = hosts_settings(3)
    assert settings.hosts is not None
    address = {m.name: m.address for m in settings.hosts.machines}
    for node in build_topology(settings).nodes:
        assert node.address == address[node.host], node.name


def test_hosts_sentinels_wrap_around_the_machines() -> None:
    settings = hosts_settings(2, topology="sentinel")
    placement = hosts_placement(settings)
    assert placement.sentinels == (("cache-1", "192.0.2.11"), ("cache-2", "192.0.2.12"), ("cache-1", "192.0.2.11"))
    topology = build_topology(settings)
    assert [s.host for s in topology.sentinels] == ["cache-1", "cache-2", "cache-1"]


def test_explicit_placement_is_used() -> None:
    placement = ["cache-1", "cache-2", "cache-3", "cache-2", "cache-3", "cache-1"]
    topology = build_topology(hosts_settings(3, placement))
    assert [n.host for n in topology.nodes] == placement
    assert_replicas_off_their_masters_host(topology, "explicit placement")


@pytest.mark.parametrize(
    ("placement", "key"),
    [
        (["cache-1", "cache-2", "cache-3", "cache-1", "cache-3", "cache-2"], "hosts.placement[3]"),
        (["cache-1", "cache-2", "cache-3", "cache-2", "cache-2", "cache-1"], "hosts.placement[4]"),
        (["cache-1", "cache-2", "cache-3", "cache-2", "cache-3", "cache-3"], "hosts.placement[5]"),
    ],
)
def test_colliding_placement_names_the_entry(placement: list[str], key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        hosts_settings(3, placement)
    assert caught.value.key == key
    assert "same machine" in caught.value.problem
    assert "another machine" in caught.value.fix


def test_placement_naming_an_unknown_machine_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        hosts_settings(3, ["cache-1", "cache-2", "cache-9", "cache-2", "cache-3", "cache-1"])
    assert caught.value.key == "hosts.placement[2]"
    assert "cache-1, cache-2, cache-3" in caught.value.fix


def test_placement_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        hosts_settings(3, ["cache-1", "cache-2", "cache-3"])
    assert caught.value.key == "hosts.placement"


@pytest.mark.parametrize("machine_count", [3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize(("node_count", "replicas"), [(6, 1), (8, 1), (12, 1), (9, 2)])
def test_default_placement_never_puts_a_replica_with_its_master(
    machine_count: int, node_count: int, replicas: int
) -> None:
    settings = hosts_settings(machine_count, node_count=node_count, replicas_per_master=replicas)
    topology = build_topology(settings)
    context = f"{node_count} nodes, {replicas} replica(s) per master, {machine_count} machines"
    assert len(topology.nodes) == node_count, context
    assert_replicas_off_their_masters_host(topology, context)
    # losing one machine loses at most one node of every shard
    for master in topology.masters:
        group = [master, *topology.replicas_of(master)]
        hosts = [n.host for n in group]
        assert len(set(hosts)) == len(group), f"{context}: shard {master.group} on {hosts}"
    if machine_count >= node_count:
        assert len({n.host for n in topology.nodes}) == node_count, f"{context}: expected one node per machine"
