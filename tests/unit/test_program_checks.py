"""The program refuses what it cannot deploy before registering any resource, and warns on
risky but legal settings. Also the data-safety directives and cluster-port as rendered."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from cachelayer.config.settings import load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.advice import settings_warnings
from cachelayer.plan.topology import build_topology
from cachelayer.render.conf import conf_values
from cachelayer.render.nodes import docker_paths, render_redis_conf
from support.program_harness import FAKE_SECRETS, ProgramRun

NO_CDN_TOKEN = {"ssh_private_key": FAKE_SECRETS["ssh_private_key"]}


@pytest.mark.parametrize(
    ("stack", "overrides", "secrets", "key"),
    [
        ("prod", {}, {}, "ssh_private_key"),
        ("prod", {}, NO_CDN_TOKEN, "cloudflare_api_token"),
        ("dev", {"redis": {"tls": True}}, None, "redis.tls"),
    ],
)
def test_refusals_come_before_any_resource(
    program: Any, stack: str, overrides: dict[str, Any], secrets: dict[str, str] | None, key: str
) -> None:
    run = ProgramRun(stack=stack)
    with pytest.raises(SystemExit) as stopped:
        program(stack, config_overrides=overrides, secrets=secrets, into=run)
    assert f"stack setting '{key}'" in str(stopped.value)
    assert run.resources == [], f"registered before the refusal: {[r.name for r in run.resources]}"


def test_the_program_logs_each_warning(program: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: logged.append(message))
    hosts = {**read_stack_config("prod")["hosts"], "app_networks": ["0.0.0.0/0"]}
    program("prod", config_overrides={"hosts": hosts})
    assert any("hosts.app_networks[0]" in m for m in logged), logged


def prod_settings(hosts: dict[str, Any] | None = None, **redis: Any) -> Any:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], **redis}
    config["hosts"] = {**config["hosts"], **(hosts or {})}
    return load_settings(config, "prod")


def test_the_stack_files_have_no_warning() -> None:
    assert settings_warnings(prod_settings()) == []
    assert settings_warnings(load_settings(read_stack_config("dev"), "dev")) == []


@pytest.mark.parametrize(
    ("hosts", "redis", "key"),
    [
        ({"app_networks": ["0.0.0.0/0"]}, {}, "hosts.app_networks[0]"),
        ({"app_networks": ["10.0.0.0/8", "::/0"]}, {}, "hosts.app_networks[1]"),
        ({}, {"replicas_per_master": 0}, "redis.replicas_per_master"),
        ({"machines": read_stack_config("prod")["hosts"]["machines"][:2], "placement": []}, {"topology": "sentinel", "node_count": 2}, "sentinels share a machine"),
        ({}, {"maxmemory_clients": "0"}, "redis.maxmemory_clients"),
        ({}, {"sanitize_dump_payload": "no"}, "redis.sanitize_dump_payload"),
        ({}, {"min_replicas_to_write": 1}, "redis.min_replicas_to_write"),
        ({}, {"topology": "sentinel", "appendonly": False}, "redis.appendonly"),
    ],
)  # fmt: skip
def test_risky_choices_are_warned_about(hosts: dict[str, Any], redis: dict[str, Any], key: str) -> None:
    warnings = settings_warnings(prod_settings(hosts, **redis))
    assert len(warnings) == 1 and key in warnings[0], warnings


@pytest.mark.parametrize(
    ("backup", "warned"),
    [
        (None, True),  # .backups/ of the checkout: on a CI runner, thrown away with it
        ({"destination": "backups/prod"}, True),
        ({"destination": "/mnt/backup-nfs/prod"}, False),
        ({"destination": "s3://learn-cache-backups/prod"}, False),
    ],
)
def test_a_hosts_stack_without_an_off_host_backup_destination_is_warned_about(
    backup: dict[str, Any] | None, warned: bool
) -> None:
    config = read_stack_config("prod")
    config.pop("backup")
    if backup is not None:
        config["backup"] = backup
    warnings = [w for w in settings_warnings(load_settings(config, "prod")) if "backup.destination" in w]
    assert bool(warnings) == warned, warnings
    assert not warned or "s3://bucket/prefix" in warnings[0]


def rendered(**redis: Any) -> list[dict[str, str]]:
    settings = load_settings({"redis": redis}, "t")
    topology = build_topology(settings)
    return [conf_values(render_redis_conf(settings, topology, n, docker_paths(n.name))) for n in topology.nodes]


def test_cluster_port_is_the_announced_bus_port() -> None:
    for conf in rendered(bus_port_offset=1000):
        assert conf["cluster-port"] == conf["cluster-announce-bus-port"] == str(int(conf["port"]) + 1000)


def test_data_safety_directives_are_rendered_at_the_stacks_values() -> None:
    conf = rendered(maxmemory="256mb", min_replicas_to_write=1, repl_backlog_size="16mb", maxmemory_clients="10%")[0]
    assert conf["min-replicas-to-write"] == "1" and conf["min-replicas-max-lag"] == "10"
    assert conf["repl-backlog-size"] == "16mb" and conf["repl-diskless-sync-delay"] == "0"
    assert conf["proto-max-bulk-len"] == str(4 * 1024**2)  # 256mb / 64
    assert conf["client-query-buffer-limit"] == str(8 * 1024**2)
    assert conf["maxmemory-clients"] == "10%" and conf["sanitize-dump-payload"] == "clients"


def test_new_directives_follow_redis_conf_section_order() -> None:
    order = list(rendered()[0])
    assert order.index("rdbchecksum") < order.index("sanitize-dump-payload") < order.index("dir")
    assert order.index("repl-diskless-sync") < order.index("repl-backlog-size") < order.index("min-replicas-to-write")
    assert order.index("cluster-node-timeout") < order.index("cluster-port") < order.index("cluster-announce-ip")
    assert order.index("latency-monitor-threshold") < order.index("proto-max-bulk-len")
