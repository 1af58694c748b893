"""Typed, validated stack settings. Pure Python: no Pulumi import.

Every stack key lives under the project namespace (`cachelayer:<key>` in Pulumi.<stack>.yaml).
The objects below are named after those keys and their fields after the Redis directive they
set (`maxmemory_policy` sets `maxmemory-policy`). Defaults are the platform's baseline, so an
empty stack file gives six nodes on 7000-7005 with the seed's memory and persistence settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .cdn_settings import CdnSettings, load_cdn_settings
from .errors import SettingsError
from .fields import from_mapping, parse_memory, unknown_keys_error
from .hosts_settings import HostsSettings, load_hosts_settings

Topology = Literal["cluster", "sentinel"]
Target = Literal["docker", "hosts"]

EVICTION_POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
MIN_PASSWORD_LENGTH = 16
# Stack keys that hold secrets (set with `pulumi config set --secret`). Generated when absent.
PASSWORD_KEYS = ("app_password", "admin_password", "replication_password", "sentinel_password")
SECRET_KEYS = (*PASSWORD_KEYS, "ssh_private_key", "cloudflare_api_token")

# Extra commands to refuse the application user, after the allowlist of acl_policy.py (which
# already refuses FLUSHALL, CONFIG, KEYS, ...): empty unless an operator wants to take more away.
DEFAULT_DISABLED_COMMANDS: tuple[str, ...] = ()


@dataclass(frozen=True)
class RedisSettings:
    """`cachelayer:redis`: the six nodes and how they are configured."""

    topology: Topology = "cluster"
    target: Target = "docker"
    node_count: int = 6
    replicas_per_master: int = 1
    base_port: int = 7000
    bus_port_offset: int = 10000
    version: str = "7.2.5"
    # redis.conf directives
    cluster_enabled: bool | None = None  # follows the topology when not set
    cluster_node_timeout: int = 5000
    maxmemory: str = "2gb"
    maxmemory_policy: str = "allkeys-lru"
    save: tuple[tuple[int, int], ...] = ((3600, 1), (300, 100), (60, 10000))
    appendonly: bool = True
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    slowlog_log_slower_than: int = 10000
    slowlog_max_len: int = 128
    latency_monitor_threshold: int = 100
    tcp_keepalive: int = 300
    disabled_commands: tuple[str, ...] = DEFAULT_DISABLED_COMMANDS
    tls: bool = False
    # Lua scripting (EVAL, EVALSHA, SCRIPT LOAD/EXISTS) for the app user; see docs/security.md.
    app_scripting: bool = False
    busy_reply_threshold: int = 5000  # ms before a busy script makes the node answer BUSY

    @property
    def maxmemory_bytes(self) -> int:
        return parse_memory("redis.maxmemory", self.maxmemory)

    @property
    def masters(self) -> int:
        return self.node_count // (self.replicas_per_master + 1)

    @property
    def is_cluster(self) -> bool:
        return self.topology == "cluster"


@dataclass(frozen=True)
class SentinelSettings:
    """`cachelayer:sentinel`: the sentinels that watch the groups in sentinel topology."""

    ports: tuple[int, ...] = (26379, 26380, 26381)
    quorum: int = 2
    down_after_milliseconds: int = 5000
    failover_timeout: int = 60000
    parallel_syncs: int = 1


@dataclass(frozen=True)
class DockerSettings:
    """`cachelayer:docker`: the dev stack's containers."""

    network_name: str = "cachelayer"
    # Nodes announce their address on this network, so cluster redirects stay reachable.
    subnet: str = "172.30.70.0/24"
    first_host_address: int = 10
    publish_address: str = "127.0.0.1"


@dataclass(frozen=True)
class Settings:
    """Everything one stack asks for, checked as a whole."""

    stack: str
    redis: RedisSettings = field(default_factory=RedisSettings)
    sentinel: SentinelSettings = field(default_factory=SentinelSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    hosts: HostsSettings | None = None
    cdn: CdnSettings | None = None

    @property
    def image(self) -> str:
        return f"redis:{self.redis.version}"


SETTINGS_KEYS = ("redis", "sentinel", "docker", "hosts", "cdn")


def load_settings(config: Mapping[str, Any], stack: str) -> Settings:
    """Settings from a stack's config (keys without the project prefix), or a SettingsError.

    Secret keys may be present (their plain value, to check length) or absent.
    """
    known = (*SETTINGS_KEYS, *SECRET_KEYS)
    for key in config:
        if key not in known:
            raise unknown_keys_error("", key, known)
    for key in PASSWORD_KEYS:
        if config.get(key) is not None:
            validate_password(key, config[key])

    redis = from_mapping(RedisSettings, config.get("redis"), "redis")
    sentinel = from_mapping(SentinelSettings, config.get("sentinel"), "sentinel")
    docker = from_mapping(DockerSettings, config.get("docker"), "docker")
    validate_redis(redis)
    validate_sentinel(redis, sentinel)
    validate_docker(redis, docker)
    validate_ports(redis, sentinel)

    hosts = None
    if redis.target == "hosts":
        hosts = load_hosts_settings(config.get("hosts"), redis)
    elif config.get("hosts") is not None:
        raise SettingsError("hosts", "is set but redis.target is 'docker'", "set redis.target: hosts, or remove hosts")
    cdn = load_cdn_settings(config.get("cdn"), required=redis.target == "hosts")
    return Settings(stack=stack, redis=redis, sentinel=sentinel, docker=docker, hosts=hosts, cdn=cdn)


def validate_password(key: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD_LENGTH:
        raise SettingsError(
            key,
            f"the password is shorter than {MIN_PASSWORD_LENGTH} characters",
            f"set a longer one with `pulumi config set --secret {key}`, or remove it to have one generated",
        )


def validate_redis(redis: RedisSettings) -> None:
    group = redis.replicas_per_master + 1
    if redis.replicas_per_master < 0:
        raise SettingsError("redis.replicas_per_master", "cannot be negative", "use 1 (one replica per master)")
    if redis.node_count < 1 or redis.node_count % group:
        raise SettingsError(
            "redis.node_count",
            f"{redis.node_count} nodes cannot be split into groups of one master and "
            f"{redis.replicas_per_master} replica(s)",
            f"use a multiple of {group} (e.g. 6)",
        )
    if redis.is_cluster and redis.masters < 3:
        raise SettingsError(
            "redis.node_count",
            f"a Redis Cluster needs at least 3 masters, {redis.node_count} nodes give {redis.masters}",
            f"use at least {3 * group} nodes",
        )
    if redis.topology == "sentinel" and redis.cluster_enabled:
        raise SettingsError(
            "redis.cluster_enabled",
            "sentinel topology cannot run on cluster-mode nodes: a cluster node refuses REPLICAOF "
            "('ERR REPLICAOF not allowed in cluster mode'), so Sentinel could never fail it over",
            "use topology: cluster (native failover) or set cluster_enabled: false",
        )
    if redis.topology == "cluster" and redis.cluster_enabled is False:
        raise SettingsError(
            "redis.cluster_enabled", "cluster topology needs cluster-mode nodes", "remove cluster_enabled or set it true"
        )
    redis.maxmemory_bytes  # noqa: B018 - parsing is the check
    if len(redis.maxmemory.split()) != 1:
        raise SettingsError(
            "redis.maxmemory",
            f"'{redis.maxmemory}' has a space, and redis.conf would read it as two arguments",
            "write the number and the unit together, e.g. 2gb",
        )
    if redis.maxmemory_policy not in EVICTION_POLICIES:
        raise SettingsError(
            "redis.maxmemory_policy",
            f"'{redis.maxmemory_policy}' is not an eviction policy Redis knows",
            f"use one of {', '.join(EVICTION_POLICIES)}",
        )
    for seconds, changes in redis.save:
        if seconds < 1 or changes < 1:
            raise SettingsError("redis.save", f"[{seconds}, {changes}] is not a save point", "write [seconds, changes], both >= 1")
    for name in ("cluster_node_timeout", "slowlog_max_len", "tcp_keepalive"):
        if getattr(redis, name) < 1:
            raise SettingsError(f"redis.{name}", "must be a positive number", "use a value >= 1")
    if redis.slowlog_log_slower_than < -1 or redis.latency_monitor_threshold < 0:
        key = "slowlog_log_slower_than" if redis.slowlog_log_slower_than < -1 else "latency_monitor_threshold"
        raise SettingsError(f"redis.{key}", "is below the range Redis accepts", "use 0 or more microseconds/milliseconds")
    for command in redis.disabled_commands:
        if not command.replace("|", "").replace("-", "").isalpha():
            raise SettingsError("redis.disabled_commands", f"'{command}' is not a command name", "list plain command names like FLUSHALL")
    if redis.busy_reply_threshold < 1:
        raise SettingsError("redis.busy_reply_threshold", "must be a positive number of milliseconds", "use 5000 (Redis's default)")


def validate_sentinel(redis: RedisSettings, sentinel: SentinelSettings) -> None:
    if redis.topology != "sentinel":
        return
    count = len(sentinel.ports)
    if count < 1:
        raise SettingsError("sentinel.ports", "no sentinel is listed", "list three ports, e.g. [26379, 26380, 26381]")
    if not 1 <= sentinel.quorum <= count:
        raise SettingsError(
            "sentinel.quorum",
            f"quorum {sentinel.quorum} cannot be reached by {count} sentinel(s)",
            f"use a quorum between 1 and {count} (a majority, {count // 2 + 1}, is usual)",
        )
    if redis.replicas_per_master < 1:
        raise SettingsError("redis.replicas_per_master", "sentinel has nothing to fail over to without replicas", "use 1")


def validate_docker(redis: RedisSettings, docker: DockerSettings) -> None:
    try:
        network = ipaddress.ip_network(docker.subnet)
    except ValueError as error:
        raise SettingsError("docker.subnet", f"'{docker.subnet}' is not a network ({error})", "write CIDR, e.g. 172.30.70.0/24") from None
    needed = docker.first_host_address + redis.node_count + 3  # nodes + sentinels
    if network.num_addresses < needed + 1:
        raise SettingsError("docker.subnet", f"{docker.subnet} is too small for every container", "use a /24")
    try:
        ipaddress.ip_address(docker.publish_address)
    except ValueError:
        raise SettingsError("docker.publish_address", f"'{docker.publish_address}' is not an IP address", "use 127.0.0.1") from None


def validate_ports(redis: RedisSettings, sentinel: SentinelSettings) -> None:
    """Client, bus and sentinel ports must be valid TCP ports and never collide."""
    owners: dict[int, str] = {}

    def claim(port: int, key: str, what: str) -> None:
        if not 1 <= port <= 65535:
            raise SettingsError(key, f"{what} port {port} is outside 1-65535", "choose ports between 1024 and 65535")
        if port in owners:
            raise SettingsError(key, f"{what} port {port} is also the {owners[port]} port", "choose ports that do not overlap")
        owners[port] = what

    for index in range(redis.node_count):
        claim(redis.base_port + index, "redis.base_port", f"client (node {index})")
    if redis.is_cluster:
        for index in range(redis.node_count):
            claim(redis.base_port + index + redis.bus_port_offset, "redis.bus_port_offset", f"cluster bus (node {index})")
    if redis.topology == "sentinel":
        for port in sentinel.ports:
            claim(port, "sentinel.ports", "sentinel")
