"""A redis-server really starts with TLS from the rendered prod config (certificates made with
openssl, named and placed as the hosts get them), and refuses plain-text clients."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import build_topology, local_placement
from cachelayer.ports import free_port_block
from cachelayer.render.nodes import (
    Passwords,
    cli_tls_flags,
    render_auth_conf,
    render_redis_conf,
    render_users_acl,
    sandbox_paths,
)
from cachelayer.render.rollout import live_values
from support.tls_certificates import make_test_certificates

BASE_PORT = free_port_block(7300, 7390, offsets=(10000,))
PASSWORDS = Passwords(
    "app-password-0123456789", "admin-password-0123456789", "repl-password-0123456789", "sentinel-pw-0123456789",
    "monitor-pw-0123456789",
)

pytestmark = pytest.mark.integration


def prod_settings() -> Settings:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], "base_port": BASE_PORT}
    settings = load_settings(config, "prod")
    assert settings.redis.tls, "the prod stack is expected to run TLS"
    return settings


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    settings = prod_settings()
    topology = build_topology(settings, local_placement(settings))
    node = topology.nodes[0]
    paths = sandbox_paths(tmp_path, node.name)
    Path(paths.data_dir).mkdir(parents=True)
    make_test_certificates(Path(paths.conf_dir) / "tls")
    conf = render_redis_conf(settings, topology, node, paths)
    Path(paths.conf_file).write_text(conf)
    Path(paths.acl_file).write_text(render_users_acl(settings, PASSWORDS))
    Path(paths.auth_file).write_text(render_auth_conf(node.name, PASSWORDS))
    process = subprocess.Popen(["redis-server", paths.conf_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    flags = cli_tls_flags(settings, f"{paths.conf_dir}/tls")
    try:
        deadline = time.monotonic() + 10
        while cli(node.port, flags, "ping") != "PONG":
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start with TLS: {Path(paths.log_file).read_text()}")
            time.sleep(0.1)
        yield node.port, conf, flags
    finally:
        process.terminate()
        process.wait(timeout=10)


def cli(port: int, flags: tuple[str, ...], *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "--user", "admin", *flags, "-p", str(port), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "REDISCLI_AUTH": PASSWORDS.admin},
        timeout=10,
    )
    return (result.stdout + result.stderr).strip()


def test_node_serves_tls_only_with_the_rendered_config(tls_node: tuple[int, str, tuple[str, ...]]) -> None:
    port, conf, flags = tls_node
    assert f"tls-port {port}" in conf and "port 0" in conf
    assert cli(port, flags, "ping") == "PONG"
    assert cli(port, flags, "config", "get", "tls-cluster").splitlines() == ["tls-cluster", "yes"]
    assert cli(port, (), "ping") != "PONG", "a plain-text client must not be served"
    # tls-auth-clients optional: a client with only the CA (no certificate) is served too.
    assert cli(port, flags[:3], "ping") == "PONG"


def test_live_directives_apply_over_tls(tls_node: tuple[int, str, tuple[str, ...]]) -> None:
    port, conf, flags = tls_node
    values = live_values(conf)
    assert {"tls-auth-clients", "cluster-announce-tls-port"} <= set(values)
    flat = [item for pair in values.items() for item in pair]
    assert cli(port, flags, "config", "set", *flat) == "OK"
