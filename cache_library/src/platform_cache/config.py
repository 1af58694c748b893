"""How to reach the deployment and how the cache behaves; built from the stack's own outputs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError

MIB = 1024 * 1024
# proto-max-bulk-len on the platform's 2gb nodes is maxmemory/64 = 32mb; the app user cannot run
# CONFIG GET, so the limit is a parameter. The margin leaves room for the rest of the request.
DEFAULT_MAX_VALUE_BYTES = 32 * MIB - 64 * 1024


@dataclass(frozen=True)
class RetrySettings:
    """redis-py's retry knobs, tuned so a failover (cluster_node_timeout 5000 ms, or a sentinel
    failover) is ridden out by reads failing open and writes retrying, not by long hangs.

    `retries` x backoff (capped at `backoff_cap`) spans about a second of reconnects per call:
    longer would block request handlers for the whole failover; shorter would fail calls on a
    single dropped connection. The socket timeouts bound one attempt against a dead node."""

    retries: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 0.5
    socket_timeout: float = 1.0
    socket_connect_timeout: float = 0.5
    health_check_interval: float = 0  # 0: only check on error (the retry covers stale connections)


@dataclass(frozen=True)
class CacheConfig:
    """Everything the cache needs. The password is never shown by repr()."""

    seeds: tuple[str, ...] = ()
    user: str | None = "app"
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_certs: str | None = None
    sentinels: tuple[str, ...] = ()
    sentinel_groups: tuple[str, ...] = ()  # one master per group; keys are spread over them by slot
    namespace: str = "lms"
    default_ttl: float = 3600
    session_ttl: float = 86400
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    compress_threshold: int = 1024  # bytes of serialized value; 0 turns compression off
    hash_keys: bool = False
    fail_open_reads: bool = True  # reads of cached data answer a miss when Redis is unreachable
    fail_open_writes: bool = True  # set/mset/delete drop the write (counted) rather than raise
    fail_open_sessions: bool = False  # a session store that silently forgets logs users out: raise
    lock_ttl: float = 10.0  # single-flight lock lifetime (the longest a loader may hold others)
    lock_wait: float = 10.0  # how long followers wait for the leader before loading themselves
    xfetch_beta: float = 1.0  # >1 refreshes earlier, 0 turns early refresh off
    # Read policy: namespaces whose reads may be served by a replica (possibly a little stale);
    # "*" allows every namespace. Sessions never read from replicas. Empty: masters only.
    replica_namespaces: tuple[str, ...] = ()
    # Read-your-writes: for this long after a write (or invalidation) through this client, reads
    # of the keys (tags) it wrote go to the master, whatever the policy says.
    read_your_writes_window: float = 5.0
    # Cluster: how often the replica reads' client reads the slot map again. Redis lists a replica
    # there only once it has replicated something and while it is up, and redis-py reads the map
    # again only after an error: a replica missing when the map was read (a fresh cluster, a
    # replica restarting) would never be read from. Within this many seconds it is.
    replica_refresh_interval: float = 30.0
    retry: RetrySettings = RetrySettings()

    @property
    def topology(self) -> str:
        return "sentinel" if self.sentinel_groups else "cluster"

    @property
    def reads_replicas(self) -> bool:
        """Whether any read may go to a replica (the replica clients are only made then)."""
        return bool(self.replica_namespaces)

    def replica_reads_allowed(self, namespace: str) -> bool:
        return "*" in self.replica_namespaces or namespace in self.replica_namespaces

    def with_options(self, **changes: Any) -> CacheConfig:
        return replace(self, **changes)

    def validate(self) -> CacheConfig:
        if self.topology == "cluster" and not self.seeds:
            raise ConfigError("no seeds: give at least one host:port of the cluster")
        if self.topology == "sentinel" and not self.sentinels:
            raise ConfigError("sentinel_groups without sentinels")
        if not self.namespace or self.namespace.startswith("~"):
            raise ConfigError(f"namespace {self.namespace!r}: must be non-empty and not start with '~'")
        if self.default_ttl <= 0 or self.session_ttl <= 0:
            raise ConfigError("default_ttl and session_ttl must be positive")
        if isinstance(self.replica_namespaces, str):
            raise ConfigError("replica_namespaces must be a tuple of namespaces, e.g. ('content',), not a str")
        if self.read_your_writes_window < 0:
            raise ConfigError("read_your_writes_window must be >= 0 seconds")
        if self.replica_refresh_interval <= 0:
            raise ConfigError("replica_refresh_interval must be > 0 seconds")
        for endpoint in (*self.seeds, *self.sentinels):
            parse_endpoint(endpoint)
        return self


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def from_stack_output(connection: str | Mapping[str, Any], **options: Any) -> CacheConfig:
    """The stack's `connection` output (`pulumi stack output connection --json --show-secrets`)."""
    data: Mapping[str, Any] = json.loads(connection) if isinstance(connection, str) else connection
    try:
        config = CacheConfig(
            seeds=tuple(data["seeds"]),
            user=data.get("user", "app"),
            password=data.get("password"),
            tls=bool(data.get("tls", False)),
            sentinels=tuple(data.get("sentinels") or ()),
            sentinel_groups=tuple(data.get("sentinel_groups") or ()),
        )
    except KeyError as missing:
        raise ConfigError(f"the connection output lacks {missing}") from None
    return config.with_options(**options).validate()


def from_env(environ: Mapping[str, str] | None = None, **options: Any) -> CacheConfig:
    """The seed's variables: REDIS_PASSWORD, REDIS_NODE_<n>_HOST/PORT (n from 0 or 1),
    CACHE_DEFAULT_TTL, CACHE_NAMESPACE, SESSION_TTL; also REDIS_USER, REDIS_TLS, REDIS_TLS_CA,
    REDIS_SENTINELS (host:port,...) and REDIS_SENTINEL_GROUPS (name,...) for the sentinel
    topology, CACHE_REPLICA_NAMESPACES (name,... or *), CACHE_READ_YOUR_WRITES and
    CACHE_REPLICA_REFRESH (seconds)."""
    env = os.environ if environ is None else environ
    seeds = _env_seeds(env)

    def listed(name: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())

    try:
        config = CacheConfig(
            seeds=tuple(seeds),
            user=env.get("REDIS_USER", "app"),
            password=env.get("REDIS_PASSWORD"),
            tls=env.get("REDIS_TLS", "false").lower() in ("1", "true", "yes"),
            tls_ca_certs=env.get("REDIS_TLS_CA") or None,
            sentinels=listed("REDIS_SENTINELS"),
            sentinel_groups=listed("REDIS_SENTINEL_GROUPS"),
            namespace=env.get("CACHE_NAMESPACE", "lms"),
            default_ttl=float(env.get("CACHE_DEFAULT_TTL", "3600")),
            session_ttl=float(env.get("SESSION_TTL", "86400")),
            replica_namespaces=listed("CACHE_REPLICA_NAMESPACES"),
            read_your_writes_window=float(env.get("CACHE_READ_YOUR_WRITES", "5")),
            replica_refresh_interval=float(env.get("CACHE_REPLICA_REFRESH", "30")),
        )
    except ValueError as error:
        raise ConfigError(f"bad number in the environment: {error}") from None
    config = config.with_options(**options)
    if config.topology == "cluster" and not config.seeds:
        raise ConfigError(
            "no seeds in the environment: set REDIS_NODE_1_HOST (and REDIS_NODE_1_PORT, default 6379), "
            "REDIS_NODE_2_HOST, ... (numbering from 0 or 1), or REDIS_SENTINELS and REDIS_SENTINEL_GROUPS"
        )
    return config.validate()


_NODE_VARIABLE = re.compile(r"REDIS_NODE_(\d+)_(HOST|PORT)")


def _env_seeds(env: Mapping[str, str]) -> tuple[str, ...]:
    """REDIS_NODE_<n>_HOST/PORT in the order of n, whatever the first number (0 or 1) and gaps.
    A port without its host is refused by name: it would otherwise be silently ignored."""
    hosts: dict[int, str] = {}
    ports: dict[int, str] = {}
    for name, value in env.items():
        match = _NODE_VARIABLE.fullmatch(name)
        if match:
            (hosts if match[2] == "HOST" else ports)[int(match[1])] = value.strip()
    for n in sorted(set(ports) - set(hosts)):
        raise ConfigError(f"REDIS_NODE_{n}_PORT is set without REDIS_NODE_{n}_HOST: set both, or neither")
    seeds = []
    for n in sorted(hosts):
        port = ports.get(n, "6379")
        if not hosts[n] or not port.isdigit():
            raise ConfigError(f"REDIS_NODE_{n}_HOST/PORT = {hosts[n]!r}/{port!r}: give a host name and a port number")
        seeds.append(f"{hosts[n]}:{port}")
    return tuple(seeds)
