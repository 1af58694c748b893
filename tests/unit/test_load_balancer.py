"""The load balancer (HAProxy) for the Sentinel topology: settings, the rendered config checked by
Debian's haproxy itself (`haproxy -c`), what its role check really sends, and what each host gets."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.plan.topology import build_topology, local_placement
from cachelayer.render.files import placeholder_passwords, rendered_files
from cachelayer.render.hosts import host_plans, render_install_script, render_nftables
from cachelayer.render.load_balancer import HOST_CONFIG_FILE, connection_load_balancers, render_haproxy_config
from cachelayer.render.monitoring import alert_rules
from cachelayer.render.nodes import Passwords
from support.tls_certificates import make_test_certificates

PASSWORDS = Passwords(
    "app-password-0123456789", "admin-password-0123456789", "repl-password-0123456789", "sentinel-pw-0123456789",
    # $ and # are allowed in passwords: the config must keep them literal (no $VAR, no comment).
    "monitor-pw-$HOME#0123456789",
)


def haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        pytest.fail("haproxy not found: run scripts/setup.sh (it installs Debian's haproxy)", pytrace=False)
    return path


def prod_settings(**redis: object) -> Settings:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], **redis}
    return load_settings(config, "prod")


def haproxy_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    return subprocess.run([haproxy(), "-c", "-f", str(config)], capture_output=True, text=True, check=False)


# ------------------------------------------------------------------------------ settings
def test_on_by_default_for_sentinel_only() -> None:
    assert load_settings({"redis": {"topology": "sentinel"}}, "dev").load_balancer_enabled
    assert not load_settings({"redis": {"topology": "cluster"}}, "dev").load_balancer_enabled
    assert not load_settings({"redis": {"topology": "sentinel"}, "load_balancer": {"enabled": False}}, "dev").load_balancer_enabled


def test_cluster_topology_refuses_a_load_balancer_and_says_why() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"redis": {"topology": "cluster"}, "load_balancer": {"enabled": True}}, "dev")
    assert raised.value.key == "load_balancer.enabled"
    assert "cluster protocol" in str(raised.value)


@pytest.mark.parametrize(
    ("load_balancer", "key", "clash"),
    [
        ({"write_base_port": 7004}, "load_balancer.write_base_port", "client (node 4)"),
        ({"read_base_port": 26380}, "load_balancer.read_base_port", "sentinel"),
        ({"exporter_port": 9122}, "load_balancer.exporter_port", "Redis exporter"),
        ({"read_base_port": 7101}, "load_balancer.read_base_port", "load balancer write (group 2)"),
    ],
)
def test_ports_that_collide_are_refused(load_balancer: dict[str, Any], key: str, clash: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"redis": {"topology": "sentinel"}, "load_balancer": load_balancer}, "dev")
    assert raised.value.key == key
    assert clash in str(raised.value)


def test_check_bounds() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"redis": {"topology": "sentinel"}, "load_balancer": {"fall": 0}}, "dev")
    assert raised.value.key == "load_balancer.fall"


# ------------------------------------------------------------------------------ rendering
def test_haproxy_accepts_the_sandbox_and_host_configs(tmp_path: Path) -> None:
    settings = load_settings({"redis": {"topology": "sentinel"}}, "dev")
    topology = build_topology(settings, local_placement(settings, "127.0.0.1"))
    sandbox = render_haproxy_config(settings, topology, PASSWORDS, "127.0.0.1")
    result = haproxy_check(sandbox, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "'AUTH monitor monitor-pw-$HOME#0123456789'\"\\r\\n\"" in sandbox
    (defaults,) = [line for line in sandbox.splitlines() if line.strip().startswith("default-server")]
    assert "on-marked-down shutdown-sessions" in defaults  # every server


def test_haproxy_accepts_the_tls_host_config(tmp_path: Path) -> None:
    settings = prod_settings(topology="sentinel")
    topology = build_topology(settings)
    ca = make_test_certificates(tmp_path / "tls") / "ca.crt"
    text = render_haproxy_config(settings, topology, PASSWORDS, "127.0.0.1", host="cache-1", ca_file=str(ca))
    assert f"check check-ssl verify required ca-file {ca}" in text
    # Debian's haproxy.service runs it as root, then drops to the haproxy user in its chroot.
    assert "user haproxy" in text and "chroot /var/lib/haproxy" in text
    result = haproxy_check(text.replace("bind 127.0.0.1", "bind 127.0.0.1"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_role_check_sends_the_password_literally_and_asks_for_the_role(tmp_path: Path) -> None:
    """A fake node records what HAProxy's check sends: AUTH with the password as is ($ and #
    included), then INFO replication; it answers role:master, and the server is marked UP."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        listener.settimeout(10)
        with listener, listener.accept()[0] as connection:
            data = b""
            connection.settimeout(5)
            while b"INFO replication\r\n" not in data:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
                if data.endswith(b"\r\n") and data.startswith(b"AUTH") and b"INFO" not in data:
                    connection.sendall(b"+OK\r\n")
            received.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    free = []
    for _ in range(3):
        with socket.create_server(("127.0.0.1", 0)) as probe:
            free.append(probe.getsockname()[1])
    lb = {"write_base_port": free[0], "read_base_port": free[1], "exporter_port": free[2]}
    settings = load_settings(
        {"redis": {"topology": "sentinel", "node_count": 2}, "sentinel": {"ports": [26379], "quorum": 1}, "load_balancer": lb},
        "dev",
    )
    topology = build_topology(settings, local_placement(settings, "127.0.0.1"))
    text = render_haproxy_config(settings, topology, PASSWORDS, "127.0.0.1", node_address=lambda node: "127.0.0.1")
    text = text.replace(f"127.0.0.1:{topology.nodes[0].port} check", f"127.0.0.1:{port} check")
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    process = subprocess.Popen([haproxy(), "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        thread.join(timeout=15)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert received, f"HAProxy's check never connected: {process.stdout.read().decode() if process.stdout else ''}"
    assert received[0] == b"AUTH monitor monitor-pw-$HOME#0123456789\r\nINFO replication\r\n"


# ------------------------------------------------------------------------------ hosts
def test_each_host_with_a_node_gets_a_root_only_config_and_the_package() -> None:
    settings = prod_settings(topology="sentinel")
    topology = build_topology(settings)
    files = rendered_files(settings, topology, placeholder_passwords())
    for plan in host_plans(settings, topology):
        config = files.get(f"hosts/{plan.name}{HOST_CONFIG_FILE}")
        assert (config is not None) == bool(plan.nodes), plan.name
        if config is not None:
            assert "AUTH monitor <secret:monitor_password>" in config
            assert f"bind {plan.address}:7100" in config
            assert "packages+=(haproxy)" in render_install_script(settings, plan)
    cluster = prod_settings(topology="cluster")
    cluster_files = rendered_files(cluster, build_topology(cluster), placeholder_passwords())
    assert not [path for path in cluster_files if path.endswith(HOST_CONFIG_FILE)]


def test_the_firewall_opens_the_load_balancer_like_the_redis_ports(tmp_path: Path) -> None:
    settings = prod_settings(topology="sentinel")
    topology = build_topology(settings)
    plan = host_plans(settings, topology)[0]
    rules = render_nftables(settings, topology, plan)
    redis_ports = next(line for line in rules.splitlines() if "elements = { 7000" in line)
    for port in (7100, 7101, 7102, 7200, 7201, 7202):
        assert f" {port}" in redis_ports, redis_ports
    exporter_ports = rules.split("set exporter_ports", 1)[1].split("}", 1)[0]
    assert "9101" in exporter_ports
    if shutil.which("nft") is not None:
        (tmp_path / "rules.nft").write_text(rules)
        result = subprocess.run(["nft", "-c", "-f", str(tmp_path / "rules.nft")], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_connection_output_and_alerts() -> None:
    settings = prod_settings(topology="sentinel")
    topology = build_topology(settings)
    balancers = connection_load_balancers(settings, topology)
    assert [b["group"] for b in balancers] == ["redis-master-1", "redis-master-2", "redis-master-3"]
    assert balancers[0]["write"] == [f"{n.address}:7100" for n in topology.nodes]
    assert {r.name for r in alert_rules(settings)} >= {"RedisLoadBalancerNoMaster", "RedisLoadBalancerTwoMasters"}
    assert connection_load_balancers(prod_settings(topology="cluster"), build_topology(prod_settings())) == []
