"""render/conf.py against a real redis-server: the server reads a config with repeated directives
as the parser says, refuses CONFIG SET of every RESTART_ONLY directive and accepts every other
directive the template renders, and drift advises a restart exactly where CONFIG SET is refused.
Each node is started from the rendered file of its topology (cluster with TLS, sentinel plain)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.ops.drift import PULUMI_FIX, config_drift, normalise
from cachelayer.plan.topology import build_topology, local_placement
from cachelayer.ports import free_port_block
from cachelayer.render.conf import PER_LINE, RESTART_ONLY, conf_values
from cachelayer.render.nodes import Passwords, render_auth_conf, render_redis_conf, render_users_acl, sandbox_paths
from support.tls_certificates import make_test_certificates

PASSWORDS = Passwords(
    "app-password-0123456789", "admin-password-0123456789", "repl-password-0123456789", "sentinel-pw-0123456789",
    "monitor-pw-0123456789",
)

pytestmark = pytest.mark.integration


def settings_of(topology: str, tls: bool) -> Settings:
    config = read_stack_config("prod")
    base_port = free_port_block(7800, 7900, offsets=(10000,))
    config["redis"] = {**config["redis"], "topology": topology, "tls": tls, "base_port": base_port}
    if topology == "sentinel":
        config["sentinel"] = {**config.get("sentinel", {}), "ports": [base_port + 20000 + i for i in range(3)]}
    return load_settings(config, "prod")


def start(process_argv: list[str], client: redis.Redis, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(process_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"redis-server did not start: {log.read_text() if log.exists() else ''}") from None
            time.sleep(0.1)


@pytest.fixture(params=[("cluster", True), ("sentinel", False)], ids=["cluster-tls", "sentinel"])
def rendered_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """(the rendered redis.conf, an admin client) of a node started from that very file."""
    topology_kind, tls = request.param
    settings = settings_of(topology_kind, tls)
    topology = build_topology(settings, local_placement(settings))
    node = topology.nodes[0]
    paths = sandbox_paths(tmp_path, node.name)
    Path(paths.data_dir).mkdir(parents=True)
    options: dict[str, Any] = {}
    if tls:
        tls_dir = make_test_certificates(Path(paths.conf_dir) / "tls")
        options = {"ssl": True, "ssl_ca_certs": str(tls_dir / "ca.crt")}
    conf = render_redis_conf(settings, topology, node, paths)
    Path(paths.conf_file).write_text(conf)
    Path(paths.acl_file).write_text(render_users_acl(settings, PASSWORDS))
    Path(paths.auth_file).write_text(render_auth_conf(node.name, PASSWORDS))
    client = redis.Redis(host="127.0.0.1", port=node.port, username="admin", password=PASSWORDS.admin, decode_responses=True,
                         socket_timeout=5, **options)
    process = start(["redis-server", paths.conf_file], client, Path(paths.log_file))
    try:
        yield conf, client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def refused(client: redis.Redis, directive: str, value: str) -> bool:
    try:
        client.config_set(directive, value)
    except redis.ResponseError:
        return True
    return False


def test_config_set_is_refused_exactly_for_the_restart_only_directives(rendered_node: tuple[str, redis.Redis]) -> None:
    conf, client = rendered_node
    rendered = conf_values(conf)
    live = client.config_get("*")
    for directive in sorted(RESTART_ONLY):
        value = rendered.get(directive, str(live.get(directive, "1")))
        assert refused(client, directive, value), f"CONFIG SET {directive} {value} was accepted: not restart-only"
    for directive, value in sorted(rendered.items()):
        if directive not in RESTART_ONLY and directive not in PER_LINE:
            assert not refused(client, directive, value), f"CONFIG SET {directive} {value} was refused"


def test_drift_advises_a_restart_exactly_where_config_set_is_refused(rendered_node: tuple[str, redis.Redis]) -> None:
    """Drift used to advise `CONFIG SET rdbchecksum` and `CONFIG SET cluster-port`, which Redis refuses."""
    conf, client = rendered_node
    rendered = conf_values(conf)
    live = client.config_get("*")
    readable = {d: v for d, v in rendered.items() if d in live}
    assert {"rdbchecksum", "dir", "logfile"} <= set(readable)
    wrong = []
    for directive, value in sorted(readable.items()):
        (found,) = config_drift("redis-x", "127.0.0.1:1", client, {directive: "a-value-it-does-not-have"})
        if (found.fix == PULUMI_FIX) != refused(client, directive, value):
            wrong.append(f"{directive}: drift advises {found.fix!r}")
    assert wrong == []


def test_redis_reads_a_repeated_directive_as_the_parser_does(tmp_path: Path) -> None:
    port = free_port_block(7800, 7900, size=1)
    conf = "\n".join([
        "port 1",  # the last port line is the one the server listens on
        f"port {port}",
        "bind 127.0.0.2",
        "bind 127.0.0.1",
        "save 900 1",
        "save 300 10",
        "maxmemory 1mb",
        "maxmemory 2mb",
        "client-output-buffer-limit replica 256mb 64mb 60",
        "client-output-buffer-limit normal 0 0 0 pubsub 32mb 8mb 60",
        "client-output-buffer-limit slave 1mb 1mb 1",
        f'logfile "{tmp_path}/server.log"',
        f"dir {tmp_path}",
        "appendonly no",
    ]) + "\n"
    (tmp_path / "redis.conf").write_text(conf)
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)
    process = start(["redis-server", str(tmp_path / "redis.conf")], client, tmp_path / "server.log")
    try:
        live = client.config_get("*")
        for directive, value in conf_values(conf).items():
            assert normalise(str(live[directive])) == normalise(value), directive
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
