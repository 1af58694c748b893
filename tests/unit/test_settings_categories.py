"""Categories of input the settings must refuse because a consuming program (redis-server,
Sentinel, Docker, systemd, the shell) would refuse or misread them. Each category is tested
over every field it covers and several values, and every refusal's suggested value loads."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from typing import Any

import pytest

from cachelayer.config.checks import INT_RANGES, PASSWORD_FORBIDDEN, calendar_ok
from cachelayer.config.settings import PASSWORD_KEYS, RedisSettings, SentinelSettings, load_settings
from cachelayer.errors import SettingsError
from support.machines import machine

CDN = {"zone_id": "0123456789abcdef0123456789abcdef", "zone_name": "learn.example.com"}


def base_config(section: str) -> dict[str, Any]:
    """The smallest valid stack in which `section`'s keys are used."""
    if section == "sentinel":
        return {"redis": {"topology": "sentinel"}}
    if section == "hosts":
        machines = [machine(f"cache-{i + 1}", f"192.0.2.{11 + i}") for i in range(6)]
        return {"redis": {"target": "hosts"}, "hosts": {"machines": machines}, "cdn": CDN}
    return {}


def with_value(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `config` with the stack key (`redis.base_port`, `hosts.machines[0].name`) set."""
    config = copy.deepcopy(config)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    target: Any = config
    for part, following in zip(parts, [*parts[1:], None], strict=True):
        index: Any = int(part[1:-1]) if part.startswith("[") else part
        if following is None:
            target[index] = value
        else:
            if isinstance(target, dict) and index not in target:
                target[index] = {}
            target = target[index]
    return config


def refused(config: dict[str, Any]) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(config, "test")
    return caught.value


def assert_fix_loads(config: dict[str, Any], error: SettingsError) -> None:
    """The suggested value for the key the message names loads."""
    assert error.suggested is not None, f"no suggested value in {error}"
    load_settings(with_value(config, error.key, error.suggested), "test")


# ---------------------------------------------------------------------------------------------
# Durations and counts


INT_FIELDS_WITHOUT_RANGE = {"node_count", "replicas_per_master", "base_port", "bus_port_offset", "quorum"}


@pytest.mark.parametrize("cls", [RedisSettings, SentinelSettings], ids=lambda c: c.__name__)
def test_every_whole_number_directive_has_a_range(cls: type) -> None:
    """A new int field cannot slip in unvalidated (topology and port fields have their own checks)."""
    section = "redis" if cls is RedisSettings else "sentinel"
    ints = {f.name for f in dataclasses.fields(cls) if f.type in ("int", int)}
    assert ints - INT_FIELDS_WITHOUT_RANGE <= {k.split(".")[1] for k in INT_RANGES if k.startswith(section)}


@pytest.mark.parametrize("key", sorted(INT_RANGES))
def test_each_range_accepts_its_bounds_and_refuses_past_them(key: str) -> None:
    section = key.split(".")[0]
    bound = INT_RANGES[key]
    config = base_config(section)
    if key == "redis.min_replicas_to_write":
        config = with_value(config, "redis.replicas_per_master", 1)
        high = 1  # bounded by the replicas there are (tested below)
    else:
        high = bound.high
    for value in (bound.low, high):
        load_settings(with_value(config, key, value), "test")
    for value in (bound.low - 1, bound.low - 1000, bound.high + 1):
        bad = with_value(config, key, value)
        error = refused(bad)
        assert error.key == key, error
        if key != "redis.min_replicas_to_write":
            assert_fix_loads(bad, error)


def test_min_replicas_to_write_cannot_exceed_the_replicas() -> None:
    bad = {"redis": {"min_replicas_to_write": 2}}
    error = refused(bad)
    assert error.key == "redis.min_replicas_to_write" and "refuse every write" in error.problem
    assert_fix_loads(bad, error)


@pytest.mark.parametrize("point", [[0, 1], [60, 0], [-1, 5], [60, -1], [2**31, 1]])
def test_save_points_redis_refuses_are_refused(point: list[int]) -> None:
    bad = {"redis": {"save": [point]}}
    error = refused(bad)
    assert error.key == "redis.save"
    assert_fix_loads(bad, error)


MEMORY_FIELDS = ("maxmemory", "repl_backlog_size", "proto_max_bulk_len", "client_query_buffer_limit")


@pytest.mark.parametrize("name", MEMORY_FIELDS)
@pytest.mark.parametrize("value", ["0", "1000", "100k", "5000gb", "2 gb", "lots"])
def test_memory_sizes_outside_what_fits_are_refused(name: str, value: str) -> None:
    bad = {"redis": {name: value}}
    error = refused(bad)
    assert error.key == f"redis.{name}", error
    if error.suggested is not None:
        assert_fix_loads(bad, error)


@pytest.mark.parametrize("value", ["101%", "3gb", "many"])
def test_maxmemory_clients_above_maxmemory_is_refused(value: str) -> None:
    error = refused({"redis": {"maxmemory_clients": value}})
    assert error.key == "redis.maxmemory_clients"


@pytest.mark.parametrize("value", ["0", "5%", "100%", "64mb"])
def test_maxmemory_clients_accepts_shares_and_sizes(value: str) -> None:
    assert load_settings({"redis": {"maxmemory_clients": value}}, "t").redis.maxmemory_clients == value


def test_derived_request_limits_follow_maxmemory() -> None:
    big = load_settings({"redis": {"maxmemory": "2gb"}}, "t").redis
    assert big.proto_max_bulk_len_bytes == 32 * 1024**2 and big.client_query_buffer_limit_bytes == 64 * 1024**2
    small = load_settings({"redis": {"maxmemory": "8mb", "repl_backlog_size": "1mb"}}, "t").redis
    assert small.proto_max_bulk_len_bytes == 1024**2  # Redis's minimum
    assert small.proto_max_bulk_len_bytes < 12 * 1024**2 < small.maxmemory_bytes * 2


# ---------------------------------------------------------------------------------------------
# Passwords

BAD_PASSWORD_CHARS = ["\n", "\r", "\x00", "\t", " ", "\x7f", "é", *PASSWORD_FORBIDDEN]


@pytest.mark.parametrize("key", PASSWORD_KEYS)
@pytest.mark.parametrize("char", BAD_PASSWORD_CHARS, ids=repr)
def test_passwords_that_break_config_lines_are_refused_without_echo(key: str, char: str) -> None:
    password = f"Abcdefgh{char}12345678"
    error = refused({key: password})
    assert error.key == key and "printable ASCII" in error.fix
    assert password not in str(error)


@pytest.mark.parametrize("key", PASSWORD_KEYS)
def test_every_other_printable_character_is_accepted(key: str) -> None:
    allowed = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in PASSWORD_FORBIDDEN)
    assert load_settings({key: allowed}, "t").stack == "t"  # loads: no SettingsError


def test_generated_passwords_stay_in_the_allowed_set(dev_run: Any) -> None:
    generators = dev_run.of_type("random:index/randomPassword:RandomPassword")
    assert len(generators) == len(PASSWORD_KEYS)
    for resource in generators:
        inputs = resource.inputs
        specials = inputs.get("overrideSpecial", "") if inputs.get("special", True) else ""
        assert not set(specials) & set(PASSWORD_FORBIDDEN + " "), resource.name


# ---------------------------------------------------------------------------------------------
# Names Docker, systemd and Linux reject

NAME_CASES = [
    ("docker.network_name", "", ["", "-net", "a", "my net", "net/1", "nét"], ["cachelayer", "a1", "dev_net.2-x"]),
    ("redis.version", "", ["", "7.2 .5", "-7.2", ".7", "7:2", "x" * 129], ["7.2.5", "7.2-alpine", "latest", "7_2"]),
    ("hosts.machines[0].name", "hosts", ["", "Cache-1", "cache_1", "-cache", "cache-", "a" * 64, "c 1"], ["cache-1", "a", "9x"]),
    ("hosts.ssh_user", "hosts", ["", "Deploy", "1deploy", "de ploy", "x" * 33, "root;id"], ["deploy", "root", "_svc", "ci-bot"]),
    ("hosts.machines[1].ssh_user", "hosts", ["-x", "a:b"], ["ubuntu"]),
]


@pytest.mark.parametrize(("key", "section", "bad", "good"), NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_names_the_consuming_program_rejects_are_refused(key: str, section: str, bad: list[str], good: list[str]) -> None:
    config = base_config(section)
    for value in good:
        load_settings(with_value(config, key, value), "t")
    for value in bad:
        broken = with_value(config, key, value)
        error = refused(broken)
        assert error.key == key, (value, error)
        assert_fix_loads(broken, error)


CALENDAR_GOOD = [
    "daily", "hourly", "weekly", "monthly", "*-*-* 02:00:00", "*-*-* 02:00", "02:30", "Mon..Fri 02:30",
    "Sat,Sun 03:00:00", "*-*-01 04:00:00", "2025-06-01 00:00:00", "*-*-* *:0/15", "Mon", "*-*-* 02:00:00 UTC",
    "*-01,07-01 00:00", "12-25",
]  # fmt: skip
CALENDAR_BAD = [
    "", " ", "2am", "*-*-* 25:00:00", "*-*-* 02:60", "*-13-01", "*-*-32", "Funday 02:00", "daily\nExecStart=/bin/sh",
    "*-*-* 02:00:00 Mars/Phobos", "02:00 *-*-*", "every day", "*-*-* 02:00:00:00", "Mon Tue",
]  # fmt: skip


@pytest.mark.parametrize("value", CALENDAR_GOOD)
def test_calendar_forms_of_the_subset_load(value: str) -> None:
    settings = load_settings(with_value(base_config("hosts"), "hosts.backup_on_calendar", value), "t")
    assert settings.hosts is not None and settings.hosts.backup_on_calendar == value


@pytest.mark.parametrize("value", CALENDAR_BAD, ids=repr)
def test_calendar_expressions_systemd_refuses_are_refused(value: str) -> None:
    broken = with_value(base_config("hosts"), "hosts.backup_on_calendar", value)
    error = refused(broken)
    assert error.key == "hosts.backup_on_calendar"
    assert_fix_loads(broken, error)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("value", CALENDAR_GOOD + CALENDAR_BAD, ids=repr)
def test_the_calendar_check_agrees_with_systemd_analyze(value: str) -> None:
    """What we accept, systemd accepts; what we refuse from this list, systemd refuses too."""
    if "\n" in value or not value.strip():
        assert not calendar_ok(value)  # systemd-analyze would read separate arguments
        return
    result = subprocess.run(["systemd-analyze", "calendar", value], capture_output=True, text=True, timeout=10)
    assert (result.returncode == 0) == calendar_ok(value), (value, result.stdout, result.stderr)


# ---------------------------------------------------------------------------------------------
# Ports

PORT_CASES = [
    ({"redis": {"base_port": 80}}, "redis.base_port"),
    ({"redis": {"base_port": 1000}}, "redis.base_port"),
    ({"redis": {"base_port": 1024, "bus_port_offset": -100}}, "redis.bus_port_offset"),
    ({"redis": {"base_port": 65533}}, "redis.base_port"),
    ({"redis": {"base_port": 60000}}, "redis.bus_port_offset"),
    ({"redis": {"bus_port_offset": 2}}, "redis.bus_port_offset"),
    ({"redis": {"topology": "sentinel"}, "sentinel": {"ports": [443, 26380, 26381]}}, "sentinel.ports"),
    ({"redis": {"topology": "sentinel"}, "sentinel": {"ports": [7003, 26380, 26381]}}, "sentinel.ports"),
    ({"redis": {"topology": "sentinel", "base_port": 26378}}, "sentinel.ports"),
]


@pytest.mark.parametrize(("config", "key"), PORT_CASES)
def test_privileged_out_of_range_and_colliding_ports_are_refused(config: dict[str, Any], key: str) -> None:
    error = refused(config)
    assert error.key == key, error
    assert_fix_loads(config, error)


@pytest.mark.parametrize(("ssh_port", "key"), [(7003, "redis.base_port"), (17001, "redis.bus_port_offset")])
def test_a_redis_port_on_a_machines_ssh_port_is_refused(ssh_port: int, key: str) -> None:
    config = with_value(base_config("hosts"), "hosts.machines[2].ssh_port", ssh_port)
    error = refused(config)
    assert error.key == key and str(ssh_port) in error.problem and "cache-3" in error.problem


def test_sentinel_ports_on_a_machines_ssh_port_are_refused() -> None:
    config = with_value(base_config("hosts"), "redis.topology", "sentinel")
    config = with_value(config, "hosts.machines[0].ssh_port", 26380)
    assert refused(config).key == "sentinel.ports"


def test_two_machines_with_one_address_are_refused() -> None:
    config = with_value(base_config("hosts"), "hosts.machines[4].address", "192.0.2.12")
    error = refused(config)
    assert error.key == "hosts.machines[4].address" and "hosts.machines[1]" in error.problem


# ---------------------------------------------------------------------------------------------
# Every message names the key that must change, and its suggested value loads

FIXABLE = [
    pytest.param({"redis": {"node_count": 0}}, "redis.node_count", id="node-count-0"),
    pytest.param({"redis": {"node_count": 7}}, "redis.node_count", id="node-count-7"),
    pytest.param({"redis": {"node_count": 4}}, "redis.node_count", id="cluster-4-nodes"),
    pytest.param({"redis": {"topology": "sentinel", "node_count": 2, "replicas_per_master": 0}}, "redis.replicas_per_master", id="sentinel-no-replica"),
    pytest.param({"redis": {"node_count": 9, "replicas_per_master": -1}}, "redis.replicas_per_master", id="cluster-negative-replicas-9"),
    pytest.param({"redis": {"topology": "sentinel", "node_count": 9, "replicas_per_master": 0}}, "redis.replicas_per_master", id="sentinel-0-replicas-9"),
    pytest.param({"redis": {"slowlog_log_slower_than": -2}}, "redis.slowlog_log_slower_than", id="slowlog-below--1"),
    pytest.param({"redis": {"latency_monitor_threshold": -1}}, "redis.latency_monitor_threshold", id="latency-negative"),
    pytest.param({"docker": {"first_host_address": 250}}, "docker.first_host_address", id="first-address-past-subnet"),
    pytest.param({"docker": {"first_host_address": 1}}, "docker.first_host_address", id="first-address-on-gateway"),
    pytest.param({"docker": {"subnet": "10.0.0.0/29"}}, "docker.subnet", id="subnet-too-small"),
    pytest.param({"redis": {"topology": "sentinel"}, "sentinel": {"quorum": 5}}, "sentinel.quorum", id="quorum"),
    pytest.param({"redis": {"maxmemory": "0"}}, "redis.maxmemory", id="maxmemory-unlimited"),
    pytest.param({"redis": {"min_replicas_to_write": 1, "min_replicas_max_lag": 0}}, "redis.min_replicas_max_lag", id="lag-0"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "key"), FIXABLE)
def test_the_message_names_the_key_to_change_and_its_fix_loads(config: dict[str, Any], key: str) -> None:
    error = refused(config)
    assert error.key == key, error
    assert f"stack setting '{key}'" in str(error)
    assert_fix_loads(config, error)
    if error.suggested is not None and not isinstance(error.suggested, (list, bool)):
        assert str(error.suggested) in error.fix, "the fix text names the value it suggests"
