"""A performance report of each node: memory and fragmentation, MEMORY DOCTOR, LATENCY DOCTOR and
LATEST, SLOWLOG, hit ratio, evictions, clients, and the biggest keys by memory (sampled with SCAN
+ MEMORY USAGE; never KEYS, which blocks the node)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from platform_cache.keys import redact_command, redact_key


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


def node_report(name: str, endpoint: str, client: redis.Redis, slowlog: int = 10, sample: int = 1000, top: int = 10) -> NodeReport:
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
            latest, entries, keys, sampled,
        )
    except redis.RedisError as error:
        return NodeReport(name, endpoint, False, str(error))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
