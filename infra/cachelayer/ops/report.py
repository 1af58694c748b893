"""A performance report of each node: memory and fragmentation, MEMORY DOCTOR, LATENCY DOCTOR and
LATEST, SLOWLOG, hit ratio, evictions, clients, and the biggest keys by memory (sampled with SCAN
+ MEMORY USAGE; never KEYS, which blocks the node); and the recent refused accesses (ACL LOG)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from cachelayer.plan.acl_policy import MONITOR_NODE_REFUSED
from cachelayer.render.nodes import USERS
from platform_cache.keys import redact_command, redact_key

# ACL LOG keeps the user name a client *tried*: someone who swaps `AUTH <password> <user>` puts a
# password there. Only the platform's own user names are shown as they are.
KNOWN_USERS = frozenset({"default", USERS.app, USERS.admin, USERS.replication, USERS.sentinel, USERS.monitor})
UNKNOWN_USER = "<unknown user>"  # not one of the platform's users


@dataclass(frozen=True)
class NodeReport:
    name: str
    endpoint: str
    up: bool
    error: str = ""
    role: str = "-"
    used_memory: int = 0
    used_memory_human: str = "-"
    maxmemory: int = 0
    fragmentation_ratio: float = 0.0
    keyspace_hits: int = 0
    keyspace_misses: int = 0
    evicted_keys: int = 0
    connected_clients: int = 0
    rejected_connections: int = 0
    memory_doctor: str = ""
    latency_doctor: str = ""
    latency_latest: list[dict[str, Any]] = field(default_factory=list)
    slowlog: list[dict[str, Any]] = field(default_factory=list)
    biggest_keys: list[dict[str, Any]] = field(default_factory=list)  # {key, bytes}, largest first
    sampled_keys: int = 0
    acl_log: list[dict[str, Any]] = field(default_factory=list)  # newest first (acl_log_entries)

    @property
    def hit_ratio(self) -> float | None:
        total = self.keyspace_hits + self.keyspace_misses
        return self.keyspace_hits / total if total else None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": self.hit_ratio}


def biggest_keys(client: redis.Redis, sample: int, top: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `sample` keys walked with SCAN, the `top` largest by MEMORY USAGE; a session key's
    id (a bearer token) is never shown (the cache library's redaction rule)."""
    sizes: list[tuple[int, str]] = []
    for key in client.scan_iter(count=500):
        usage = client.memory_usage(key)
        sizes.append((int(usage or 0), str(key)))
        if len(sizes) >= sample:
            break
    sizes.sort(reverse=True)
    return [{"key": redact_key(key), "bytes": size} for size, key in sizes[:top]], len(sizes)


def acl_log_entries(client: redis.Redis, count: int) -> list[dict[str, Any]]:
    """The node's newest `count` ACL LOG entries: who was refused what, from where. An entry never
    holds a password (Redis logs the reason, not the AUTH arguments); a key or channel is shown
    with the cache library's redaction (a session key's id is a bearer token), and a user name
    only when it is one of the platform's. `expected` marks the exporter's refusals by design."""
    entries = []
    for row in client.acl_log(count) if count > 0 else []:
        reason, user, refused = _text(row.get("reason")), _text(row.get("username")), _text(row.get("object"))
        info = row.get("client-info") or {}
        entries.append({
            "count": int(_text(row.get("count", 1))),
            "reason": reason,  # auth, command, key or channel
            "context": _text(row.get("context")),  # toplevel, multi, lua, module
            "user": user if user in KNOWN_USERS else UNKNOWN_USER,
            "object": redact_key(refused) if reason in ("key", "channel") else refused,
            "client": _text(info.get("addr", "?")) if isinstance(info, dict) else "?",
            "client_name": _text(info.get("name", "")) if isinstance(info, dict) else "",
            "age_seconds": float(_text(row.get("age-seconds", 0.0))),
            "expected": reason == "command" and user == USERS.monitor and refused in {rule for rule, _ in MONITOR_NODE_REFUSED},
        })  # fmt: skip
    return entries


def node_report(
    name: str, endpoint: str, client: redis.Redis, slowlog: int = 10, sample: int = 1000, top: int = 10, acl_log: int = 10
) -> NodeReport:
    try:
        info = client.info()
        latest = [
            {"event": row[0], "when": int(row[1]), "latest_ms": int(row[2]), "max_ms": int(row[3])}
            for row in client.execute_command("LATENCY LATEST")
        ]
        entries = [
            {"id": e["id"], "start_time": e["start_time"], "duration_us": e["duration"],
             "command": " ".join(redact_command(_text(e["command"]).split(" ")))[:200],
             "client": _text(e.get("client_address", ""))}
            for e in client.slowlog_get(slowlog)
        ]
        keys, sampled = biggest_keys(client, sample, top) if info.get("role") == "master" else ([], 0)
        return NodeReport(
            name, endpoint, True, "", "master" if info.get("role") == "master" else "replica",
            int(info.get("used_memory", 0)), str(info.get("used_memory_human", "-")), int(info.get("maxmemory", 0)),
            float(info.get("mem_fragmentation_ratio", 0.0)),
            int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0)), int(info.get("evicted_keys", 0)),
            int(info.get("connected_clients", 0)), int(info.get("rejected_connections", 0)),
            _text(client.execute_command("MEMORY DOCTOR")), _text(client.execute_command("LATENCY DOCTOR")),
            latest, entries, keys, sampled, acl_log_entries(client, acl_log),
        )
    except redis.RedisError as error:
        return NodeReport(name, endpoint, False, str(error))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
