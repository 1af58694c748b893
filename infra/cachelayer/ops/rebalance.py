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
    result = subprocess.run(argv, env=target.cli_env(), capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0 or "[ERR]" in output:
        raise RebalanceError(f"`redis-cli --cluster {' '.join(args)}` failed:\n{output[-3000:]}")
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


def rebalance(target: Target) -> str:
    preflight(target)
    output = redis_cli_cluster(target, "rebalance", seed(target).address, "--cluster-use-empty-masters")
    postcheck(target)
    return output


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


def drain(target: Target, endpoint: Endpoint) -> str:
    """Move every slot of the node away (rebalance with its weight 0), then `del-node`, which
    makes every node forget it, moves its replicas to other masters and shuts it down."""
    preflight(target)
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
