"""Which config changes apply live and which need a rolling restart, and in which order."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import build_topology, local_placement
from cachelayer.ports import free_port_block
from cachelayer.render.conf import RESTART_ONLY, conf_values
from cachelayer.render.nodes import Passwords, render_auth_conf, render_redis_conf, render_users_acl, sandbox_paths
from cachelayer.render.rollout import (
    LIVE_DIRECTIVES,
    change_path,
    diff_settings,
    live_values,
    restart_fingerprint,
    rolling_plan,
)

PASSWORDS = Passwords(
    "app-password-0123456789", "admin-password-0123456789", "repl-password-0123456789", "sentinel-pw-0123456789",
    "monitor-pw-0123456789",
)


def prod(**redis: Any) -> Settings:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], **redis}
    return load_settings(config, "prod")


def test_the_two_paths_do_not_overlap_and_unknown_directives_restart() -> None:
    assert not LIVE_DIRECTIVES & RESTART_ONLY
    assert all(change_path(directive) == "restart" for directive in RESTART_ONLY)
    assert change_path("maxmemory") == "live"
    assert change_path("port") == "restart"
    assert change_path("some-future-directive") == "restart"


def test_unchanged_settings_change_nothing() -> None:
    assert diff_settings(prod(), prod()).is_empty


def test_memory_and_persistence_tuning_apply_live() -> None:
    changed = prod(maxmemory="4gb", maxmemory_policy="allkeys-lfu", appendfsync="always")
    # Built directly: loading `save` from stack config trips a core bug (fields.convert, see report).
    changed = dataclasses.replace(changed, redis=dataclasses.replace(changed.redis, save=((900, 1),)))
    diff = diff_settings(prod(), changed)
    assert diff.live_changes == {
        "maxmemory": "4gb",
        "maxmemory-policy": "allkeys-lfu",
        "save": "900 1",
        "appendfsync": "always",
        # derived from maxmemory (1/64 and twice that): they follow it, live too
        "proto-max-bulk-len": str(64 * 1024**2),
        "client-query-buffer-limit": str(128 * 1024**2),
    }
    assert diff.restart_needed == []


def test_data_safety_directives_apply_live_and_the_bus_port_needs_a_restart() -> None:
    changed = prod(
        min_replicas_to_write=1,
        min_replicas_max_lag=5,
        repl_backlog_size="128mb",
        repl_diskless_sync_delay=2,
        proto_max_bulk_len="8mb",
        client_query_buffer_limit="16mb",
        maxmemory_clients="10%",
        sanitize_dump_payload="yes",
    )
    diff = diff_settings(prod(), changed)
    assert diff.live_changes == {
        "min-replicas-to-write": "1",
        "min-replicas-max-lag": "5",
        "repl-backlog-size": "128mb",
        "repl-diskless-sync-delay": "2",
        "proto-max-bulk-len": str(8 * 1024**2),
        "client-query-buffer-limit": str(16 * 1024**2),
        "maxmemory-clients": "10%",
        "sanitize-dump-payload": "yes",
    }
    assert diff.restart_needed == []
    moved = diff_settings(prod(), prod(bus_port_offset=1000))
    assert "cluster-port" in moved.restart_needed and "cluster-port" not in moved.live_changes


def test_tls_and_ports_need_a_restart() -> None:
    diff = diff_settings(prod(), prod(tls=False))
    assert {"port", "tls-port", "tls-cert-file", "tls-cluster"} <= set(diff.restart_needed)
    moved = diff_settings(prod(), prod(base_port=7100))
    assert "port" not in moved.live_changes and "tls-port" in moved.restart_needed
    assert moved.live_changes["cluster-announce-tls-port"] == "7100"


def test_restart_fingerprint_ignores_live_directives_only() -> None:
    topology = build_topology(prod())
    node = topology.nodes[0]

    def conf(settings: Settings) -> str:
        return render_redis_conf(settings, build_topology(settings), node, sandbox_paths(Path("/x"), node.name))

    base = restart_fingerprint(conf(prod()))
    assert restart_fingerprint(conf(prod(maxmemory="8gb", tcp_keepalive=60))) == base
    assert restart_fingerprint(conf(prod(tls=False))) != base


def test_rolling_plan_restarts_replicas_first_then_masters_after_a_failover() -> None:
    plan = rolling_plan(build_topology(prod()))
    assert [(s.port, s.planned_role, s.failover) for s in plan] == [
        (7003, "replica", "none"),
        (7004, "replica", "none"),
        (7005, "replica", "none"),
        (7000, "master", "cluster"),
        (7001, "master", "cluster"),
        (7002, "master", "cluster"),
    ]
    sentinel_plan = rolling_plan(build_topology(prod(topology="sentinel")))
    assert [s.failover for s in sentinel_plan if s.planned_role == "master"] == ["sentinel"] * 3
    assert [s.group for s in sentinel_plan][3:] == ["redis-master-1", "redis-master-2", "redis-master-3"]


def test_conf_values_reads_a_rendered_config() -> None:
    settings = prod()
    topology = build_topology(settings)
    directives = conf_values(
        render_redis_conf(settings, topology, topology.nodes[0], sandbox_paths(Path("/x"), "n"))
    )
    assert directives["maxmemory"] == "2gb"
    assert directives["save"] == "3600 1 300 100 60 10000"
    assert directives["tls-port"] == "7000"


@pytest.fixture
def node_conf(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real cluster-mode node (no TLS) started from the rendered config on a loopback port."""
    settings = prod(tls=False, base_port=free_port_block(7210, 7290, offsets=(10000,)))
    topology = build_topology(settings, local_placement(settings))
    node = topology.nodes[0]
    paths = sandbox_paths(tmp_path, node.name)
    Path(paths.data_dir).mkdir(parents=True)
    conf = render_redis_conf(settings, topology, node, paths)
    Path(paths.conf_file).write_text(conf)
    Path(paths.acl_file).write_text(render_users_acl(settings, PASSWORDS))
    Path(paths.auth_file).write_text(render_auth_conf(node.name, PASSWORDS))
    process = subprocess.Popen(["redis-server", paths.conf_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while cli(node.port, "ping") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        yield conf, node.port
    finally:
        process.terminate()
        process.wait(timeout=10)


def cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "--user", "admin", "-p", str(port), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "REDISCLI_AUTH": PASSWORDS.admin},
        timeout=10,
    )
    return result.stdout.strip()


@pytest.mark.integration
def test_redis_accepts_every_live_directive_with_config_set(node_conf: tuple[str, int]) -> None:
    conf, port = node_conf
    values = live_values(conf)
    assert len(values) >= 20, "the rendered config should have most tuning directives"
    for directive, value in values.items():
        assert cli(port, "config", "set", directive, value) == "OK", f"CONFIG SET {directive} {value} refused"
    # All at once, as apply-config.sh does it (one atomic call per node).
    flat = [item for pair in values.items() for item in pair]
    assert cli(port, "config", "set", *flat) == "OK"
    assert cli(port, "config", "set", "maxmemory", "3gb") == "OK"
    assert cli(port, "config", "get", "maxmemory").splitlines()[1] == str(3 * 1024**3)
