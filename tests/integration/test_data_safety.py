"""Real redis-server: the data-safety directives load at the stack's values, an oversized
request cannot evict a shard, and a cluster whose bus port offset is not 10000 forms.
Ports 7610-7615 and 7650-7655 (bus 17610-17615 and 8650-8655)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cachelayer.config.checks import INT_RANGES
from cachelayer.fields import parse_memory
from cachelayer.render.conf import conf_values
from cachelayer.sandbox.local import LocalSandbox

from .conftest import boot, cluster_client

pytestmark = pytest.mark.integration

SIZE_DIRECTIVES = ("repl-backlog-size", "proto-max-bulk-len", "client-query-buffer-limit")
VALUE_DIRECTIVES = (
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "repl-diskless-sync-delay",
    "maxmemory-clients",
    "sanitize-dump-payload",
    "cluster-port",
)


def test_small_node_runs_each_directive_at_the_stacks_value_and_refuses_an_oversized_set(
    sandbox_factory: Callable[..., LocalSandbox],
) -> None:
    sandbox = sandbox_factory(7610, maxmemory="8mb", repl_backlog_size="1mb", min_replicas_max_lag=7)
    boot(sandbox)
    for node in sandbox.topology.nodes:
        wanted = conf_values(Path(sandbox.paths(node).conf_file).read_text())
        with sandbox.admin_client(node) as admin:
            for directive in SIZE_DIRECTIVES:
                value = str(admin.config_get(directive)[directive])
                assert int(value) == parse_memory(directive, wanted[directive]), (node.name, directive)
            for directive in VALUE_DIRECTIVES:
                assert admin.config_get(directive) == {directive: wanted[directive]}, (node.name, directive)
    client = cluster_client(sandbox)
    for index in range(200):
        client.set(f"kept:{index}", "x" * 1000)
    # The trial's case: one 12 MB SET into 8 MB nodes. proto-max-bulk-len (1mb here) refuses it
    # when its header arrives, before any of it is buffered.
    with pytest.raises(redis.RedisError):
        client.set("kept:0", "y" * (12 * 1024**2))
    client = cluster_client(sandbox)
    assert all(client.get(f"kept:{index}") == "x" * 1000 for index in range(200)), "the shard lost keys"
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as admin:
            assert admin.info("stats")["evicted_keys"] == 0, node.name


def test_a_cluster_with_bus_port_offset_1000_forms(sandbox_factory: Callable[..., LocalSandbox]) -> None:
    sandbox = sandbox_factory(7650, bus_port_offset=1000)
    boot(sandbox)
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as admin:
            assert admin.config_get("cluster-port") == {"cluster-port": str(node.port + 1000)}
            info = admin.execute_command("CLUSTER INFO")
            assert info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == 6, (node.name, info)
            # every peer is reached on its announced bus port, which the node really listens on
            nodes = admin.execute_command("CLUSTER NODES")
            assert all(peer["connected"] for peer in nodes.values()), nodes


def redis_accepts(directive: str, value: int) -> bool:
    """Whether redis-server starts with `directive value` (on a unix socket, no TCP port)."""
    socket = f"/tmp/cachelayer-bounds-{os.getpid()}.sock"
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", socket, "--save", "", f"--{directive}", str(value)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return process.wait(1.0) == 0
    except subprocess.TimeoutExpired:
        return True  # still running: the config loaded
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


@pytest.mark.parametrize("key", [k for k, r in INT_RANGES.items() if r.daemon_bound and k.startswith("redis.")])
def test_redis_server_enforces_the_same_bounds(key: str) -> None:
    bound = INT_RANGES[key]
    directive = key.split(".")[1].replace("_", "-")
    assert redis_accepts(directive, bound.low) and redis_accepts(directive, bound.high)
    assert not redis_accepts(directive, bound.low - 1)
    assert not redis_accepts(directive, bound.high + 1)
