"""Health checks of a live deployment: one implementation for `sandbox status`, `cachelayer health`
and the sandbox's own convergence wait.

`node_facts` / `sentinel_facts` read a process (INFO, CLUSTER INFO/NODES, SENTINEL ...); the
`check_*` functions are pure over those facts and return one line per problem. `basic_problems`
is what `sandbox status` has always reported; `run_checks` adds the operator checks (open slots,
PFAIL/FAIL flags, lag, placement, memory, persistence, sentinel quorum and replicas).

It is also the one home of the facts every operator command reads from a live node (the
"cluster facts" section: CLUSTER NODES and the node's own `myself` line, a master's replicas and
their lag from INFO, a linked replica, the TLS options of a redis-py client): rebalance, scale-in,
drift, failover, backup, restore, the target and the sandbox import them from here.

The prod hosts run this very file (`main`, through /opt/redis/scripts/health-check.sh) with
Debian's python3-redis, so it imports nothing but the standard library and redis-py, and parses
CLUSTER NODES itself: redis-py 4.3 (Debian 12) does not parse migrating slots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

TOTAL_SLOTS = 16384


@dataclass(frozen=True)
class NodeStatus:
    name: str
    endpoint: str
    up: bool
    pid: int | None
    role: str = "-"
    slots: int | None = None
    keys: int | None = None
    memory: str = "-"
    cluster_state: str = "-"
    master_link: str = "-"
    master: str = "-"  # a replica's master (address:port), as its INFO replication says
    error: str = ""
    passwords: dict[str, int] = field(default_factory=dict)  # ACL user -> how many passwords it accepts


@dataclass(frozen=True)
class SentinelStatus:
    name: str
    endpoint: str
    up: bool
    pid: int | None
    masters: dict[str, str] = field(default_factory=dict)  # group -> address:port
    error: str = ""
    passwords: dict[str, int] = field(default_factory=dict)  # ACL user -> how many passwords it accepts


@dataclass(frozen=True)
class NodeFacts:
    status: NodeStatus
    info: Mapping[str, Any] = field(default_factory=dict)  # INFO (default sections)
    cluster_info: Mapping[str, Any] = field(default_factory=dict)
    cluster_nodes: Mapping[str, Any] = field(default_factory=dict)  # redis-py's parsed CLUSTER NODES


@dataclass(frozen=True)
class GroupView:
    """One sentinel's view of one master group."""

    master: str  # address:port, or "?"
    quorum_ok: bool
    quorum_message: str
    master_flags: str
    replicas: tuple[Mapping[str, Any], ...]  # SENTINEL REPLICAS, parsed by redis-py


@dataclass(frozen=True)
class SentinelFacts:
    status: SentinelStatus
    groups: Mapping[str, GroupView] = field(default_factory=dict)


# ------------------------------------------------------------------------ gathering
def password_counts(client: redis.Redis) -> dict[str, int]:
    """ACL user -> how many passwords it accepts (two between a rotation's phases), from ACL
    LIST; users without a password (`default`, off) are left out. Never a hash: a count."""
    try:
        lines = client.execute_command("ACL LIST")
    except redis.ResponseError:  # a login without ACL rights: nothing to say
        return {}
    counts = {}
    for line in lines:
        words = (line.decode() if isinstance(line, bytes) else str(line)).split()
        hashes = sum(1 for word in words if word.startswith("#"))
        if len(words) > 1 and words[0] == "user" and hashes:
            counts[words[1]] = hashes
    return counts



def node_facts(name: str, endpoint: str, client: redis.Redis, cluster: bool, pid: int | None = None) -> NodeFacts:
    """Everything the checks need from one node, in a few round trips; a node that does not
    answer is a NodeStatus with up=False and the error."""
    try:
        info = client.info()
        keys = int(client.dbsize())
        role = "master" if info.get("role") == "master" else "replica"
        link = str(info.get("master_link_status", "-"))
        master = f"{info['master_host']}:{info['master_port']}" if role == "replica" else "-"
        slots: int | None = None
        state = "-"
        cluster_info: dict[str, Any] = {}
        nodes: dict[str, Any] = {}
        if cluster:
            cluster_info = _cluster_info(client.execute_command("CLUSTER INFO"))
            state = str(cluster_info.get("cluster_state", "?"))
            nodes = read_cluster_nodes(client)
            slots = _own_slots(nodes)
        status = NodeStatus(
            name, endpoint, True, pid, role, slots, keys, str(info.get("used_memory_human", "?")), state, link, master,
            passwords=password_counts(client),
        )
        return NodeFacts(status, info, cluster_info, nodes)
    except redis.RedisError as error:
        return NodeFacts(NodeStatus(name, endpoint, False, pid, error=str(error)))


def sentinel_facts(
    name: str, endpoint: str, client: redis.Redis, groups: Sequence[str], pid: int | None = None, detail: bool = True
) -> SentinelFacts:
    """The sentinel's master for each group; with `detail` also CKQUORUM, flags and replicas."""
    try:
        masters: dict[str, str] = {}
        views: dict[str, GroupView] = {}
        for group in groups:
            address: Any = client.sentinel_get_master_addr_by_name(group)
            masters[group] = f"{address[0]}:{address[1]}" if address else "?"
            if not detail:
                continue
            try:
                message = str(client.execute_command("SENTINEL CKQUORUM", group))
                quorum_ok = True
            except redis.ResponseError as error:
                message, quorum_ok = str(error), False
            try:
                flags = str(client.execute_command("SENTINEL MASTER", group).get("flags", "?"))
                replicas = tuple(client.sentinel_slaves(group))
            except redis.ResponseError as error:
                flags, replicas = f"? ({error})", ()
            views[group] = GroupView(masters[group], quorum_ok, message, flags, replicas)
        return SentinelFacts(SentinelStatus(name, endpoint, True, pid, masters, passwords=password_counts(client)), views)
    except redis.RedisError as error:
        return SentinelFacts(SentinelStatus(name, endpoint, False, pid, error=str(error)))


# ---------------------------------------------------------------- the basic checks
def check_reachable(nodes: Sequence[NodeStatus], sentinels: Sequence[SentinelStatus]) -> list[str]:
    found = [f"{n.name} is down ({n.error})" for n in nodes if not n.up]
    return found + [f"{s.name} is down ({s.error})" for s in sentinels if not s.up]


def check_cluster_state(nodes: Sequence[NodeStatus]) -> list[str]:
    return [f"{n.name} says cluster_state:{n.cluster_state}" for n in nodes if n.up and n.cluster_state != "ok"]


def serving_masters(kind: str, nodes: Sequence[NodeStatus]) -> list[NodeStatus]:
    # In a cluster, slot-less masters are nodes still joining: they do not count as shards.
    return [n for n in nodes if n.up and n.role == "master" and (kind != "cluster" or n.slots)]


def check_masters(kind: str, nodes: Sequence[NodeStatus], planned_masters: int) -> list[str]:
    serving = serving_masters(kind, nodes)
    if len(serving) != planned_masters:
        return [f"{len(serving)} master(s) serve data, the stack plans {planned_masters}"]
    return []


def check_sentinel_agreement(sentinels: Sequence[SentinelStatus]) -> list[str]:
    views = {tuple(sorted(s.masters.items())) for s in sentinels if s.up}
    if len(views) > 1:
        return ["the sentinels disagree on the masters: " + "; ".join(f"{s.name}: {s.masters}" for s in sentinels)]
    return []


def check_replicas(kind: str, nodes: Sequence[NodeStatus], replicas_per_master: int) -> list[str]:
    """Every replica linked, and every serving master holding `replicas_per_master` linked replicas."""
    found = [
        f"{n.name}'s link to its master {n.master} is {n.master_link}"
        for n in nodes
        if n.up and n.role == "replica" and n.master_link != "up"
    ]
    for master in serving_masters(kind, nodes):
        linked = sum(
            1 for n in nodes if n.up and n.role == "replica" and n.master == master.endpoint and n.master_link == "up"
        )
        if linked < replicas_per_master:
            found.append(f"{master.name} has {linked} linked replica(s), the stack asks for {replicas_per_master}")
    return found


def rotation_state(nodes: Sequence[NodeStatus], sentinels: Sequence[SentinelStatus]) -> dict[str, str]:
    """The users a rotation is under way for: "two passwords" when every process holding the user
    accepts two (between the phases: normal), "mixed" when they disagree (a phase stopped halfway).
    A user with one password everywhere is left out."""
    counts: dict[str, dict[str, int]] = {}
    for name, passwords in _password_counts(nodes, sentinels):
        for user, count in passwords.items():
            counts.setdefault(user, {})[name] = count
    state = {}
    for user, by_process in sorted(counts.items()):
        seen = {min(count, 2) for count in by_process.values()}
        if seen == {2}:
            state[user] = "two passwords"
        elif seen != {1}:
            state[user] = "mixed"
    return state


def check_credentials(nodes: Sequence[NodeStatus], sentinels: Sequence[SentinelStatus]) -> list[str]:
    problems = []
    for user, state in rotation_state(nodes, sentinels).items():
        if state == "mixed":
            held = ", ".join(f"{name}={passwords[user]}" for name, passwords in _password_counts(nodes, sentinels)
                             if user in passwords)
            problems.append(f"user {user}: the processes disagree on its passwords ({held}): a rotation phase stopped "
                            f"halfway; run it again (`pulumi up`, or `cachelayer rotate {user} --phase ...` on a sandbox)")
    return problems


def _password_counts(
    nodes: Sequence[NodeStatus], sentinels: Sequence[SentinelStatus]
) -> list[tuple[str, dict[str, int]]]:
    return [(n.name, n.passwords) for n in nodes] + [(s.name, s.passwords) for s in sentinels]


def credentials_description(nodes: Sequence[NodeStatus], sentinels: Sequence[SentinelStatus]) -> str:
    between = [user for user, state in rotation_state(nodes, sentinels).items() if state == "two passwords"]
    if between:
        return (f"rotation in progress, between its phases: {', '.join(between)} accept(s) two passwords on every "
                "process (phase 2 removes the old one)")
    return "every process accepts the same passwords per user (no rotation halfway)"


def basic_problems(
    kind: str,
    nodes: Sequence[NodeStatus],
    sentinels: Sequence[SentinelStatus],
    planned_masters: int,
    replicas_per_master: int,
    replicas: bool = True,
) -> list[str]:
    """What `sandbox status` reports: down processes, cluster_state, the number of serving
    masters, sentinel agreement and (with `replicas`) linked replicas per master."""
    found = check_reachable(nodes, sentinels)
    if kind == "cluster":
        found += check_cluster_state(nodes)
    found += check_masters(kind, nodes, planned_masters)
    found += check_sentinel_agreement(sentinels)
    if replicas:
        found += check_replicas(kind, nodes, replicas_per_master)
    return found


# ------------------------------------------------------------- the operator checks
def check_slots(facts: Sequence[NodeFacts]) -> list[str]:
    found = []
    for fact in facts:
        if not fact.status.up:
            continue
        ok = int(fact.cluster_info.get("cluster_slots_ok", 0))
        assigned = int(fact.cluster_info.get("cluster_slots_assigned", 0))
        if assigned < TOTAL_SLOTS:
            found.append(f"{fact.status.name} sees {TOTAL_SLOTS - assigned} of {TOTAL_SLOTS} slots unassigned")
        elif ok < TOTAL_SLOTS:
            found.append(f"{fact.status.name} sees {TOTAL_SLOTS - ok} of {TOTAL_SLOTS} slots not served (pfail/fail)")
    return found


def check_node_flags(facts: Sequence[NodeFacts]) -> list[str]:
    """Nodes some other node flags fail? (PFAIL) or fail."""
    flagged: dict[tuple[str, str], list[str]] = {}
    for fact in facts:
        for address, detail in fact.cluster_nodes.items():
            flags = set(str(detail.get("flags", "")).split(","))
            for flag in ("fail?", "fail"):
                if flag in flags:
                    flagged.setdefault((address.split("@")[0], flag), []).append(fact.status.name)
    return [f"{address} is flagged {flag} by {', '.join(sorted(by))}" for (address, flag), by in sorted(flagged.items())]


def check_open_slots(facts: Sequence[NodeFacts]) -> list[str]:
    found = []
    for fact in facts:
        for detail in fact.cluster_nodes.values():
            if "myself" not in str(detail.get("flags", "")):
                continue
            for migration in detail.get("migrations", []):
                direction = "to" if migration["state"] == "migrating" else "from"
                found.append(
                    f"slot {migration['slot']} is {migration['state']} on {fact.status.name} "
                    f"({direction} node {migration['node_id'][:8]}): finish or undo it with `redis-cli --cluster fix`"
                )
    return found


def check_lag(facts: Sequence[NodeFacts], max_lag_seconds: int) -> list[str]:
    found = []
    for fact in facts:
        if fact.status.up and fact.status.role == "master":
            for replica in replicas_of(fact.info):
                if replica.lag > max_lag_seconds:
                    found.append(
                        f"{replica.address} last acknowledged {fact.status.name} {replica.lag} s ago "
                        f"({replica.behind} bytes behind), limit {max_lag_seconds} s"
                    )
    return found


def check_placement(facts: Sequence[NodeFacts]) -> list[str]:
    """No replica on its master's host; not checkable when every node shares one host."""
    hosts = {f.status.endpoint.rsplit(":", 1)[0] for f in facts}
    if len(hosts) < 2:
        return []
    return [
        f"{f.status.name} replicates {f.status.master} on its own host: one machine loss takes both"
        for f in facts
        if f.status.up and f.status.role == "replica" and f.status.master.rsplit(":", 1)[0] == f.status.endpoint.rsplit(":", 1)[0]
    ]


def check_memory(facts: Sequence[NodeFacts], max_ratio: float) -> list[str]:
    found = []
    for fact in facts:
        limit = int(fact.info.get("maxmemory", 0))
        used = int(fact.info.get("used_memory", 0))
        if fact.status.up and limit and used / limit > max_ratio:
            found.append(f"{fact.status.name} uses {used / limit:.0%} of maxmemory ({used} of {limit} bytes)")
    return found


def check_persistence(facts: Sequence[NodeFacts], max_save_age: int, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    found = []
    for fact in facts:
        info, name = fact.info, fact.status.name
        if not fact.status.up:
            continue
        if info.get("rdb_last_bgsave_status", "ok") != "ok":
            found.append(f"{name}'s last RDB save failed (rdb_last_bgsave_status:{info['rdb_last_bgsave_status']})")
        if info.get("aof_enabled"):
            for key in ("aof_last_write_status", "aof_last_bgrewrite_status"):
                if info.get(key, "ok") != "ok":
                    found.append(f"{name}'s AOF is failing ({key}:{info[key]})")
        age = now - int(info.get("rdb_last_save_time", now))
        if int(info.get("rdb_changes_since_last_save", 0)) > 0 and age > max_save_age:
            found.append(f"{name} last saved {age:.0f} s ago with changes pending (limit {max_save_age} s)")
    return found


def check_sentinel_quorum(sentinels: Sequence[SentinelFacts]) -> list[str]:
    return [
        f"{s.status.name}: CKQUORUM {group}: {view.quorum_message}"
        for s in sentinels
        for group, view in s.groups.items()
        if not view.quorum_ok
    ]


def check_sentinel_replicas(sentinels: Sequence[SentinelFacts], replicas_per_master: int) -> list[str]:
    """Per group, as the first answering sentinel sees it: master not down, replicas up and linked."""
    for sentinel in sentinels:
        if not sentinel.status.up:
            continue
        found = []
        for group, view in sentinel.groups.items():
            if {"s_down", "o_down"} & set(view.master_flags.split(",")):
                found.append(f"{group}: master {view.master} is {view.master_flags}")
            healthy = 0
            for replica in view.replicas:
                flags = str(replica.get("flags", ""))
                link = str(replica.get("master-link-status", "?"))
                if {"s_down", "o_down", "disconnected"} & set(flags.split(",")) or link != "ok":
                    found.append(f"{group}: replica {replica.get('name')} is {flags}, link {link}")
                else:
                    healthy += 1
            if healthy < replicas_per_master:
                found.append(f"{group} has {healthy} healthy replica(s), the stack asks for {replicas_per_master}")
        return found
    return []


@dataclass(frozen=True)
class Check:
    """One check's verdict. A check that could not run (no node, or no sentinel, answered) is
    `not checked`: never ok, whatever its (empty) problem list."""

    name: str
    description: str
    problems: tuple[str, ...]
    checked: bool = True

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems

    @property
    def state(self) -> str:
        return "not checked" if not self.checked else "ok" if not self.problems else "problem"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "ok": self.ok, "state": self.state,
                "problems": list(self.problems)}


@dataclass(frozen=True)
class Limits:
    max_lag_seconds: int = 10
    max_memory_ratio: float = 0.9
    max_save_age: int = 7200


def run_checks(
    kind: str,
    nodes: Sequence[NodeFacts],
    sentinels: Sequence[SentinelFacts],
    planned_masters: int,
    replicas_per_master: int,
    limits: Limits | None = None,
) -> list[Check]:
    """Every check, in the order an operator reads them."""
    limits = limits or Limits()
    statuses = [f.status for f in nodes]
    sentinel_statuses = [s.status for s in sentinels]
    checks: list[tuple[str, str, Callable[[], list[str]]]] = [
        ("reachable", "every node and sentinel answers", lambda: check_reachable(statuses, sentinel_statuses)),
    ]
    sentinel_checks = {"sentinel_quorum", "sentinel_agreement", "sentinel_replicas"}
    if kind == "cluster":
        checks += [
            ("cluster_state", "every node says cluster_state:ok", lambda: check_cluster_state(statuses)),
            ("slots", f"all {TOTAL_SLOTS} slots assigned and served", lambda: check_slots(nodes)),
            ("node_flags", "no node flagged fail? (PFAIL) or fail", lambda: check_node_flags(nodes)),
            ("open_slots", "no slot migrating or importing", lambda: check_open_slots(nodes)),
        ]
    checks += [
        ("masters", f"{planned_masters} master(s) serve data", lambda: check_masters(kind, statuses, planned_masters)),
        ("replicas", f"every master has {replicas_per_master} linked replica(s)",
         lambda: check_replicas(kind, statuses, replicas_per_master)),
        ("replica_lag", f"replicas acknowledged within {limits.max_lag_seconds} s", lambda: check_lag(nodes, limits.max_lag_seconds)),
        ("placement", "no replica on its master's host" if len({f.status.endpoint.rsplit(":", 1)[0] for f in nodes}) > 1
         else "not checkable: every node is on one host", lambda: check_placement(nodes)),
        ("memory", f"used memory below {limits.max_memory_ratio:.0%} of maxmemory",
         lambda: check_memory(nodes, limits.max_memory_ratio)),
        ("persistence", f"RDB/AOF writes ok, changes saved within {limits.max_save_age} s",
         lambda: check_persistence(nodes, limits.max_save_age)),
        ("credentials", credentials_description(statuses, sentinel_statuses),
         lambda: check_credentials(statuses, sentinel_statuses)),
    ]
    if kind == "sentinel":
        checks += [
            ("sentinel_quorum", "CKQUORUM ok for every group on every sentinel", lambda: check_sentinel_quorum(sentinels)),
            ("sentinel_agreement", "all sentinels name the same master per group",
             lambda: check_sentinel_agreement(sentinel_statuses)),
            ("sentinel_replicas", "sentinels see every group's replicas up and linked",
             lambda: check_sentinel_replicas(sentinels, replicas_per_master)),
        ]
    # A check over facts nobody gave is not a pass: it reads "not checked" and stays not ok.
    any_node = any(f.status.up for f in nodes)
    any_sentinel = any(s.status.up for s in sentinels) or not sentinels  # none planned: nothing to miss

    def runnable(name: str) -> bool:
        return name == "reachable" or (any_sentinel if name in sentinel_checks else any_node)

    return [
        Check(name, description, tuple(run())) if runnable(name)
        else Check(name, "not checked: " + ("no sentinel" if name in sentinel_checks else "no node") + " answered", (), False)
        for name, description, run in checks
    ]


def facts_json(nodes: Sequence[NodeFacts], sentinels: Sequence[SentinelFacts]) -> dict[str, Any]:
    return {
        "nodes": [asdict(f.status) for f in nodes],
        "sentinels": [asdict(s.status) for s in sentinels],
        # user -> "two passwords" | "mixed": a rotation under way (none: {}).
        "rotation": rotation_state([f.status for f in nodes], [s.status for s in sentinels]),
    }


# ---------------------------------------------------------------- cluster facts
def read_cluster_nodes(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """CLUSTER NODES, parsed by `parse_cluster_nodes` whatever redis-py's own parser does."""
    client.set_response_callback("CLUSTER NODES", lambda response, **_: response)
    raw = client.execute_command("CLUSTER NODES")
    return parse_cluster_nodes(raw.decode() if isinstance(raw, bytes) else str(raw))


def parse_cluster_nodes(text: str) -> dict[str, dict[str, Any]]:
    """{address:port: {node_id, flags, master_id, epoch, connected, slots, migrations}}, the shape
    redis-py 5 gives. Format: https://redis.io/docs/latest/commands/cluster-nodes/ (a migrating
    slot is `[slot->-node]`, an importing one `[slot-<-node]`)."""
    nodes: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        slots, migrations = [], []
        for item in parts[8:]:
            if item.startswith("["):
                slot, arrow, node = item[1:-1].partition("->-") if "->-" in item else item[1:-1].partition("-<-")
                state = "migrating" if arrow == "->-" else "importing"
                migrations.append({"slot": slot, "node_id": node, "state": state})
            else:
                slots.append(item.split("-"))
        nodes[parts[1].split("@")[0]] = {
            "node_id": parts[0],
            "flags": parts[2],
            "master_id": parts[3],
            "last_ping_sent": parts[4],
            "last_pong_rcvd": parts[5],
            "epoch": parts[6],
            "connected": parts[7] == "connected",
            "slots": slots,
            "migrations": migrations,
        }
    return nodes


def _cluster_info(info: Any) -> dict[str, Any]:
    """CLUSTER INFO as a dict, whether redis-py parsed it or not."""
    if isinstance(info, dict):
        return info
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def myself(nodes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The answering node's own line of CLUSTER NODES (flag `myself`): what a node says of
    itself is never stale gossip. None if the answer has no such line."""
    return next((dict(d) for d in nodes.values() if "myself" in str(d["flags"]).split(",")), None)


def _own_slots(nodes: Mapping[str, Any]) -> int:
    """Slots served by the node answering CLUSTER NODES (its `myself` line)."""
    own = myself(nodes)
    return sum(_slot_range_size(r) for r in own["slots"]) if own else 0


def _slot_range_size(slot_range: Sequence[str]) -> int:
    return int(slot_range[-1]) - int(slot_range[0]) + 1


@dataclass(frozen=True)
class ReplicaLag:
    """One replica as its master's INFO replication lists it (`slaveN:ip=..,port=..,lag=..`)."""

    host: str
    port: int
    lag: int  # seconds since the replica last acknowledged
    behind: int  # bytes of the master's replication stream it has not acknowledged

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def replicas_of(info: Mapping[str, Any]) -> list[ReplicaLag]:
    """A master's replicas, from its INFO (redis-py parses each `slaveN` line into a dict)."""
    offset = int(info.get("master_repl_offset", 0))
    return [
        ReplicaLag(str(value["ip"]), int(value["port"]), int(value.get("lag", 0)), offset - int(value.get("offset", 0)))
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and "ip" in value
    ]


def is_linked_replica(info: Mapping[str, Any]) -> bool:
    """A replica whose link to its master is up, from its INFO replication."""
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def tls_client_options(ca_file: str | None) -> dict[str, Any]:
    """redis-py options for a server that speaks TLS (verified against our CA); none without one."""
    return {"ssl": True, "ssl_ca_certs": ca_file} if ca_file else {}


# ---------------------------------------------------------------------- on a prod host
def check_plan(
    plan: Mapping[str, Any], password: str, tls_dir: str | None = None, limits: Limits | None = None
) -> tuple[list[Check], list[NodeFacts], list[SentinelFacts]]:
    """Every check over the deployment a host's health plan (render_hosts.health_plan) describes,
    as the admin user; with TLS when the plan says so (the CA under `tls_dir`, or the plan's)."""
    kind = plan["kind"]
    options = tls_client_options(os.path.join(tls_dir or plan["tls_dir"], "ca.crt") if plan.get("tls") else None)

    def connect(endpoint: Mapping[str, Any]) -> redis.Redis:
        return redis.Redis(
            host=endpoint["host"], port=int(endpoint["port"]), username=plan["admin_user"], password=password,
            decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0, **options,
        )

    nodes = []
    for node in plan["nodes"]:
        with connect(node) as client:
            nodes.append(node_facts(node["name"], f"{node['host']}:{node['port']}", client, kind == "cluster"))
    sentinels = []
    for sentinel in plan["sentinels"]:
        with connect(sentinel) as client:
            sentinels.append(sentinel_facts(sentinel["name"], f"{sentinel['host']}:{sentinel['port']}", client, plan["groups"]))
    checks = run_checks(kind, nodes, sentinels, int(plan["masters"]), int(plan["replicas_per_master"]), limits)
    return checks, nodes, sentinels


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 health.py PLAN.json`: the checks of `cachelayer health`, from a prod host. The
    admin password comes from REDISCLI_AUTH (health-check.sh reads it from the root-only file).
    Exit 0 healthy, 1 a problem found, 2 could not check."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("plan", help="the host's health plan (JSON)")
    parser.add_argument("--tls-dir", help="where ca.crt is, when the plan says TLS")
    parser.add_argument("--max-lag", type=int, default=Limits.max_lag_seconds)
    parser.add_argument("--max-memory", type=float, default=Limits.max_memory_ratio)
    parser.add_argument("--max-save-age", type=int, default=Limits.max_save_age)
    parser.add_argument("--json", action="store_true", help="one JSON document, as `cachelayer health --json`")
    args = parser.parse_args(argv)
    password = os.environ.get("REDISCLI_AUTH", "")
    if not password:
        print("no admin password: set REDISCLI_AUTH (health-check.sh reads it from the admin password file)", file=sys.stderr)
        return 2
    try:
        with open(args.plan, encoding="utf-8") as handle:
            plan = json.load(handle)
    except (OSError, ValueError) as error:
        print(f"cannot read the health plan {args.plan}: {error}", file=sys.stderr)
        return 2
    limits = Limits(args.max_lag, args.max_memory, args.max_save_age)
    checks, nodes, sentinels = check_plan(plan, password, args.tls_dir, limits)
    reachable = any(f.status.up for f in nodes)
    ok = reachable and all(c.ok for c in checks)
    code = 0 if ok else (1 if reachable else 2)
    if args.json:
        document = {"command": "health", "stack": plan["stack"], "host": plan.get("host"), "ok": ok}
        document["checks"] = [c.as_json() for c in checks]
        print(json.dumps({**document, **facts_json(nodes, sentinels)}, indent=2))
        return code
    if not reachable:
        print("no node answered: check the plan's endpoints, the admin password file and the firewall", file=sys.stderr)
    local = set(plan.get("local", ()))
    for status in [f.status for f in nodes] + [s.status for s in sentinels]:
        if status.name in local:
            role = "sentinel" if isinstance(status, SentinelStatus) else status.role
            print(f"{status.name} up role={role}" if status.up else f"{status.name} DOWN ({status.error})")
    seen_from = f" as seen from {plan['host']}" if plan.get("host") else ""
    print(f"health of {plan['stack']} ({plan['kind']}){seen_from}: {'ok' if ok else 'PROBLEMS FOUND'}")
    for check in checks:
        verdict = {"ok": "ok", "problem": "PROBLEM"}.get(check.state, "UNKNOWN")
        print(f"  {verdict:8} {check.name:19} {check.description}")
        for problem in check.problems:
            print(f"  {'':8} {'':19} - {problem}")
    return code


if __name__ == "__main__":
    sys.exit(main())
