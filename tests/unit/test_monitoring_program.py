"""Monitoring in the Pulumi program under mocks: the prod stack declares an exporter (unit,
root-only password file, service) per process on every host, the firewall opens the exporter
ports to the scrape networks only, the `monitor` user is on every node and sentinel with its
password secret; the dev stack adds exporter containers only when asked."""

from __future__ import annotations

import configparser
import json
from typing import Any

import pytest
import yaml

from cachelayer.config.settings import PASSWORD_KEYS
from cachelayer.config.stack_file import read_stack_config
from support.program_harness import ProgramRun, contains_plain, is_secret_value, run_program, unwrap

MACHINES = [f"cache-{i}" for i in range(1, 7)]
PORTS = range(7000, 7006)
SCRAPE = "10.40.0.0/24"
MONITOR_PASSWORD = "generated-redis-credentials-monitor-password-0123456789abcdef"


def prod_with(**monitoring: Any) -> ProgramRun:
    return run_program("prod", {"monitoring": {"scrape_networks": [SCRAPE], **monitoring}})


@pytest.fixture(scope="module")
def prod() -> ProgramRun:
    return prod_with()


@pytest.fixture(scope="module")
def prod_sentinel() -> ProgramRun:
    redis = {**read_stack_config("prod")["redis"], "topology": "sentinel"}
    return run_program("prod", {"monitoring": {"scrape_networks": [SCRAPE]}, "redis": redis})


def stdin(run: ProgramRun, name: str) -> Any:
    return run.named(name).inputs["stdin"]


def test_monitor_password_is_one_of_the_generated_secrets() -> None:
    assert "monitor_password" in PASSWORD_KEYS


@pytest.mark.parametrize("port", PORTS)
def test_every_node_has_an_exporter_unit_password_file_and_service(prod: ProgramRun, port: int) -> None:
    machine = MACHINES[port - 7000]
    unit_name = f"redis-{port}-exporter"
    unit_text = unwrap(stdin(prod, f"redis-{machine}-{unit_name}-unit"))
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(unit_text)
    exec_start = unit["Service"]["ExecStart"]
    listen = f"192.0.2.{11 + port - 7000}:{9121 + port - 7000}"
    assert exec_start.startswith("/usr/bin/prometheus-redis-exporter ")
    assert f"--web.listen-address={listen}" in exec_start
    assert f"rediss://127.0.0.1:{port}" in exec_start  # prod runs TLS
    assert "--redis.user=monitor" in exec_start and "--redis.password-file=%d/password.json" in exec_start
    assert unit["Service"]["DynamicUser"] == "yes"
    assert MONITOR_PASSWORD not in unit_text
    # The password file: root-only, written from a secret stdin, never in plain text.
    password_file = prod.named(f"redis-{machine}-{unit_name}-password")
    assert is_secret_value(password_file.inputs["stdin"])
    assert f"/etc/redis/{unit_name}.json" in password_file.inputs["create"]
    assert "chmod 0600" in password_file.inputs["create"] and "chown root:root" in password_file.inputs["create"]
    assert json.loads(unwrap(password_file.inputs["stdin"])) == {f"rediss://127.0.0.1:{port}": MONITOR_PASSWORD}
    service = prod.named(f"redis-{unit_name}-service")
    assert f"systemctl enable {unit_name}.service" in service.inputs["create"]
    assert unwrap(service.inputs)["connection"]["host"] == listen.split(":")[0]
    assert f"redis-{machine}-firewall" in prod.depends_on[f"redis-{unit_name}-service"]


def test_no_monitor_password_in_plain_text_anywhere(prod: ProgramRun) -> None:
    for resource in prod.resources:
        assert not contains_plain(resource.inputs, MONITOR_PASSWORD), resource.name
    for name, export in prod.exports.items():
        assert not (not export.secret and MONITOR_PASSWORD in json.dumps(export.value)), name


@pytest.mark.parametrize("machine", MACHINES)
def test_the_firewall_opens_exporter_ports_to_the_scrape_networks_only(prod: ProgramRun, machine: str) -> None:
    rules = stdin(prod, f"redis-{machine}-firewall-rules")
    assert "elements = { 9121, 9122, 9123, 9124, 9125, 9126 }" in rules
    assert f"elements = {{ {SCRAPE} }}" in rules
    chain = rules[rules.index("chain input") :]
    # Scrape networks accepted, everyone else dropped, before the rule that passes non-Redis ports.
    accept = chain.index("tcp dport @exporter_ports ip saddr @scrape_v4 goto admitted")
    drop = chain.index("tcp dport @exporter_ports counter drop")
    assert accept < drop < chain.index("tcp dport != @redis_ports accept")
    install = stdin(prod, f"redis-{machine}-install")
    assert "prometheus-redis-exporter" in install


@pytest.mark.parametrize("port", PORTS)
def test_the_monitor_user_is_in_every_node_acl_with_a_secret_password(prod: ProgramRun, port: int) -> None:
    acl = prod.named(f"redis-{MACHINES[port - 7000]}-redis-{port}-acl").inputs["stdin"]
    assert is_secret_value(acl)
    line = next(line for line in unwrap(acl).splitlines() if line.startswith("user monitor "))
    assert line.split()[4:] == ["-@all", "+ping", "+info", "+cluster|info", "+slowlog|len", "+latency|latest",
                                "+client|setname"]  # fmt: skip


def test_sentinel_topology_adds_sentinel_exporters_and_the_sentinels_monitor_user(prod_sentinel: ProgramRun) -> None:
    names = {r.name for r in prod_sentinel.resources}
    for index, port in enumerate((26379, 26380, 26381)):
        assert f"redis-redis-sentinel-{port}-exporter-service" in names
        unit = stdin(prod_sentinel, f"redis-{MACHINES[index]}-redis-sentinel-{port}-exporter-unit")
        assert f"rediss://127.0.0.1:{port}" in unwrap(unit)
        conf = prod_sentinel.named(f"redis-{MACHINES[index]}-redis-sentinel-{port}-conf-dist").inputs["stdin"]
        assert is_secret_value(conf)
        assert "user monitor on #" in unwrap(conf) and "+sentinel|ckquorum" in unwrap(conf)


def test_outputs_give_targets_rules_and_dashboard(prod: ProgramRun) -> None:
    targets = prod.exports["monitoring_targets"].value
    assert [t["targets"] for t in targets] == [[f"192.0.2.{11 + i}:{9121 + i}"] for i in range(6)]
    assert targets[0]["labels"] == {"stack": "prod", "process": "redis-7000", "kind": "node", "host": "cache-1"}
    rules = yaml.safe_load(prod.exports["monitoring_rules"].value)
    names = {rule["alert"] for rule in rules["groups"][0]["rules"]}
    assert {"RedisDown", "RedisMasterMissingReplicas", "RedisClusterStateNotOk", "RedisNoRecentSave"} <= names
    dashboard = json.loads(prod.exports["monitoring_dashboard"].value)
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Hit ratio", "Memory used / maxmemory", "Backup age (s since the newest complete backup)"} <= titles


def test_monitoring_off_declares_no_exporter_and_no_exporter_firewall_rule() -> None:
    run = prod_with(enabled=False)
    assert not [r.name for r in run.resources if "exporter" in r.name]
    assert "exporter_ports" not in stdin(run, "redis-cache-1-firewall-rules")
    assert "monitoring_targets" not in run.exports


def test_dev_stack_is_off_by_default_and_adds_pinned_exporter_containers_when_on() -> None:
    assert not [r for r in run_program("dev").resources if "exporter" in r.name]
    run = run_program("dev", {"monitoring": {"enabled": True}})
    containers = [r for r in run.of_type("docker:index/container:Container") if r.name.endswith("-exporter")]
    assert len(containers) == 6
    image = run.named("redis-exporter-image").inputs["name"]
    assert image == "oliver006/redis_exporter:v1.45.0"
    first = containers[0].inputs
    assert "--redis.addr=redis://172.30.70.10:7000" in first["command"]
    assert not contains_plain(first, "generated-redis-credentials-monitor-password")
    assert [p["external"] for p in first["ports"]] == [9121]
