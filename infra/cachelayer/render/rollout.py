"""How a config change reaches running nodes without taking the whole deployment down. Pure.

Redis applies most tuning directives live (CONFIG SET); a few only take effect at start-up.
A change in the first kind is applied on every node at once (harmless: no node goes away).
A change in the second kind needs a restart, done one node at a time: replicas first, then
each master after its shard has been failed over to a replica (CLUSTER FAILOVER run on the
replica, or SENTINEL FAILOVER), so a shard never loses its only serving node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Role, Topology, build_topology
from cachelayer.render.conf import RESTART_ONLY, conf_values, read_redis_conf
from cachelayer.render.nodes import host_paths, render_redis_conf

# Directives Redis 7.0 accepts in CONFIG SET and applies at once.
LIVE_DIRECTIVES = frozenset(
    {
        "maxmemory",
        "maxmemory-policy",
        "save",
        "appendonly",
        "appendfsync",
        "aof-use-rdb-preamble",
        "slowlog-log-slower-than",
        "slowlog-max-len",
        "latency-monitor-threshold",
        "busy-reply-threshold",
        "cluster-node-timeout",
        "cluster-replica-validity-factor",
        "cluster-require-full-coverage",
        "cluster-announce-ip",
        "cluster-announce-port",
        "cluster-announce-tls-port",
        "cluster-announce-bus-port",
        "tcp-keepalive",
        "timeout",
        "maxclients",
        "loglevel",
        "protected-mode",
        "stop-writes-on-bgsave-error",
        "rdbcompression",
        "masteruser",
        "replica-serve-stale-data",
        "replica-read-only",
        "repl-diskless-sync",
        "replica-announce-ip",
        "replica-announce-port",
        "tls-auth-clients",
        # data-safety directives (CONFIG SET checked on redis-server 7.0)
        "sanitize-dump-payload",
        "repl-diskless-sync-delay",
        "repl-backlog-size",
        "min-replicas-to-write",
        "min-replicas-max-lag",
        "client-query-buffer-limit",
        "maxmemory-clients",
        "proto-max-bulk-len",
    }
)
# Every other directive (RESTART_ONLY, which Redis refuses to change live, and the rest) is
# applied by a rolling restart.

Path_ = Literal["live", "restart"]


def change_path(directive: str) -> Path_:
    """Which way a change to `directive` reaches a running node. Redis refuses CONFIG SET of the
    RESTART_ONLY ones; the others outside LIVE_DIRECTIVES (ports, bind, TLS files) Redis would
    take live, but they are applied by a restart too: a restart is slow but never wrong."""
    if directive in RESTART_ONLY:
        return "restart"
    return "live" if directive in LIVE_DIRECTIVES else "restart"


def node_directives(settings: Settings, topology: Topology | None = None) -> dict[int, dict[str, str]]:
    """Every node's directives (by node index) as the hosts target renders them."""
    topology = topology or build_topology(settings)
    return {
        node.index: conf_values(render_redis_conf(settings, topology, node, host_paths(node.name, node.port)))
        for node in topology.nodes
    }


@dataclass(frozen=True)
class ConfigDiff:
    # Directive -> new value, for directives applied with CONFIG SET. Values that differ per
    # node (announce addresses) hold the first changed node's value; apply-config.sh sets each
    # node's own value.
    live_changes: dict[str, str] = field(default_factory=dict)
    # Directives whose change needs a (rolling) restart, sorted.
    restart_needed: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.live_changes and not self.restart_needed


def diff_settings(old: Settings, new: Settings) -> ConfigDiff:
    """What changes on the nodes when the stack goes from `old` to `new` settings."""
    before, after = node_directives(old), node_directives(new)
    live: dict[str, str] = {}
    restart: set[str] = set()
    for index in sorted(set(before) | set(after)):
        old_values, new_values = before.get(index, {}), after.get(index, {})
        if index not in before or index not in after:
            restart.add("node-count")  # nodes come or go: a scale operation, not a reconfiguration
            continue
        for directive in sorted(set(old_values) | set(new_values)):
            if old_values.get(directive) == new_values.get(directive):
                continue
            if change_path(directive) == "live" and directive in new_values:
                live.setdefault(directive, new_values[directive])
            else:
                restart.add(directive)
    return ConfigDiff(live_changes=live, restart_needed=sorted(restart))


def live_values(conf_text: str) -> dict[str, str]:
    """The live-settable directives of one rendered config: what apply-config.sh CONFIG SETs."""
    return {d: v for d, v in conf_values(conf_text).items() if change_path(d) == "live"}


def restart_fingerprint(conf_text: str) -> str:
    """A hash of only the restart-needing directives of a rendered config: a node's rolling
    restart step runs when (and only when) this changes. Hashed as written (quotes kept), so a
    file gives the fingerprint it always gave: a new one would restart every node."""
    directives = read_redis_conf(conf_text).values()
    lines = sorted(f"{d.name} {d.written}" for d in directives if change_path(d.name) == "restart")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


Failover = Literal["none", "cluster", "sentinel"]


@dataclass(frozen=True)
class RestartStep:
    """Restart one node; a master is failed over first (by the planned role: the script on
    the host checks the live role and fails over whoever is master at that moment)."""

    port: int
    host: str
    planned_role: Role
    failover: Failover
    group: str  # sentinel master group of the node's shard

    @property
    def name(self) -> str:
        return f"redis-{self.port}"


def rolling_plan(topology: Topology) -> tuple[RestartStep, ...]:
    """Replicas first (they serve nothing that a restart loses), then each master after a failover."""
    kind: Failover = "cluster" if topology.kind == "cluster" else "sentinel"
    replicas = tuple(RestartStep(n.port, n.host, n.role, "none", n.group) for n in topology.replicas)
    masters = tuple(RestartStep(n.port, n.host, n.role, kind, n.group) for n in topology.masters)
    return replicas + masters
