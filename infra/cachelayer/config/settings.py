"""Typed, validated stack settings. Pure Python: no Pulumi import.

Every stack key lives under the project namespace (`cachelayer:<key>` in Pulumi.<stack>.yaml).
The objects below are named after those keys and their fields after the Redis directive they
set (`maxmemory_policy` sets `maxmemory-policy`). Defaults are the platform's baseline, so an
empty stack file gives six nodes on 7000-7005 with the seed's memory and persistence settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cachelayer.cdn.settings import CdnSettings, load_cdn_settings
from cachelayer.config.backup import BackupSettings, load_backup_settings
from cachelayer.config.checks import (
    DOCKER_IMAGE,
    DOCKER_NAME,
    DOCKER_TAG,
    INT_RANGES,
    MAXMEMORY_RANGE,
    MB,
    MIN_BULK_LIMIT,
    SAVE_CHANGES,
    SAVE_SECONDS,
    IntRange,
    password_problem,
)
from cachelayer.config.hosts import HostsSettings, load_hosts_settings
from cachelayer.config.load_balancer import (
    LoadBalancerSettings,
    load_balancer_on,
    load_load_balancer_settings,
    validate_load_balancer,
)
from cachelayer.errors import SettingsError
from cachelayer.fields import from_mapping, parse_memory, unknown_keys_error

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
PASSWORD_KEYS = ("app_password", "admin_password", "replication_password", "sentinel_password", "monitor_password")
# A rotation's phase 1 (docs/security.md, "Rotating a password"): `<key>_previous` holds the
# password being retired, which every process keeps accepting beside `<key>` until it is removed.
PREVIOUS_SUFFIX = "_previous"
PREVIOUS_PASSWORD_KEYS = tuple(f"{key}{PREVIOUS_SUFFIX}" for key in PASSWORD_KEYS)
SECRET_KEYS = (*PASSWORD_KEYS, *PREVIOUS_PASSWORD_KEYS, "ssh_private_key", "cloudflare_api_token")

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
    # Data safety: docs/settings.md gives each default's reason and trade-off.
    min_replicas_to_write: int = 0
    min_replicas_max_lag: int = 10
    repl_backlog_size: str = "64mb"
    repl_diskless_sync_delay: int = 0
    proto_max_bulk_len: str | None = None  # None: maxmemory / 64, between 1mb and 512mb
    client_query_buffer_limit: str | None = None  # None: twice proto_max_bulk_len
    maxmemory_clients: str = "5%"  # a share of maxmemory, or a size; 0 turns client eviction off
    sanitize_dump_payload: Literal["yes", "no", "clients"] = "clients"
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
    def proto_max_bulk_len_bytes(self) -> int:
        if self.proto_max_bulk_len is not None:
            return parse_memory("redis.proto_max_bulk_len", self.proto_max_bulk_len)
        # One argument is buffered several times over (query buffer, object, AOF and replica
        # buffers): 1/64 of maxmemory keeps even a 6x peak far from evicting the shard.
        return min(max(self.maxmemory_bytes // 64, MIN_BULK_LIMIT), 512 * MB)

    @property
    def client_query_buffer_limit_bytes(self) -> int:
        if self.client_query_buffer_limit is not None:
            return parse_memory("redis.client_query_buffer_limit", self.client_query_buffer_limit)
        return max(2 * self.proto_max_bulk_len_bytes, MIN_BULK_LIMIT)

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
    monitoring: MonitoringSettings = field(default_factory=lambda: MonitoringSettings())
    backup: BackupSettings = field(default_factory=BackupSettings)
    load_balancer: LoadBalancerSettings = field(default_factory=LoadBalancerSettings)

    @property
    def load_balancer_enabled(self) -> bool:
        """`load_balancer.enabled`, or on by default for the sentinel topology (docs/load-balancer.md)."""
        return load_balancer_on(self.load_balancer, self.redis.topology)

    @property
    def image(self) -> str:
        return f"redis:{self.redis.version}"

    @property
    def monitoring_enabled(self) -> bool:
        """`monitoring.enabled`, or on by default on the hosts target (prod) only."""
        if self.monitoring.enabled is None:
            return self.redis.target == "hosts"
        return self.monitoring.enabled


SETTINGS_KEYS = ("redis", "sentinel", "docker", "hosts", "cdn", "monitoring", "backup", "load_balancer")


def load_settings(config: Mapping[str, Any], stack: str) -> Settings:
    """Settings from a stack's config (keys without the project prefix), or a SettingsError.

    Secret keys may be present (their plain value, to check length) or absent.
    """
    known = (*SETTINGS_KEYS, *SECRET_KEYS)
    for key in config:
        if key not in known:
            raise unknown_keys_error("", key, known)
    validate_passwords(config)

    redis = from_mapping(RedisSettings, config.get("redis"), "redis")
    sentinel = from_mapping(SentinelSettings, config.get("sentinel"), "sentinel")
    docker = from_mapping(DockerSettings, config.get("docker"), "docker")
    validate_redis(redis)
    validate_sentinel(redis, sentinel)
    validate_docker(redis, docker)
    ports = claimed_ports(redis, sentinel)

    hosts = None
    if redis.target == "hosts":
        hosts = load_hosts_settings(config.get("hosts"), redis)
        validate_ssh_ports(hosts, ports)
    elif config.get("hosts") is not None:
        raise SettingsError("hosts", "is set but redis.target is 'docker'", "set redis.target: hosts, or remove hosts")
    # A stack manages the Cloudflare zone when it says `cdn`: one region's stack does, the others
    # (and a staging copy of prod) do not (docs/cdn.md).
    cdn = load_cdn_settings(config.get("cdn"), required=False)
    monitoring = from_mapping(MonitoringSettings, config.get("monitoring"), "monitoring")
    validate_monitoring(redis, sentinel, monitoring, ports)
    load_balancer = load_load_balancer_settings(config.get("load_balancer"))
    taken = {port: what for port, (_, what) in ports.items()}
    taken.update((port, "Redis exporter") for port in exporter_ports(redis, sentinel, monitoring))
    validate_load_balancer(load_balancer, redis.topology, redis.masters, taken)
    return Settings(
        stack=stack, redis=redis, sentinel=sentinel, docker=docker, hosts=hosts, cdn=cdn, monitoring=monitoring,
        backup=load_backup_settings(config.get("backup")), load_balancer=load_balancer,
    )


def validate_passwords(config: Mapping[str, Any]) -> None:
    """Each given password, and each rotation's retired password (`<key>_previous`)."""
    for key in PASSWORD_KEYS:
        if config.get(key) is not None:
            validate_password(key, config[key])
        previous_key = f"{key}{PREVIOUS_SUFFIX}"
        previous = config.get(previous_key)
        if previous is None:
            continue
        remove = f"`pulumi config rm cachelayer:{previous_key}`"
        if config.get(key) is None:
            # A generated password is not known to the operator before `pulumi up`, and the stack
            # would keep generating the same one: a rotation names its new password.
            raise SettingsError(
                previous_key,
                f"is set but {key} is not (a rotation retires the old password in favour of a given new one)",
                f"set the new password with `pulumi config set --secret cachelayer:{key}`, or remove it: {remove}",
            )
        # The retired password was deployed, so it passed these checks once; a typo must not load.
        validate_password(previous_key, previous, f"set the password being retired, or remove it: {remove}")
        if previous == config[key]:
            raise SettingsError(
                previous_key,
                f"is the same as {key}: nothing to rotate",
                f"set {key} to the new password (`pulumi config set --secret cachelayer:{key}`), or remove "
                f"{previous_key}: {remove}",
            )


def validate_password(key: str, value: Any, fix: str | None = None) -> None:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD_LENGTH:
        raise SettingsError(
            key,
            f"the password is shorter than {MIN_PASSWORD_LENGTH} characters",
            fix or f"set a longer one with `pulumi config set --secret {key}`, or remove it to have one generated",
        )
    problem = password_problem(value)
    if problem:
        raise SettingsError(
            key,
            f"the password cannot be written into redis.conf and sentinel.conf: {problem}",
            fix or f"use printable ASCII without spaces, quotes (\" ') or backslashes: `pulumi config set --secret "
            f"{key}`, or remove it to have one generated",
        )


def validate_deployment(settings: Settings, present: Collection[str]) -> None:
    """What the Pulumi program needs beyond valid settings, checked before any resource exists:
    the secrets it cannot deploy without (`present`: the secret keys that are set), and TLS
    only where certificates are delivered. (The local sandbox brings its own certificates.)"""
    if settings.redis.target == "docker" and settings.redis.tls:
        # components/redis_docker.py uploads no certificate: the nodes could not start.
        raise SettingsError(
            "redis.tls",
            "the docker target delivers no TLS certificates, so the nodes could not start",
            "set tls: false on the docker target (TLS runs on the hosts target)",
            False,
        )
    needed = []
    if settings.redis.target == "hosts":
        needed.append(("ssh_private_key", " < <private key file>"))
        if settings.cdn is not None:
            needed.append(("cloudflare_api_token", ""))
    for key, stdin in needed:
        if key not in present:
            raise SettingsError(
                key,
                "is missing: the hosts target cannot deploy without it",
                f"pulumi config set --secret cachelayer:{key} --stack {settings.stack}{stdin}",
            )


def check_range(key: str, value: int, bound: IntRange | None = None) -> None:
    bound = bound or INT_RANGES[key]
    if not bound.low <= value <= bound.high:
        suggested = min(max(value, bound.low), bound.high)
        raise SettingsError(
            key,
            f"{value} is outside {bound.low}..{bound.high} ({bound.source})",
            f"use a value between {bound.low} and {bound.high}, e.g. {suggested}",
            suggested,
        )


def fitting_replicas(node_count: int, cluster: bool, minimum: int) -> int | None:
    """A replicas_per_master (>= minimum, 1 preferred) that splits node_count into whole groups."""
    for replicas in sorted(range(minimum, node_count), key=lambda r: (r != 1, r)):
        group = replicas + 1
        if node_count % group == 0 and (not cluster or node_count // group >= 3):
            return replicas
    return None


def _replicas_error(redis: RedisSettings, problem: str, minimum: int) -> SettingsError:
    replicas = fitting_replicas(redis.node_count, redis.is_cluster, minimum)
    if replicas is None:
        fix = f"use at least {minimum} and change redis.node_count to a multiple of replicas_per_master + 1"
    else:
        fix = f"use {replicas} ({redis.node_count} nodes then form whole groups of a master and its replicas)"
    return SettingsError("redis.replicas_per_master", problem, fix, replicas)


def validate_redis(redis: RedisSettings) -> None:
    group = redis.replicas_per_master + 1
    if redis.replicas_per_master < 0:
        raise _replicas_error(redis, "cannot be negative", 0)
    minimum = 3 * group if redis.is_cluster else group
    if redis.node_count < 1 or redis.node_count % group:
        suggested = max(minimum, -(-redis.node_count // group) * group)
        raise SettingsError(
            "redis.node_count",
            f"{redis.node_count} nodes cannot be split into groups of one master and "
            f"{redis.replicas_per_master} replica(s)",
            f"use a multiple of {group} of at least {minimum} (e.g. {suggested})",
            suggested,
        )
    if redis.is_cluster and redis.masters < 3:
        raise SettingsError(
            "redis.node_count",
            f"a Redis Cluster needs at least 3 masters, {redis.node_count} nodes give {redis.masters}",
            f"use at least {minimum} nodes",
            minimum,
        )
    if redis.topology == "sentinel" and redis.cluster_enabled:
        raise SettingsError(
            "redis.cluster_enabled",
            "sentinel topology cannot run on cluster-mode nodes: a cluster node refuses REPLICAOF "
            "('ERR REPLICAOF not allowed in cluster mode'), so Sentinel could never fail it over",
            "use topology: cluster (native failover) or set cluster_enabled: false",
            False,
        )
    if redis.topology == "cluster" and redis.cluster_enabled is False:
        raise SettingsError(
            "redis.cluster_enabled", "cluster topology needs cluster-mode nodes", "remove cluster_enabled or set it true", True
        )
    if not DOCKER_TAG.match(redis.version):
        raise SettingsError(
            "redis.version",
            f"'{redis.version}' is not a Docker image tag (letters, digits, _ . -, at most 128)",
            "write a published redis tag, e.g. 7.2.5",
            "7.2.5",
        )
    validate_memory(redis)
    if redis.maxmemory_policy not in EVICTION_POLICIES:
        raise SettingsError(
            "redis.maxmemory_policy",
            f"'{redis.maxmemory_policy}' is not an eviction policy Redis knows",
            f"use one of {', '.join(EVICTION_POLICIES)}",
            "allkeys-lru",
        )
    for seconds, changes in redis.save:
        if not (SAVE_SECONDS.low <= seconds <= SAVE_SECONDS.high and SAVE_CHANGES.low <= changes <= SAVE_CHANGES.high):
            raise SettingsError(
                "redis.save",
                f"[{seconds}, {changes}] is not a save point",
                f"write [seconds, changes], both between 1 and {SAVE_SECONDS.high}",
                [[3600, 1], [300, 100], [60, 10000]],
            )
    for key in INT_RANGES:
        section, _, name = key.partition(".")
        if section == "redis":
            check_range(key, getattr(redis, name))
    if redis.min_replicas_to_write > redis.replicas_per_master:
        raise SettingsError(
            "redis.min_replicas_to_write",
            f"a master has {redis.replicas_per_master} replica(s), so asking for {redis.min_replicas_to_write} "
            "would refuse every write",
            f"use 0 (writes never wait for replicas) up to {redis.replicas_per_master}",
            0,
        )
    if redis.min_replicas_to_write and not redis.min_replicas_max_lag:
        raise SettingsError(
            "redis.min_replicas_max_lag",
            "is 0, which turns min_replicas_to_write off",
            "use the seconds a replica may lag, e.g. 10",
            10,
        )
    for command in redis.disabled_commands:
        if not command.replace("|", "").replace("-", "").isalpha():
            raise SettingsError("redis.disabled_commands", f"'{command}' is not a command name", "list plain command names like FLUSHALL")


_PERCENT = re.compile(r"^(\d+)%$")


def validate_memory(redis: RedisSettings) -> None:
    """Memory sizes: parseable, in the range redis-server accepts, and sized against maxmemory."""
    for name in ("maxmemory", "repl_backlog_size", "proto_max_bulk_len", "client_query_buffer_limit", "maxmemory_clients"):
        text = getattr(redis, name)
        example = {"maxmemory": "2gb", "maxmemory_clients": "5%"}.get(name, "64mb")
        if text is not None and len(text.split()) != 1:
            raise SettingsError(
                f"redis.{name}",
                f"'{text}' has a space, and redis.conf would read it as two arguments",
                f"write the number and the unit together, e.g. {example}",
                example,
            )
    maxmemory = redis.maxmemory_bytes
    low, high = MAXMEMORY_RANGE
    if not low <= maxmemory <= high:
        # 0 means "no limit" to Redis: the node would grow until the kernel kills it.
        raise SettingsError("redis.maxmemory", f"'{redis.maxmemory}' is outside 1mb..1024gb", "use e.g. 2gb", "2gb")
    backlog = parse_memory("redis.repl_backlog_size", redis.repl_backlog_size)
    if not MB <= backlog <= maxmemory:
        raise SettingsError(
            "redis.repl_backlog_size",
            f"'{redis.repl_backlog_size}' is outside 1mb..maxmemory ({redis.maxmemory})",
            "use e.g. 64mb (or about 3% of maxmemory on small nodes)",
            "1mb" if maxmemory < 64 * MB else "64mb",
        )
    bulk = redis.proto_max_bulk_len_bytes
    # config.c refuses below 1mb; above 1/8 of maxmemory one request can evict the shard.
    bulk_high = max(MIN_BULK_LIMIT, maxmemory // 8)
    if not MIN_BULK_LIMIT <= bulk <= bulk_high:
        raise SettingsError(
            "redis.proto_max_bulk_len",
            f"'{redis.proto_max_bulk_len}' is outside 1mb..{bulk_high // 1024}kb (1/8 of maxmemory)",
            "remove it (maxmemory / 64 is used) or choose a size in that range",
            "1mb",
        )
    query = redis.client_query_buffer_limit_bytes
    query_high = max(2 * bulk, maxmemory // 4)
    if not max(MIN_BULK_LIMIT, bulk) <= query <= query_high:
        raise SettingsError(
            "redis.client_query_buffer_limit",
            f"'{redis.client_query_buffer_limit}' must hold one proto_max_bulk_len argument ({bulk} bytes, at least 1mb) "
            f"and stay at or below {query_high} bytes",
            "remove it (twice proto_max_bulk_len is used)",
            f"{max(2 * bulk, MIN_BULK_LIMIT) // 1024}kb",
        )
    percent = _PERCENT.match(redis.maxmemory_clients)
    if percent:
        ok = int(percent.group(1)) <= 100  # config.c: 0%..100% of maxmemory
    else:
        ok = parse_memory("redis.maxmemory_clients", redis.maxmemory_clients) <= maxmemory
    if not ok:
        raise SettingsError(
            "redis.maxmemory_clients",
            f"'{redis.maxmemory_clients}' is more than maxmemory",
            "use a share of maxmemory such as 5%, or a size at most maxmemory",
            "5%",
        )


def validate_sentinel(redis: RedisSettings, sentinel: SentinelSettings) -> None:
    if redis.topology != "sentinel":
        return
    count = len(sentinel.ports)
    if count < 1:
        raise SettingsError(
            "sentinel.ports", "no sentinel is listed", "list three ports, e.g. [26379, 26380, 26381]", [26379, 26380, 26381]
        )
    if not 1 <= sentinel.quorum <= count:
        raise SettingsError(
            "sentinel.quorum",
            f"quorum {sentinel.quorum} cannot be reached by {count} sentinel(s)",
            f"use a quorum between 1 and {count} (a majority, {count // 2 + 1}, is usual)",
            count // 2 + 1,
        )
    for key in INT_RANGES:
        section, _, name = key.partition(".")
        if section == "sentinel":
            check_range(key, getattr(sentinel, name))
    if redis.replicas_per_master < 1:
        raise _replicas_error(redis, "sentinel has nothing to fail over to without replicas", 1)


def validate_docker(redis: RedisSettings, docker: DockerSettings) -> None:
    if not DOCKER_NAME.match(docker.network_name):
        raise SettingsError(
            "docker.network_name",
            f"'{docker.network_name}' is not a name Docker accepts for a network and its volumes",
            "use letters, digits, _ . - (starting with a letter or digit, 2 characters or more), e.g. cachelayer",
            "cachelayer",
        )
    try:
        network = ipaddress.ip_network(docker.subnet)
    except ValueError as error:
        raise SettingsError(
            "docker.subnet", f"'{docker.subnet}' is not a network ({error})", "write CIDR, e.g. 172.30.70.0/24", "172.30.70.0/24"
        ) from None
    containers = redis.node_count + 3  # nodes + sentinels
    # Docker's IPAM gives the network's first address (.1) to the gateway; the last is broadcast.
    highest = network.num_addresses - 2 - containers
    if highest < 2:
        raise SettingsError(
            "docker.subnet",
            f"{docker.subnet} is too small for {containers} containers",
            "use a /24 such as 172.30.70.0/24",
            "172.30.70.0/24",
        )
    if not 2 <= docker.first_host_address <= highest:
        raise SettingsError(
            "docker.first_host_address",
            f"{docker.first_host_address} puts containers on the gateway or past the end of {docker.subnet}",
            f"use a number between 2 and {highest}, e.g. {min(10, highest)}",
            min(10, highest),
        )
    try:
        ipaddress.ip_address(docker.publish_address)
    except ValueError:
        raise SettingsError(
            "docker.publish_address", f"'{docker.publish_address}' is not an IP address", "use 127.0.0.1", "127.0.0.1"
        ) from None


MIN_PORT = 1024  # below it a port needs root: the nodes run as the redis user


def claimed_ports(redis: RedisSettings, sentinel: SentinelSettings) -> dict[int, tuple[str, str]]:
    """Every port the deployment listens on -> (stack key, what), or a SettingsError."""
    owners: dict[int, tuple[str, str]] = {}
    count = redis.node_count
    offset = redis.bus_port_offset if redis.is_cluster else 0
    base_high = 65535 - (count - 1) - max(offset, 0)
    base_low = MIN_PORT - min(offset, 0)

    def claim(port: int, key: str, what: str) -> None:
        if not MIN_PORT <= port <= 65535:
            raise _port_range_error(redis, sentinel, key, what, port, base_low, base_high, owners)
        if port in owners:
            raise SettingsError(
                key,
                f"{what} port {port} is also the {owners[port][1]} port",
                _collision_fix(key, redis, sentinel, owners),
                _collision_suggestion(key, redis, sentinel, owners),
            )
        owners[port] = (key, what)

    for index in range(count):
        claim(redis.base_port + index, "redis.base_port", f"client (node {index})")
    if redis.is_cluster:
        for index in range(count):
            claim(redis.base_port + index + offset, "redis.bus_port_offset", f"cluster bus (node {index})")
    if redis.topology == "sentinel":
        for port in sentinel.ports:
            claim(port, "sentinel.ports", "sentinel")
    return owners


def _free_run(owners: Mapping[int, object], length: int, start: int = 26379) -> list[int]:
    """`length` consecutive ports from `start` (or later) that nobody holds."""
    port = start
    while any(p in owners for p in range(port, port + length)):
        port += 1
    return list(range(port, port + length))


def _port_range_error(
    redis: RedisSettings,
    sentinel: SentinelSettings,
    key: str,
    what: str,
    port: int,
    base_low: int,
    base_high: int,
    owners: Mapping[int, object],
) -> SettingsError:
    problem = f"{what} port {port} is outside {MIN_PORT}-65535 (lower ports need root)"
    if key == "sentinel.ports":
        free = _free_run(owners, len(sentinel.ports))
        return SettingsError(key, problem, f"choose ports between {MIN_PORT} and 65535, e.g. {free}", free)
    if key == "redis.bus_port_offset":
        highest = 65535 - redis.base_port - (redis.node_count - 1)
        if highest >= redis.node_count:
            suggested = min(10000, highest)
            return SettingsError(
                key,
                problem,
                f"use a bus_port_offset between {redis.node_count} and {highest}, e.g. {suggested}, "
                "so every bus port stays at or below 65535",
                suggested,
            )
    suggested = min(max(redis.base_port, base_low), base_high)
    return SettingsError(
        "redis.base_port",
        problem,
        f"use a base_port between {base_low} and {base_high}, e.g. {suggested}, so every client and bus port "
        f"is between {MIN_PORT} and 65535",
        suggested,
    )


def _collision_fix(key: str, redis: RedisSettings, sentinel: SentinelSettings, owners: Mapping[int, object]) -> str:
    if key == "sentinel.ports":
        return f"choose sentinel ports that no node uses, e.g. {_free_run(owners, len(sentinel.ports))}"
    return f"use a bus_port_offset of at least {redis.node_count} (Redis's convention is 10000)"


def _collision_suggestion(key: str, redis: RedisSettings, sentinel: SentinelSettings, owners: Mapping[int, object]) -> Any:
    return _free_run(owners, len(sentinel.ports)) if key == "sentinel.ports" else 10000


def validate_ssh_ports(hosts: HostsSettings, owners: Mapping[int, tuple[str, str]]) -> None:
    """No Redis port may be a machine's SSH port: the node could not bind it, or SSH would break."""
    for index, machine in enumerate(hosts.machines):
        if machine.ssh_port in owners:
            key, what = owners[machine.ssh_port]
            raise SettingsError(
                key,
                f"{what} port {machine.ssh_port} is the SSH port of machine {machine.name}",
                f"move the Redis ports off {machine.ssh_port} (hosts.machines[{index}].ssh_port)",
            )


# ------------------------------------------------------------------------------ monitoring
# `cachelayer:monitoring`: one Redis exporter per node (and per sentinel) and the alert rules
# generated from these thresholds (infra/cachelayer/render/monitoring.py, docs/monitoring.md).

# The upstream image, pinned to the release Debian 12 ships as prometheus-redis-exporter, so the
# dev and prod stacks export the same metrics and need the same ACL rights.
EXPORTER_IMAGE = "oliver006/redis_exporter:v1.45.0"


@dataclass(frozen=True)
class MonitoringSettings:
    """`cachelayer:monitoring`: exporters, scrape access and alert thresholds."""

    enabled: bool | None = None  # None: on for the hosts target (prod), off on docker (dev)
    # Node i's exporter listens on exporter_base_port + i, sentinel j's after the nodes'.
    exporter_base_port: int = 9121
    exporter_image: str = EXPORTER_IMAGE
    # Networks (CIDR) of the platform's Prometheus: the only sources the firewall lets reach the
    # exporter ports on the hosts (besides loopback).
    scrape_networks: tuple[str, ...] = ()
    scrape_interval_seconds: int = 15
    # Alert thresholds (docs/monitoring.md has the table).
    for_seconds: int = 60  # how long most conditions must hold before their alert fires
    rate_window_seconds: int = 300  # the window of rate()/increase(); at least 2 scrape intervals are used
    memory_percent: int = 90  # used memory above this share of maxmemory
    replication_lag_seconds: int = 30  # a replica's last ack older than this
    evictions_per_second: int = 0  # evictions above this rate (0: any eviction)
    save_max_age_seconds: int = 90_000  # unsaved changes older than this (a day + 1 h: the 02:00 saves)
    backup_max_age_seconds: int = 90_000  # the newest complete backup in the destination older than this (03:07 UTC + 1 h)
    failover_window_seconds: int = 600  # a role change stays reported this long
    # Failed authentications (WRONGPASS) per process above this rate: a brute force or a client with
    # a wrong password (0: any failure).
    auth_failures_per_minute: int = 10


def exporter_ports(redis: RedisSettings, sentinel: SentinelSettings, monitoring: MonitoringSettings) -> tuple[int, ...]:
    """One exporter port per node, then one per sentinel (sentinel topology)."""
    count = redis.node_count + (len(sentinel.ports) if redis.topology == "sentinel" else 0)
    return tuple(monitoring.exporter_base_port + index for index in range(count))


def validate_monitoring(
    redis: RedisSettings,
    sentinel: SentinelSettings,
    monitoring: MonitoringSettings,
    owners: Mapping[int, tuple[str, str]],
) -> None:
    for key in INT_RANGES:
        section, _, name = key.partition(".")
        if section == "monitoring":
            check_range(key, getattr(monitoring, name))
    ports = exporter_ports(redis, sentinel, monitoring)
    clash = [port for port in ports if port in owners]
    if clash or ports[-1] > 65535 or ports[0] < MIN_PORT:
        free = monitoring.exporter_base_port
        while any(free + i in owners for i in range(len(ports))) or free + len(ports) - 1 > 65535:
            free = 9121 if free > 65535 else free + 1
        problem = (
            f"exporter port {clash[0]} is also the {owners[clash[0]][1]} port"
            if clash
            else f"the exporter ports {ports[0]}-{ports[-1]} are outside {MIN_PORT}-65535"
        )
        raise SettingsError(
            "monitoring.exporter_base_port",
            problem,
            f"use a base port whose {len(ports)} ports no Redis process uses, e.g. {free}",
            free,
        )
    if not DOCKER_IMAGE.match(monitoring.exporter_image):
        raise SettingsError(
            "monitoring.exporter_image",
            f"'{monitoring.exporter_image}' is not a pinned image reference (name:tag or name@sha256:...)",
            f"write e.g. {EXPORTER_IMAGE}",
            EXPORTER_IMAGE,
        )
    for index, network in enumerate(monitoring.scrape_networks):
        try:
            ipaddress.ip_network(network)
        except ValueError:
            raise SettingsError(
                f"monitoring.scrape_networks[{index}]",
                f"'{network}' is not a network",
                "write the Prometheus servers' network in CIDR, e.g. 10.40.0.0/24",
                [],
            ) from None
