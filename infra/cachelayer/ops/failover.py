"""Planned failover with a probe client: CLUSTER FAILOVER on a replica (cluster) or SENTINEL
FAILOVER on a group (sentinel), checks before, polling after until the new roles are in place,
and what a client writing and reading throughout saw (errors, longest gap)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from cachelayer.errors import CachelayerError
from cachelayer.ops.health import TOTAL_SLOTS, is_linked_replica, myself, read_cluster_nodes, replicas_of
from cachelayer.ops.target import Endpoint, Target


class FailoverError(CachelayerError):
    """A pre-check refused, or the new roles did not settle in time."""


PROBE_KEY = "cachelayer:failover-probe"
PROBE_TTL_SECONDS = 60
# How a node flags a master it cannot reach: `fail?` (PFAIL, its own view) or `fail` (agreed by a
# majority of masters). Only then may a replica take over without its master's agreement.
FAILED_FLAGS = frozenset({"fail", "fail?"})


@dataclass
class Probe:
    """Writes then reads one key every `interval` seconds from a thread, counting errors."""

    client: Any  # RedisCluster or a Sentinel-managed Redis
    interval: float = 0.01
    ops: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    longest_gap: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        last_ok = time.monotonic()
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                # Expires on its own: the probe leaves nothing behind in a production keyspace.
                self.client.set(PROBE_KEY, n, ex=PROBE_TTL_SECONDS)
                if int(self.client.get(PROBE_KEY)) != n:
                    self.errors["stale read"] += 1
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
            except (redis.RedisError, OSError) as error:
                self.errors[type(error).__name__] += 1
            self.ops += 1
            time.sleep(self.interval)

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.client.close()

    def as_json(self) -> dict[str, Any]:
        return {"ops": self.ops, "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "longest_gap_seconds": round(self.longest_gap, 3)}


@dataclass(frozen=True)
class FailoverResult:
    mode: str  # graceful, force, takeover, sentinel
    subject: str  # the replica promoted, or the sentinel group
    old_master: str
    new_master: str
    switch_seconds: float  # from the failover command to the new master serving all its slots
    probe: dict[str, Any]
    dry_run: bool = False
    checks: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "subject": self.subject, "old_master": self.old_master, "new_master": self.new_master,
                "switch_seconds": round(self.switch_seconds, 3), "probe": self.probe, "dry_run": self.dry_run,
                "checks": list(self.checks)}


# ---------------------------------------------------------------------------- cluster
def _cluster_probe(target: Target) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(e.host, e.port) for e in target.nodes],
        username=target.admin_user, password=target.admin_password, decode_responses=True,
        socket_timeout=1, socket_connect_timeout=1, **target.tls_options,
    )


def default_replica(target: Target) -> Endpoint:
    """For a graceful failover without a node named: the first linked replica in port order.
    Nodes that do not answer are passed over (their shard needs --force and a named node)."""
    for endpoint in target.nodes:
        try:
            with target.client(endpoint) as client:
                info = client.info("replication")
        except redis.RedisError:
            continue
        if is_linked_replica(info):
            return endpoint
    raise FailoverError("no replica with its link up: nothing to fail over to")


def master_flags(target: Target, replica: Endpoint) -> tuple[str, set[str]]:
    """(its master's address, the flags the replica's CLUSTER NODES gives that master)."""
    with target.client(replica) as client:
        nodes = read_cluster_nodes(client)
    own = myself(nodes)
    if own is None or own["master_id"] == "-":
        return "-", set()
    for address, detail in nodes.items():
        if detail["node_id"] == own["master_id"]:
            return address, set(str(detail["flags"]).split(","))
    return "?", set()


def cluster_prechecks(target: Target, replica: Endpoint, max_lag: int, mode: str = "graceful") -> tuple[str, list[str]]:
    """(its master's address, problems). Refuses outright (FailoverError) what no mode may do:
    promote a master or a node that does not answer, or force a failover of a master the
    cluster does not flag as failed (that shard is healthy: a forced switch there loses writes)."""
    try:
        with target.client(replica) as client:
            info = client.info("replication")
    except redis.RedisError as error:
        raise FailoverError(f"{replica.name} does not answer ({error}): name a replica that runs") from None
    if info.get("role") != "slave":
        raise FailoverError(f"{replica.name} is a master, not a replica: name a replica")
    master = f"{info['master_host']}:{info['master_port']}"
    if mode == "force":
        listed, flags = master_flags(target, replica)
        if not flags & FAILED_FLAGS:
            raise FailoverError(
                f"refusing --force: {replica.name}'s master {listed if listed not in ('-', '?') else master} is not flagged "
                f"fail or fail? in CLUSTER NODES (flags {','.join(sorted(flags)) or 'unknown'}); a healthy master "
                f"agrees to a graceful failover (no option), and `cachelayer health` shows which master has failed"
            )
    problems = []
    if info.get("master_link_status") != "up":
        problems.append(f"{replica.name}'s link to {master} is {info.get('master_link_status')}")
    try:
        # No retry: a master that refuses the connection is an answer here (--force is for it).
        with target.client(Endpoint("master", info["master_host"], int(info["master_port"])), retry=False) as client:
            master_info = client.info("replication")
        for seen in replicas_of(master_info):
            if seen.address == replica.address and seen.lag > max_lag:
                problems.append(f"{replica.name} lags {seen.lag} s behind {master} (limit {max_lag} s)")
    except redis.RedisError as error:
        problems.append(f"its master {master} does not answer ({error}): name this replica with --force")
    return master, problems


def cluster_failover(
    target: Target, replica: Endpoint, mode: str = "graceful", timeout: float = 60, max_lag: int = 5, dry_run: bool = False
) -> FailoverResult:
    master, problems = cluster_prechecks(target, replica, max_lag, mode)
    if mode == "graceful" and problems:
        raise FailoverError("; ".join(problems))
    checks = tuple(problems) or ("replica link up, lag within limits",)
    if dry_run:
        return FailoverResult(mode, replica.name, master, replica.address, 0.0, {}, True, checks)
    with Probe(_cluster_probe(target)) as probe:
        time.sleep(0.2)  # a baseline before the switch
        begin = time.monotonic()
        deadline = begin + timeout
        while True:
            with target.client(replica) as client:
                client.execute_command("CLUSTER FAILOVER", *([] if mode == "graceful" else [mode.upper()]))
            # Redis aborts a manual failover that does not complete within 5 s (CLUSTER_MF_TIMEOUT,
            # e.g. a busy master slow to pause): then ask again, until the overall deadline.
            try:
                _wait_cluster_settled(target, replica, min(deadline, time.monotonic() + MANUAL_FAILOVER_WAIT))
                break
            except FailoverError:
                if time.monotonic() >= deadline:
                    raise
        switch = time.monotonic() - begin
        time.sleep(0.2)
    return FailoverResult(mode, replica.name, master, replica.address, switch, probe.as_json(), False, checks)


# Redis's manual-failover timeout (5 s) plus the time the cluster takes to agree on the new roles.
MANUAL_FAILOVER_WAIT = 8.0


def _wait_cluster_settled(target: Target, replica: Endpoint, deadline: float) -> None:
    """The replica is master and every reachable node sees all slots served."""
    while time.monotonic() < deadline:
        try:
            with target.client(replica, timeout=1) as client:
                promoted = client.info("replication").get("role") == "master"
            if promoted and all(_slots_ok(target, e) for e in target.nodes):
                return
        except redis.RedisError:
            pass
        time.sleep(0.02)
    raise FailoverError(f"{replica.name} did not become a master serving all slots in time")


def _slots_ok(target: Target, endpoint: Endpoint) -> bool:
    try:
        with target.client(endpoint, timeout=1) as client:
            info = client.execute_command("CLUSTER INFO")
        return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == TOTAL_SLOTS
    except redis.RedisError:
        return True  # a node that is down does not block the switch (health reports it)


# --------------------------------------------------------------------------- sentinel
def _sentinel(target: Target) -> Sentinel:
    auth = {"username": target.sentinel_user, "password": target.sentinel_password, "socket_timeout": 1}
    return Sentinel(
        [(e.host, e.port) for e in target.sentinels], sentinel_kwargs=auth,
        username=target.admin_user, password=target.admin_password, socket_timeout=1, decode_responses=True,
    )


def sentinel_prechecks(target: Target, group: str, max_lag: int) -> tuple[Endpoint, str, tuple[str, ...]]:
    """(a sentinel that answers, the group's master, checks passed). Every sentinel is asked
    (the first may be the one that is down); CKQUORUM must pass, and at least one replica must
    be linked and within `max_lag` seconds of the master, or the failover would lose writes."""
    unreachable = []
    for sentinel_endpoint in target.sentinels:
        try:
            with target.client(sentinel_endpoint, retry=False) as client:
                old: Any = client.sentinel_get_master_addr_by_name(group)
                try:
                    quorum = str(client.execute_command("SENTINEL CKQUORUM", group))
                except redis.ResponseError as error:
                    raise FailoverError(f"CKQUORUM {group}: {error}") from None
        except redis.RedisError as error:
            unreachable.append(f"{sentinel_endpoint.name}: {error}")
            continue
        if not old:
            raise FailoverError(f"{sentinel_endpoint.name} does not monitor {group}")
        old_master = f"{old[0]}:{old[1]}"
        try:
            with target.client(Endpoint("master", str(old[0]), int(old[1]))) as client:
                lags = replicas_of(client.info("replication"))
        except redis.RedisError as error:
            raise FailoverError(f"{group}'s master {old_master} does not answer ({error}): Sentinel fails it over "
                                f"by itself once it is down") from None
        fresh = [r for r in lags if r.lag <= max_lag]
        if not fresh:
            seen = ", ".join(f"{r.address} {r.lag} s" for r in lags) or "none"
            raise FailoverError(f"no replica of {group} acknowledged {old_master} within {max_lag} s "
                                f"(replicas: {seen}): a failover now would lose writes")
        return sentinel_endpoint, old_master, (quorum, f"{len(fresh)} replica(s) within {max_lag} s")
    raise FailoverError("no sentinel answers: " + "; ".join(unreachable))


def sentinel_failover(
    target: Target, group: str, timeout: float = 60, dry_run: bool = False, max_lag: int = 5
) -> FailoverResult:
    sentinel_endpoint, old_master, checks = sentinel_prechecks(target, group, max_lag)
    if dry_run:
        return FailoverResult("sentinel", group, old_master, "?", 0.0, {}, True, checks)
    with Probe(_sentinel(target).master_for(group, socket_timeout=1)) as probe:
        time.sleep(0.2)
        begin = time.monotonic()
        with target.client(sentinel_endpoint) as client:
            client.execute_command("SENTINEL FAILOVER", group)
        new_master = _wait_sentinel_settled(target, group, old_master, begin + timeout)
        switch = time.monotonic() - begin
        time.sleep(0.2)
    return FailoverResult("sentinel", group, old_master, new_master, switch, probe.as_json(), False, checks)


def _wait_sentinel_settled(target: Target, group: str, old_master: str, deadline: float) -> str:
    """Every sentinel names the same new master, and it says it is a master."""
    while time.monotonic() < deadline:
        try:
            named = set()
            for endpoint in target.sentinels:
                try:
                    with target.client(endpoint, timeout=1, retry=False) as client:
                        address: Any = client.sentinel_get_master_addr_by_name(group)
                except redis.ConnectionError:
                    continue  # a sentinel that is down has no say (the quorum checked before)
                named.add(f"{address[0]}:{address[1]}")
            if len(named) == 1 and old_master not in named:
                (new,) = named
                host, port = new.rsplit(":", 1)
                with target.client(Endpoint("new", host, int(port)), timeout=1) as client:
                    if client.info("replication").get("role") == "master":
                        return new
        except redis.RedisError:
            pass
        time.sleep(0.02)
    raise FailoverError(f"the sentinels did not agree on a new master for {group} in time")
