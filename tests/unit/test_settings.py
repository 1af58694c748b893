"""Stack settings: the defaults are the seed values; every bad input is refused with a
SettingsError that names the stack key and says how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from cachelayer.config.settings import (
    DEFAULT_DISABLED_COMMANDS,
    DockerSettings,
    RedisSettings,
    SentinelSettings,
    Settings,
    load_settings,
)
from cachelayer.errors import SettingsError
from cachelayer.fields import parse_memory
from support.machines import machine

CDN = {"zone_id": "0123456789abcdef0123456789abcdef", "zone_name": "learn.example.com"}


def machines(count: int) -> list[dict[str, Any]]:
    return [machine(f"cache-{i + 1}", f"192.0.2.{11 + i}") for i in range(count)]


def hosts_config(count: int = 6, **redis: Any) -> dict[str, Any]:
    """A minimal valid `hosts` stack: target hosts needs machines and a CDN zone."""
    return {"redis": {"target": "hosts", **redis}, "hosts": {"machines": machines(count)}, "cdn": CDN}


# ---------------------------------------------------------------------------------------------
# Defaults


def test_empty_stack_gets_the_seed_values() -> None:
    settings = load_settings({}, "dev")
    redis = settings.redis
    assert settings.stack == "dev"
    assert (redis.node_count, redis.replicas_per_master, redis.masters) == (6, 1, 3)
    assert (redis.base_port, redis.bus_port_offset) == (7000, 10000)
    assert (redis.topology, redis.target, redis.is_cluster) == ("cluster", "docker", True)
    assert redis.cluster_enabled is None  # follows the topology
    assert redis.cluster_node_timeout == 5000
    assert redis.maxmemory == "2gb"
    assert redis.maxmemory_bytes == 2_147_483_648
    assert redis.maxmemory_policy == "allkeys-lru"
    assert redis.save == ((3600, 1), (300, 100), (60, 10000))
    assert (redis.appendonly, redis.appendfsync) == (True, "everysec")
    assert (redis.slowlog_log_slower_than, redis.slowlog_max_len) == (10000, 128)
    assert redis.latency_monitor_threshold == 100
    assert redis.tcp_keepalive == 300
    assert redis.tls is False
    assert redis.version == "7.2.5"
    assert settings.image == "redis:7.2.5"
    assert settings.sentinel.ports == (26379, 26380, 26381)
    assert settings.sentinel.quorum == 2
    assert settings.docker.subnet == "172.30.70.0/24"
    assert settings.hosts is None
    assert settings.cdn is None


def test_disabled_commands_are_extra_denials_and_empty_by_default() -> None:
    # The allowlist (acl_policy.py) refuses the dangerous commands; this key only adds to it.
    assert load_settings({}, "dev").redis.disabled_commands == DEFAULT_DISABLED_COMMANDS == ()
    custom = load_settings({"redis": {"disabled_commands": ["SCAN"]}}, "dev")
    assert custom.redis.disabled_commands == ("SCAN",)


def test_scripting_is_off_and_the_busy_threshold_is_redis_default() -> None:
    redis = load_settings({}, "dev").redis
    assert redis.app_scripting is False
    assert redis.busy_reply_threshold == 5000
    assert load_settings({"redis": {"app_scripting": True}}, "dev").redis.app_scripting is True


@pytest.mark.parametrize("value", [0, -5])
def test_busy_reply_threshold_must_be_positive(value: int) -> None:
    with pytest.raises(SettingsError, match="busy_reply_threshold"):
        load_settings({"redis": {"busy_reply_threshold": value}}, "dev")


def test_the_dataclass_defaults_are_what_an_empty_stack_gets() -> None:
    settings = load_settings({}, "dev")
    assert settings.redis == RedisSettings()
    assert settings.sentinel == SentinelSettings()
    assert settings.docker == DockerSettings()
    assert settings == Settings(stack="dev")


def test_image_follows_the_version() -> None:
    assert load_settings({"redis": {"version": "7.0.15"}}, "dev").image == "redis:7.0.15"


# ---------------------------------------------------------------------------------------------
# Refusals: one case per bad input. (config, key the message must name, text the fix must hold)

BAD_INPUTS: list[Any] = [
    pytest.param(
        {"redis": {"node_count": 7}}, "redis.node_count", "multiple of 2", id="node-count-not-multiple-of-group"
    ),
    pytest.param(
        {"redis": {"node_count": 6, "replicas_per_master": 2}},
        "redis.node_count",
        "at least 9 nodes",
        id="cluster-2-masters",
    ),
    pytest.param({"redis": {"node_count": 4}}, "redis.node_count", "at least 6 nodes", id="cluster-4-nodes"),
    pytest.param(
        {"redis": {"bus_port_offset": 3}}, "redis.bus_port_offset", "at least 6", id="bus-overlaps-client"
    ),
    pytest.param(
        {"redis": {"topology": "sentinel"}, "sentinel": {"ports": [7002, 26380, 26381]}},
        "sentinel.ports",
        "no node uses",
        id="sentinel-overlaps-client",
    ),
    pytest.param(
        {"redis": {"topology": "sentinel"}, "sentinel": {"ports": [26379, 26379, 26380]}},
        "sentinel.ports",
        "no node uses",
        id="sentinel-duplicate",
    ),
    pytest.param({"redis": {"base_port": 65533}}, "redis.base_port", "between 1024 and 65535", id="client-above-65535"),
    pytest.param(
        {"redis": {"base_port": 60000}}, "redis.bus_port_offset", "between 6 and 5530", id="bus-above-65535"
    ),
    pytest.param(
        {"redis": {"topology": "sentinel"}, "sentinel": {"ports": [0, 26380, 26381]}},
        "sentinel.ports",
        "between 1024 and 65535",
        id="sentinel-port-0",
    ),
    pytest.param(
        {"redis": {"topology": "sentinel"}, "sentinel": {"quorum": 4}},
        "sentinel.quorum",
        "between 1 and 3",
        id="quorum-4-of-3",
    ),
    pytest.param(
        {"redis": {"topology": "sentinel"}, "sentinel": {"quorum": 0}},
        "sentinel.quorum",
        "between 1 and 3",
        id="quorum-0",
    ),
    pytest.param(
        {"redis": {"topology": "sentinel", "cluster_enabled": True}},
        "redis.cluster_enabled",
        "topology: cluster",
        id="sentinel-on-cluster-nodes",
    ),
    pytest.param(
        {"redis": {"topology": "cluster", "cluster_enabled": False}},
        "redis.cluster_enabled",
        "set it true",
        id="cluster-without-cluster-mode",
    ),
    pytest.param({"redis": {"maxmemory": "2 gigs"}}, "redis.maxmemory", "2gb", id="memory-2-gigs"),
    pytest.param({"redis": {"maxmemory": "lots"}}, "redis.maxmemory", "2gb", id="memory-lots"),
    pytest.param({"redis": {"maxmemory": "-5mb"}}, "redis.maxmemory", "2gb", id="memory-negative"),
    # Redis reads `maxmemory 2 gb` as two arguments and refuses to start.
    pytest.param({"redis": {"maxmemory": "2 gb"}}, "redis.maxmemory", "2gb", id="memory-with-a-space"),
    pytest.param({"redis": {"maxmemory_policy": "lru"}}, "redis.maxmemory_policy", "allkeys-lru", id="policy-lru"),
    pytest.param(
        {"redis": {"maxmemory_policy": "allkeys_lru"}}, "redis.maxmemory_policy", "allkeys-lru", id="policy-underscore"
    ),
    pytest.param(
        {"app_password": "tiny-pw"}, "app_password", "pulumi config set --secret app_password", id="password-short"
    ),
    pytest.param(
        {"admin_password": "fifteen-chars!!"},
        "admin_password",
        "pulumi config set --secret admin_password",
        id="password-15-chars",
    ),
    pytest.param({"redis_cfg": {}}, "redis_cfg", "known keys:", id="unknown-top-level"),
    pytest.param(
        {"redis": {"maxmemory_polcy": "allkeys-lru"}},
        "redis.maxmemory_polcy",
        "did you mean 'maxmemory_policy'",
        id="unknown-redis-key",
    ),
    pytest.param({"sentinel": {"qorum": 2}}, "sentinel.qorum", "did you mean 'quorum'", id="unknown-sentinel-key"),
    pytest.param(
        {"docker": {"subnett": "10.0.0.0/24"}}, "docker.subnett", "did you mean 'subnet'", id="unknown-docker-key"
    ),
    pytest.param(
        {
            "redis": {"target": "hosts"},
            "hosts": {"machines": [{"name": "cache-1", "adress": "192.0.2.11"}]},
            "cdn": CDN,
        },
        "hosts.machines[0].adress",
        "did you mean 'address'",
        id="unknown-machine-key",
    ),
    pytest.param({"redis": {"node_count": "six"}}, "redis.node_count", "whole number", id="node-count-text"),
    pytest.param({"redis": {"tls": "yes"}}, "redis.tls", "true or false", id="tls-text"),
    pytest.param({"redis": {"topology": "ring"}}, "redis.topology", "'sentinel'", id="topology-unknown"),
    pytest.param({"hosts": {"machines": machines(6)}}, "hosts", "redis.target: hosts", id="hosts-with-docker-target"),
    pytest.param(
        {"redis": {"target": "hosts"}, "cdn": CDN}, "hosts.machines", "name and address", id="hosts-target-no-hosts"
    ),
    pytest.param(
        {"redis": {"target": "hosts"}, "hosts": {"machines": []}, "cdn": CDN},
        "hosts.machines",
        "name and address",
        id="hosts-target-empty-machines",
    ),
]


@pytest.mark.parametrize(("config", "key", "fix"), BAD_INPUTS)
def test_bad_input_is_refused_naming_the_key_and_the_fix(config: dict[str, Any], key: str, fix: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(config, "test")
    error = caught.value
    message = str(error)
    assert error.key == key, message
    assert f"stack setting '{key}'" in message
    assert "Fix: " in message and error.fix, message
    assert fix in error.fix, f"fix {error.fix!r} should say {fix!r}"


def test_sentinel_on_cluster_nodes_says_why() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"redis": {"topology": "sentinel", "cluster_enabled": True}}, "test")
    assert "REPLICAOF not allowed in cluster mode" in caught.value.problem
    assert "Sentinel could never fail it over" in caught.value.problem


def test_a_short_password_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"sentinel_password": "hunter2-secret"}, "test")
    assert caught.value.key == "sentinel_password"
    assert "hunter2-secret" not in str(caught.value)
    assert "16 characters" in str(caught.value)


def test_node_count_message_says_why() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"redis": {"node_count": 7}}, "test")
    assert "7 nodes cannot be split into groups of one master and 1 replica" in caught.value.problem


def test_port_collision_names_both_owners() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"redis": {"bus_port_offset": 3}}, "test")
    # node 0's bus port 7003 is node 3's client port
    assert "cluster bus (node 0) port 7003 is also the client (node 3) port" in caught.value.problem


def test_a_machine_without_an_address_is_a_settings_error() -> None:
    config = {"redis": {"target": "hosts"}, "hosts": {"machines": [{"name": "cache-1"}]}, "cdn": CDN}
    with pytest.raises(SettingsError) as caught:
        load_settings(config, "test")
    assert caught.value.key == "hosts.machines[0].address"


# ---------------------------------------------------------------------------------------------
# Valid variations


def test_sentinel_topology_loads() -> None:
    settings = load_settings({"redis": {"topology": "sentinel"}}, "dev")
    assert settings.redis.topology == "sentinel"
    assert settings.redis.is_cluster is False
    assert settings.redis.masters == 3
    assert settings.sentinel.ports == (26379, 26380, 26381)


def test_sentinel_topology_with_cluster_disabled_loads() -> None:
    settings = load_settings({"redis": {"topology": "sentinel", "cluster_enabled": False}}, "dev")
    assert settings.redis.cluster_enabled is False


def test_eight_nodes_give_four_masters() -> None:
    settings = load_settings({"redis": {"node_count": 8}}, "dev")
    assert (settings.redis.node_count, settings.redis.masters) == (8, 4)


def test_cluster_ports_may_sit_next_to_the_sentinel_defaults() -> None:
    # the sentinel block is unused in cluster topology, so its ports do not collide
    settings = load_settings({"redis": {"base_port": 26379}}, "dev")
    assert settings.redis.base_port == 26379


@pytest.mark.parametrize("key", ["app_password", "admin_password", "replication_password", "sentinel_password"])
def test_a_16_character_password_is_accepted(key: str) -> None:
    settings = load_settings({key: "0123456789abcdef"}, "dev")
    assert settings.redis == RedisSettings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2gb", 2 * 1024**3), ("2GB", 2 * 1024**3), ("512mb", 512 * 1024**2), ("100k", 100_000), ("1g", 10**9), ("0", 0)],
)
def test_memory_sizes_use_the_redis_units(text: str, expected: int) -> None:
    assert parse_memory("redis.maxmemory", text) == expected


@pytest.mark.parametrize("policy", ["noeviction", "allkeys-lfu", "volatile-ttl"])
def test_known_eviction_policies_load(policy: str) -> None:
    assert load_settings({"redis": {"maxmemory_policy": policy}}, "dev").redis.maxmemory_policy == policy


def test_numbers_as_json_floats_load_as_ints() -> None:
    config = {
        "redis": {"topology": "sentinel", "node_count": 6.0, "base_port": 7000.0, "bus_port_offset": 10000.0},
        "sentinel": {"ports": [26379.0, 26380.0, 26381.0], "quorum": 2.0},
    }
    settings = load_settings(config, "dev")
    assert settings.redis.base_port == 7000 and type(settings.redis.base_port) is int
    assert settings.redis.node_count == 6 and type(settings.redis.node_count) is int
    assert settings.sentinel.ports == (26379, 26380, 26381)
    assert all(type(port) is int for port in settings.sentinel.ports)
    assert type(settings.sentinel.quorum) is int


def test_a_fractional_float_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"redis": {"base_port": 7000.5}}, "dev")
    assert caught.value.key == "redis.base_port"


def test_save_points_given_as_lists_become_tuples() -> None:
    settings = load_settings({"redis": {"save": [[900, 1], [60, 1000]]}}, "dev")
    assert settings.redis.save == ((900, 1), (60, 1000))


def test_hosts_target_with_machines_loads() -> None:
    settings = load_settings(hosts_config(6), "prod")
    assert settings.hosts is not None
    assert [m.name for m in settings.hosts.machines] == [f"cache-{i}" for i in range(1, 7)]
    assert settings.hosts.placement == tuple(f"cache-{i}" for i in range(1, 7))
    assert settings.cdn is not None and settings.cdn.zone_id == CDN["zone_id"]


def test_a_hosts_stack_without_cdn_settings_manages_no_zone() -> None:
    """One stack per region: only the one that says `cdn` manages the Cloudflare zone."""
    config = hosts_config(6)
    del config["cdn"]
    assert load_settings(config, "prod").cdn is None
    config["cdn"] = {"zone_id": "not-a-zone"}  # a zone that is named is still checked
    with pytest.raises(SettingsError) as caught:
        load_settings(config, "prod")
    assert caught.value.key == "cdn.zone_id"
