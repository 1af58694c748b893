"""What the consuming programs (redis-server, Sentinel, Docker, systemd, the shell) accept. Pure.

Each rule names its source, so a bound can be checked against the program that enforces it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INT_MAX = 2**31 - 1  # C int, as config.c's createIntConfig and sentinel.c's atoi read them
LLONG_MAX = 2**63 - 1
MB = 1024**2


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    source: str  # where the bound comes from
    # True when redis-server/sentinel itself refuses values outside [low, high]; False for a
    # bound of ours (the daemon starts, but the value breaks the deployment).
    daemon_bound: bool = True


# Whole-number settings by stack key. The integration test starts redis-server with the
# daemon-enforced boundaries to prove them.
INT_RANGES: dict[str, IntRange] = {
    # config.c accepts 0..LLONG_MAX; 0 flags every node failing at once, and past an hour a dead
    # master is never replaced.
    "redis.cluster_node_timeout": IntRange(100, 3_600_000, "policy (config.c allows 0..LLONG_MAX)", daemon_bound=False),
    # config.c: createIntConfig 0..INT_MAX, but Linux refuses TCP_KEEPIDLE above 32767
    # (MAX_TCP_KEEPIDLE) and Redis ignores that failure: the socket runs without keepalive.
    # 0 turns dead-peer detection off.
    "redis.tcp_keepalive": IntRange(1, 32767, "Linux MAX_TCP_KEEPIDLE", daemon_bound=False),
    "redis.slowlog_log_slower_than": IntRange(-1, LLONG_MAX, "config.c: -1..LLONG_MAX"),
    # config.c allows 0..LONG_MAX; every entry is kept in memory, outside the data's share.
    "redis.slowlog_max_len": IntRange(1, 100_000, "policy (config.c allows 0..LONG_MAX)", daemon_bound=False),
    "redis.latency_monitor_threshold": IntRange(0, LLONG_MAX, "config.c: 0..LLONG_MAX"),
    "redis.min_replicas_to_write": IntRange(0, INT_MAX, "config.c: 0..INT_MAX"),
    "redis.min_replicas_max_lag": IntRange(0, INT_MAX, "config.c: 0..INT_MAX"),
    "redis.repl_diskless_sync_delay": IntRange(0, INT_MAX, "config.c: 0..INT_MAX"),
    # config.c: busy-reply-threshold 0..LONG_MAX; 0 would answer BUSY as soon as any script runs.
    "redis.busy_reply_threshold": IntRange(1, LLONG_MAX, "policy (config.c allows 0..LONG_MAX)", daemon_bound=False),
    # sentinel.c reads these with atoi and refuses <= 0 ("negative or zero time parameter").
    "sentinel.down_after_milliseconds": IntRange(1, INT_MAX, "sentinel.c: atoi, > 0"),
    "sentinel.failover_timeout": IntRange(1, INT_MAX, "sentinel.c: atoi, > 0"),
    "sentinel.parallel_syncs": IntRange(1, INT_MAX, "sentinel.c: SENTINEL SET refuses <= 0"),
    # find -mtime +N in redis-backup.sh; past ten years it is a typo that keeps every backup.
    "hosts.backup_retention_days": IntRange(1, 3650, "policy", daemon_bound=False),
    # The hosts' nftables limits per source address (templates/nftables.conf.j2). nft refuses a
    # rate or burst of 0; a burst or count above 2**32 - 1 is silently wrapped modulo 2**32 (tried
    # with nft 1.0.6: `burst 4294967297` loads as `burst 1`), and `ct count over 0` drops every
    # connection. Above a million new connections per second a limit limits nothing.
    "hosts.connection_rate_per_source": IntRange(1, 1_000_000, "nft: limit rate > 0; policy cap", daemon_bound=False),
    "hosts.connection_burst_per_source": IntRange(1, 2**32 - 1, "nft: burst 1..2**32-1 (wraps above)", daemon_bound=False),
    "hosts.connections_per_source": IntRange(1, 2**32 - 1, "nft: ct count 1..2**32-1 (wraps above)", daemon_bound=False),
    # Monitoring (our bounds: Prometheus accepts any positive duration). A TCP port for the first exporter.
    "monitoring.exporter_base_port": IntRange(1024, 65000, "TCP ports (room for one per process); below 1024 needs root", daemon_bound=False),
    "monitoring.scrape_interval_seconds": IntRange(1, 3600, "policy", daemon_bound=False),
    "monitoring.for_seconds": IntRange(0, 86_400, "policy", daemon_bound=False),
    "monitoring.rate_window_seconds": IntRange(2, 86_400, "policy: at least two scrapes", daemon_bound=False),
    "monitoring.memory_percent": IntRange(1, 100, "a share of maxmemory", daemon_bound=False),
    "monitoring.replication_lag_seconds": IntRange(1, 86_400, "policy", daemon_bound=False),
    "monitoring.evictions_per_second": IntRange(0, 10_000_000, "policy", daemon_bound=False),
    "monitoring.save_max_age_seconds": IntRange(60, 30 * 86_400, "policy", daemon_bound=False),
    "monitoring.backup_max_age_seconds": IntRange(60, 30 * 86_400, "policy", daemon_bound=False),
    "monitoring.failover_window_seconds": IntRange(10, 86_400, "policy", daemon_bound=False),
    "monitoring.auth_failures_per_minute": IntRange(0, 1_000_000, "policy", daemon_bound=False),
    # HAProxy (templates/haproxy.cfg.j2): its ports, and the role check's `inter`, `fall`, `rise`.
    # HAProxy accepts any positive count; past 10 (or a minute between checks) a dead master keeps
    # taking connections for minutes.
    "load_balancer.write_base_port": IntRange(1024, 65000, "TCP ports (room for one per group); below 1024 needs root", daemon_bound=False),
    "load_balancer.read_base_port": IntRange(1024, 65000, "TCP ports (room for one per group); below 1024 needs root", daemon_bound=False),
    "load_balancer.exporter_port": IntRange(1024, 65535, "a TCP port; below 1024 needs root", daemon_bound=False),
    "load_balancer.check_interval_ms": IntRange(100, 60_000, "policy (HAProxy: inter > 0)", daemon_bound=False),
    "load_balancer.fall": IntRange(1, 10, "policy (HAProxy: fall >= 1)", daemon_bound=False),
    "load_balancer.rise": IntRange(1, 10, "policy (HAProxy: rise >= 1)", daemon_bound=False),
}
# `save <seconds> <changes>`: config.c refuses seconds < 1 and changes < 0; changes 0 would
# snapshot every `seconds` even when nothing changed, so we ask for >= 1.
SAVE_SECONDS = IntRange(1, INT_MAX, "config.c: seconds >= 1")
SAVE_CHANGES = IntRange(1, INT_MAX, "policy (config.c allows 0)", daemon_bound=False)

# maxmemory 0 means "no limit" (the node grows until the kernel kills it); below 1mb Redis
# warns that it cannot work; above 1 TiB is a unit typo on any machine of this platform.
MAXMEMORY_RANGE = (MB, 1024**4)
# config.c: proto-max-bulk-len and client-query-buffer-limit >= 1mb.
MIN_BULK_LIMIT = MB

# Docker: daemon/names (RestrictedNamePattern) for networks and volumes.
DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Docker image tag grammar (distribution/reference): [\w][\w.-]{0,127}, \w being ASCII.
DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# A pinned image reference: name (optionally with registry and path), then :tag or @sha256:digest.
# "latest" is refused: the exporter's metric names and the rules that read them must not drift.
DOCKER_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*?(:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$")
# Machine names become resource names, certificate names and host names: an RFC 1123 label.
MACHINE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# useradd(8) with Debian's default NAME_REGEX, at most 32 characters.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

# Passwords land in `masterauth "..."` and `sentinel auth-pass <group> "..."` lines, which a
# shell wrapper reads back with sed: printable ASCII without space, quotes or backslash.
PASSWORD_FORBIDDEN = "\"'\\"


def password_problem(value: str) -> str | None:
    """Why `value` cannot be written into a config line, or None."""
    for char in value:
        if not "!" <= char <= "~":
            return f"it holds a character ({char.encode('unicode_escape').decode()!r}) outside printable ASCII, or a space"
        if char in PASSWORD_FORBIDDEN:
            return f"it holds {char!r}, which breaks the quoted config lines it is written into"
    return None


# systemd.time(7) calendar events: a subset that systemd accepts, checked in pure Python
# (tests compare it with `systemd-analyze calendar`).
CALENDAR_SHORTHANDS = frozenset(
    {"minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually", "quarterly", "semiannually"}
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {**{d: d for d in _DAYS}, "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
              "friday": "fri", "saturday": "sat", "sunday": "sun"}  # fmt: skip


def _component_ok(text: str, low: int, high: int, digits: int = 2) -> bool:
    """One date/time component: `*`, or a comma list of N, N..M, each optionally `/step`."""
    if text == "*":
        return True
    for item in text.split(","):
        value, _, step = item.partition("/")
        if step and not (step.isdigit() and int(step) >= 1):
            return False
        if value == "*" and step:
            continue
        start, dots, end = value.partition("..")
        bounds = [start, end] if dots else [start]
        if not all(b.isdigit() and len(b) <= digits and low <= int(b) <= high for b in bounds):
            return False
        if dots and int(start) > int(end):
            return False
    return True


def _weekdays_ok(text: str) -> bool:
    for item in text.lower().split(","):
        start, dots, end = item.partition("..")
        if start not in _DAY_NAMES or (dots and end not in _DAY_NAMES):
            return False
    return True


def calendar_ok(text: str) -> bool:
    """True when `text` is a calendar event of the supported subset:
    [weekdays] [[YYYY-]MM-DD] [HH:MM[:SS]] [UTC], or a shorthand (daily, hourly, ...)."""
    words = text.split(" ")
    if text.lower() in CALENDAR_SHORTHANDS:
        return True
    if words and words[-1] == "UTC":
        words = words[:-1]
    if not words or any(not w for w in words):
        return False
    if words and any(c.isalpha() for c in words[0]):
        if not _weekdays_ok(words[0]):
            return False
        words = words[1:]
    date = time = None
    for word in words:
        if ":" in word and time is None:
            time = word
        elif "-" in word and date is None and time is None:
            date = word
        else:
            return False
    if date is None and time is None:
        return bool(text.split(" ")[0]) and len(words) == 0 and any(c.isalpha() for c in text)
    if date is not None:
        parts = date.split("-")
        if len(parts) == 2:
            parts = ["*", *parts]
        if len(parts) != 3 or not _component_ok(parts[0], 1970, 2199, digits=4):
            return False
        if not (_component_ok(parts[1], 1, 12) and _component_ok(parts[2], 1, 31)):
            return False
    if time is not None:
        parts = time.split(":")
        if len(parts) == 2:
            parts.append("00")
        if len(parts) != 3:
            return False
        if not (_component_ok(parts[0], 0, 23) and _component_ok(parts[1], 0, 59) and _component_ok(parts[2], 0, 59)):
            return False
    return True
