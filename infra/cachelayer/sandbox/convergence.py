"""Whether the sandbox is what the stack asks for: each process's facts (the checks of
cachelayer.ops.health, shared with `cachelayer health`), and waiting until nothing is wrong."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import redis

from cachelayer.config.settings import Settings
from cachelayer.ops.health import NodeStatus, SentinelStatus, basic_problems, node_facts, sentinel_facts
from cachelayer.plan.topology import Node, SentinelNode, Topology
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.state import ProcessRecord

AdminClient = Callable[[Node | SentinelNode], AbstractContextManager[redis.Redis]]


@dataclass(frozen=True)
class SandboxStatus:
    topology: str
    nodes: tuple[NodeStatus, ...]
    sentinels: tuple[SentinelStatus, ...]
    planned_masters: int
    replicas_per_master: int

    def problems(self, replicas: bool = True) -> list[str]:
        """What keeps the deployment from being what the stack asks for, one line each.

        With `replicas`, also every replica linked and every master holding
        `replicas_per_master` linked replicas: a master short of one is not healthy.
        The checks live in health.py, shared with `cachelayer health`."""
        return basic_problems(
            self.topology, self.nodes, self.sentinels, self.planned_masters, self.replicas_per_master, replicas
        )

    def healthy(self, replicas: bool = True) -> bool:
        return not self.problems(replicas)


def sandbox_status(
    settings: Settings, topology: Topology, running: Mapping[str, ProcessRecord], admin_client: AdminClient
) -> SandboxStatus:
    """Every planned process asked as admin; `running` gives the pids of the ones we started."""
    cluster = topology.kind == "cluster"
    groups = [m.group for m in topology.masters]

    def node_status(node: Node) -> NodeStatus:
        record = running.get(node.name)
        with admin_client(node) as client:
            return node_facts(node.name, node.endpoint, client, cluster, record.pid if record else None).status

    def sentinel_status(sentinel: SentinelNode) -> SentinelStatus:
        record = running.get(sentinel.name)
        with admin_client(sentinel) as client:
            facts = sentinel_facts(
                sentinel.name, sentinel.endpoint, client, groups, record.pid if record else None, detail=False
            )
        return facts.status

    return SandboxStatus(
        topology.kind,
        tuple(node_status(node) for node in topology.nodes),
        tuple(sentinel_status(s) for s in topology.sentinels),
        len(topology.masters),
        settings.redis.replicas_per_master,
    )


def wait_converged(status: Callable[[], SandboxStatus], seconds: float, replicas: bool = True) -> None:
    """Every node up; in a cluster every node sees all slots served; with `replicas`, also
    every master holding its linked replicas (the first full sync included)."""
    deadline = time.monotonic() + seconds
    problems: list[str] = []
    while time.monotonic() < deadline:
        problems = status().problems(replicas)
        if not problems:
            return
        time.sleep(0.2)
    raise SandboxError(f"the sandbox did not converge within {seconds} s:\n  " + "\n  ".join(problems))
