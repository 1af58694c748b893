"""Rebalance and drain, by `redis-cli --cluster` (it moves slots key by key with MIGRATE), with
our own pre-flight and post-checks: refuse when a slot is open or uncovered, and check after that
all slots are served and none is left open. The admin password goes in REDISCLI_AUTH."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis

from cachelayer.errors import CachelayerError
from cachelayer.ops.health import check_open_slots, check_slots, myself, node_facts, read_cluster_nodes
from cachelayer.ops.target import Endpoint, Target


class RebalanceError(CachelayerError):
    """A pre-flight refusal or a failed redis-cli run; the message says which and why."""


def members(target: Target) -> list[Endpoint]:
    """The target's nodes the cluster knows (a drained node answers but is no longer a member)."""
    with target.client(seed(target)) as client:
        known = set(read_cluster_nodes(client))
    return [e for e in target.nodes if e.address in known]


def slot_problems(target: Target) -> list[str]:
    facts = []
    for endpoint in members(target):
        with target.client(endpoint) as client:
            facts.append(node_facts(endpoint.name, endpoint.address, client, cluster=True))
    reachable = [f for f in facts if f.status.up]
    return check_slots(reachable) + check_open_slots(reachable)


def seed(target: Target, avoid: Endpoint | None = None) -> Endpoint:
    for endpoint in target.nodes:
        if endpoint == avoid:
            continue
        try:
            with target.client(endpoint) as client:
                client.ping()
            return endpoint
        except redis.RedisError:
            continue
    raise RebalanceError("no node answers")


def redis_cli_cluster(target: Target, *args: str, timeout: float = 3600) -> str:
    argv = ["redis-cli", *target.cli_args(), "--cluster", *args]
    # redis-cli moves a slot key by key: stopped in the middle, it leaves that slot open on two nodes.
    hint = (f"a slot may be left open (migrating/importing): `REDISCLI_AUTH=... redis-cli {' '.join(target.cli_args())} "
            f"--cluster fix {args[1] if len(args) > 1 else 'HOST:PORT'}` finishes the move; then run the command again")
    try:
        result = subprocess.run(argv, env=target.cli_env(), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RebalanceError(f"`redis-cli --cluster {args[0]}` did not finish within {timeout:.0f} s and was stopped: "
                             f"{hint}") from None
    except KeyboardInterrupt:
        raise RebalanceError(f"`redis-cli --cluster {args[0]}` was interrupted: {hint}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0 or "[ERR]" in output:
        moving = args[0] in ("rebalance", "reshard")
        raise RebalanceError(f"`redis-cli --cluster {' '.join(args)}` failed:\n{output[-3000:]}" + (f"\n{hint}" if moving else ""))
    return output


def preflight(target: Target) -> None:
    if target.kind != "cluster":
        raise RebalanceError("rebalance and drain are for Redis Cluster; this deployment is Sentinel topology")
    problems = slot_problems(target)
    if problems:
        raise RebalanceError("refusing: " + "; ".join(problems))
    redis_cli_cluster(target, "check", seed(target).address)


def postcheck(target: Target, ignore: Sequence[Endpoint] = (), settle: float = 15.0) -> None:
    """Every slot served and none open, on every member. redis-cli tells only a slot's old and new
    owner; the other nodes learn by gossip a moment later (and a node that forgot a drained master
    sees its slots unassigned until then), so the check waits up to `settle` seconds for that."""
    remaining = replace(target, nodes=tuple(e for e in target.nodes if e not in ignore))
    deadline = time.monotonic() + settle
    while (problems := slot_problems(remaining)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if problems:
        raise RebalanceError("after the move: " + "; ".join(problems))


def rebalance(target: Target, dry_run: bool = False) -> str:
    """`redis-cli --cluster rebalance` (empty masters included) after the pre-flight and the memory
    check; with `dry_run`, redis-cli's own --cluster-simulate (nothing moves)."""
    preflight(target)
    problems = headroom_problems(target)
    if problems:
        raise RebalanceError("refusing: " + "; ".join(problems))
    simulate = ["--cluster-simulate"] if dry_run else []
    output = redis_cli_cluster(target, "rebalance", seed(target).address, "--cluster-use-empty-masters", *simulate)
    if not dry_run:
        postcheck(target)
    return output


def master_memory(target: Target) -> dict[Endpoint, tuple[int, int, int, int]]:
    """Every master member: (used_memory, used_memory_dataset, maxmemory, slots)."""
    found = {}
    for endpoint in members(target):
        with target.client(endpoint) as client:
            facts = node_facts(endpoint.name, endpoint.address, client, cluster=True)
        if facts.status.up and facts.status.role == "master":
            info = facts.info
            found[endpoint] = (int(info.get("used_memory", 0)), int(info.get("used_memory_dataset", 0)),
                               int(info.get("maxmemory", 0)), int(facts.status.slots or 0))
    return found


def headroom_problems(target: Target, leaving: Endpoint | None = None) -> list[str]:
    """Masters that would pass their maxmemory with the data moved to them (an allkeys-lru node
    then evicts keys as they arrive). Draining `leaving` spreads its dataset evenly over the
    other serving masters; a rebalance brings every master to an even share of the total."""
    memory = master_memory(target)
    found = []

    def check(endpoint: Endpoint, incoming: float) -> None:
        used, _, limit, _ = memory[endpoint]
        if limit and incoming > 0 and used + incoming > limit:
            found.append(f"{endpoint.name} would hold {used + incoming:,.0f} bytes after the move, above its "
                         f"maxmemory {limit:,} (it would evict keys): raise redis.maxmemory or add shards first")

    if leaving is not None:
        if leaving not in memory:
            return []
        receivers = [e for e, (_, _, _, slots) in memory.items() if e != leaving and slots]
        for endpoint in receivers:
            check(endpoint, memory[leaving][1] / len(receivers))
        return found
    if not memory:
        return []
    even = sum(dataset for _, dataset, _, _ in memory.values()) / len(memory)
    for endpoint, (_, dataset, _, _) in memory.items():
        check(endpoint, even - dataset)
    return found


def own_line(target: Target, endpoint: Endpoint) -> dict[str, Any]:
    """The node's own line of its CLUSTER NODES (node id, flags, master id, slots)."""
    with target.client(endpoint) as client:
        own = myself(read_cluster_nodes(client))
    if own is None:
        raise RebalanceError(f"{endpoint.name} does not list itself in CLUSTER NODES")
    return own


def node_id(target: Target, endpoint: Endpoint) -> tuple[str, bool]:
    """(its cluster node id, whether it is a master)."""
    own = own_line(target, endpoint)
    return str(own["node_id"]), "master" in own["flags"]


def linked_replicas(target: Target, master_id: str) -> list[str]:
    """Addresses of the replicas of `master_id` that no node flags as failing, as the cluster sees them."""
    with target.client(seed(target)) as client:
        nodes = read_cluster_nodes(client)
    return [
        address for address, detail in nodes.items()
        if detail["master_id"] == master_id and not {"fail", "fail?"} & set(str(detail["flags"]).split(","))
    ]


def drain_plan(target: Target, endpoint: Endpoint, force: bool = False) -> str:
    """What `drain` would do, after every check it makes first; a RebalanceError when refused.
    A replica holds no slots: draining it only makes the cluster forget it, which is refused when
    it is its master's last replica (that shard would have no copy) unless `force`."""
    preflight(target)
    own = own_line(target, endpoint)
    if "master" in own["flags"]:
        problems = headroom_problems(target, leaving=endpoint)
        if problems:
            raise RebalanceError("refusing: " + "; ".join(problems))
        slots = sum(int(r[-1]) - int(r[0]) + 1 for r in own["slots"])
        return f"move the {slots} slot(s) of master {endpoint.name} (and their keys) to the other masters, then forget it"
    siblings = [a for a in linked_replicas(target, str(own["master_id"])) if a != endpoint.address]
    if not siblings and not force:
        raise RebalanceError(
            f"refusing: {endpoint.name} is the last replica of its master: without it that shard has no copy and "
            f"cannot fail over. Add a replica first, or pass --force to drain it anyway"
        )
    return (f"forget replica {endpoint.name} ({len(siblings)} other replica(s) of its master left"
            f"{'; FORCED' if not siblings else ''})")


def drain(target: Target, endpoint: Endpoint, force: bool = False) -> str:
    """Move every slot of a master away (rebalance with its weight 0), then `del-node`, which
    makes every node forget it and moves its replicas to other masters; a replica is only
    forgotten. redis-cli then resets the node (CLUSTER RESET SOFT): it keeps running, alone, and
    is stopped by whoever runs it (lower redis.node_count)."""
    drain_plan(target, endpoint, force)
    ident, is_master = node_id(target, endpoint)
    other = seed(target, avoid=endpoint)
    output = ""
    if is_master:
        output += redis_cli_cluster(target, "rebalance", other.address, "--cluster-weight", f"{ident}=0")
        # Redis 7 turns a master that gave away its last slot into a replica of the node that took
        # it, so it may hold a copy of that node's keys by now: what must be gone is its slots.
        if own_line(target, endpoint)["slots"]:
            raise RebalanceError(f"{endpoint.name} still owns slots after the rebalance")
    output += redis_cli_cluster(target, "del-node", other.address, ident)
    postcheck(target, ignore=[endpoint])
    return output
