"""Which node is which: ports, roles, shards and the address every node is reached at. Pure.

Node i (port base_port + i) is planned as a master when i < masters, else as a replica of
master i % masters. Sentinel topology writes exactly that into the configs. In cluster topology
`redis-cli --cluster create` lists the planned masters first, so they become the masters, but it
pairs replicas itself (keeping each off its master's address where it can): tools that need the
live pairing (rolling restart, scale-out, status) read it from CLUSTER NODES, not from here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from cachelayer.config.settings import Settings

Role = Literal["master", "replica"]


@dataclass(frozen=True)
class Node:
    index: int
    port: int
    bus_port: int
    address: str  # what other nodes and clients connect to (announced in cluster mode)
    host: str  # the machine (or container) the node runs on
    role: Role
    shard: int
    master_index: int | None

    @property
    def name(self) -> str:
        return f"redis-{self.port}"

    @property
    def group(self) -> str:
        """The sentinel master-group name of this node's shard."""
        return f"redis-master-{self.shard + 1}"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class SentinelNode:
    index: int
    port: int
    address: str
    host: str

    @property
    def name(self) -> str:
        return f"redis-sentinel-{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Topology:
    kind: Literal["cluster", "sentinel"]
    nodes: tuple[Node, ...]
    sentinels: tuple[SentinelNode, ...]

    @property
    def masters(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "master")

    @property
    def replicas(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "replica")

    def master_of(self, node: Node) -> Node:
        return node if node.master_index is None else self.nodes[node.master_index]

    def replicas_of(self, master: Node) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.master_index == master.index)

    def node(self, port: int) -> Node:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node on port {port}")


@dataclass(frozen=True)
class Placement:
    """Where each node and sentinel runs: (host name, address) in port order."""

    nodes: tuple[tuple[str, str], ...]
    sentinels: tuple[tuple[str, str], ...]


def docker_placement(settings: Settings) -> Placement:
    """Each container gets a fixed address on the stack's network, in port order."""
    network = ipaddress.ip_network(settings.docker.subnet)
    first = settings.docker.first_host_address
    redis = settings.redis
    nodes = tuple(
        (f"redis-{redis.base_port + i}", str(network.network_address + first + i)) for i in range(redis.node_count)
    )
    sentinels = tuple(
        (f"redis-sentinel-{port}", str(network.network_address + first + redis.node_count + j))
        for j, port in enumerate(settings.sentinel.ports)
    )
    return Placement(nodes, sentinels)


def hosts_placement(settings: Settings) -> Placement:
    """Nodes where hosts.placement puts them; sentinel j on machine j (wrapping around)."""
    assert settings.hosts is not None, "hosts placement needs hosts settings"
    machines = {m.name: m for m in settings.hosts.machines}
    ordered = settings.hosts.machines
    nodes = tuple((name, machines[name].address) for name in settings.hosts.placement)
    sentinels = tuple(
        (ordered[j % len(ordered)].name, ordered[j % len(ordered)].address) for j in range(len(settings.sentinel.ports))
    )
    return Placement(nodes, sentinels)


def local_placement(settings: Settings, address: str = "127.0.0.1") -> Placement:
    """Every process on one address: the local sandbox and the integration tests."""
    return Placement(
        tuple(("local", address) for _ in range(settings.redis.node_count)),
        tuple(("local", address) for _ in settings.sentinel.ports),
    )


def target_placement(settings: Settings) -> Placement:
    return docker_placement(settings) if settings.redis.target == "docker" else hosts_placement(settings)


def build_topology(settings: Settings, placement: Placement | None = None) -> Topology:
    redis = settings.redis
    placement = placement or target_placement(settings)
    masters = redis.masters
    nodes = []
    for index in range(redis.node_count):
        host, address = placement.nodes[index]
        is_master = index < masters
        nodes.append(
            Node(
                index=index,
                port=redis.base_port + index,
                bus_port=redis.base_port + index + redis.bus_port_offset,
                address=address,
                host=host,
                role="master" if is_master else "replica",
                shard=index % masters,
                master_index=None if is_master else index % masters,
            )
        )
    sentinels: tuple[SentinelNode, ...] = ()
    if redis.topology == "sentinel":
        sentinels = tuple(
            SentinelNode(index=j, port=port, address=placement.sentinels[j][1], host=placement.sentinels[j][0])
            for j, port in enumerate(settings.sentinel.ports)
        )
    return Topology(kind=redis.topology, nodes=tuple(nodes), sentinels=sentinels)
