"""The load balancer (HAProxy) for the Sentinel topology: settings, the rendered config checked by
Debian's haproxy itself (`haproxy -c`), what its role check really sends, and what each host gets."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.plan.topology import build_topology, local_placement
from cachelayer.render.files import placeholder_passwords, rendered_files
from cachelayer.render.hosts import host_plans, render_install_script, render_nftables
from cachelayer.render.load_balancer import (
    HOST_ADMIN_SOCKET,
    HOST_CONFIG_FILE,
    HOST_SERVER_STATE_FILE,
    connection_load_balancers,
    render_haproxy_config,
    save_server_state_command,
)
from cachelayer.render.monitoring import alert_rules
from cachelayer.render.nodes import Passwords
from support.program_harness import run_program, unwrap
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


# ------------------------------------------------------------------------------ reloads
def admin_command(socket_path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as admin:
        admin.settimeout(5)
        admin.connect(str(socket_path))
        admin.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: admin.recv(65536), b"")).decode()


def server_states(socket_path: Path) -> dict[tuple[str, str], str]:
    """(proxy, server) -> srv_op_state (0 DOWN, 2 UP) from `show servers state`."""
    lines = admin_command(socket_path, "show servers state").splitlines()[2:]
    return {(f[1], f[3]): f[5] for f in (line.split() for line in lines if line.strip())}


def test_a_reload_keeps_the_servers_states_and_takes_the_new_configs_addresses(tmp_path: Path) -> None:
    """The command the hosts run before `systemctl reload` (and the sandbox before `-sf`) saves
    the running HAProxy's states; the new process starts from them: a server its checks found
    DOWN is not taken as UP again, as a reload without them would until its first check fails.
    A server the new config moves to another port starts from the new config instead.

    The nodes are sockets that never answer: a check times out after one interval (100 ms in
    the first process, marking every server DOWN; 60 s in the second, so no check of the second
    process ends during the test and every state it shows is the one it started with)."""
    sinks = [socket.create_server(("127.0.0.1", 0), backlog=1024) for _ in range(2)]
    sink_ports = [sink.getsockname()[1] for sink in sinks]
    free = []
    for _ in range(7):
        with socket.create_server(("127.0.0.1", 0)) as probe:
            free.append(probe.getsockname()[1])
    lb = {"write_base_port": free[0], "read_base_port": free[3], "exporter_port": free[6]}
    admin, state, config = tmp_path / "admin.sock", tmp_path / "server-state", tmp_path / "haproxy.cfg"
    settings = load_settings({"redis": {"topology": "sentinel"}}, "dev")
    topology = build_topology(settings, local_placement(settings, "127.0.0.1"))
    moved = topology.nodes[0]

    def render(check_interval_ms: int, moved_port: int) -> str:
        checks = {**lb, "check_interval_ms": check_interval_ms, "fall": 1}
        text = render_haproxy_config(load_settings({"redis": {"topology": "sentinel"}, "load_balancer": checks}, "dev"),
                                     topology, PASSWORDS, "127.0.0.1", admin_socket=str(admin), server_state_file=str(state))
        for node in topology.nodes:
            text = text.replace(f"127.0.0.1:{node.port} ", f"127.0.0.1:{moved_port if node == moved else sink_ports[0]} ")
        return text

    config.write_text(render(100, sink_ports[0]))
    log = tmp_path / "haproxy.log"
    first = subprocess.Popen([haproxy(), "-db", "-f", str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    processes = [first]
    try:
        write_side = [(f"{m.group}-write", n.name) for m in topology.masters for n in (m, *topology.replicas_of(m))]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if all(server_states(admin).get(key) == "0" for key in write_side):
                    break
            time.sleep(0.05)
        assert admin.exists(), log.read_text()
        assert all(server_states(admin).get(key) == "0" for key in write_side), server_states(admin)
        config.write_text(render(60_000, sink_ports[1]))
        saved = subprocess.run(["sh", "-c", save_server_state_command("", str(admin), str(state), str(config))],
                               capture_output=True, text=True, check=False)
        assert saved.returncode == 0, saved.stderr
        second = subprocess.Popen([haproxy(), "-db", "-f", str(config), "-x", str(admin), "-sf", str(first.pid)],
                                  stdout=log.open("a"), stderr=subprocess.STDOUT)
        processes.append(second)
        first.wait(timeout=15)  # -sf: the old one leaves once the new one runs
        states = server_states(admin)
        moved_key = (f"{moved.group}-write", moved.name)
        assert all(states[key] == "0" for key in write_side if key != moved_key), states
        assert states[moved_key] == "2", states  # as any server new to HAProxy: UP until its first check
        assert f" {sink_ports[1]} " in admin_command(admin, f"show servers state {moved.group}-write")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        for sink in sinks:
            sink.close()


def test_the_hosts_save_the_servers_states_just_before_the_reload() -> None:
    run = run_program("prod", config_overrides={"redis": {**read_stack_config("prod")["redis"], "topology": "sentinel"}})
    config = render_haproxy_config(prod_settings(topology="sentinel"), build_topology(prod_settings(topology="sentinel")),
                                   PASSWORDS, "10.0.0.11", host="cache-1", ca_file="/etc/redis/tls/ca.crt")
    assert f"server-state-file {HOST_SERVER_STATE_FILE}" in config and "load-server-state-from-file global" in config
    assert f"stats socket {HOST_ADMIN_SOCKET} " in config
    command = unwrap(run.named("redis-cache-1-load-balancer").inputs)
    for key in ("create", "update"):
        line = str(command[key])
        save = line.index(f"{HOST_ADMIN_SOCKET} {HOST_SERVER_STATE_FILE} {HOST_CONFIG_FILE}")
        assert line.index("haproxy -c -q") < save < line.index("systemctl reload-or-restart haproxy.service"), line
    # Saving reads the socket and the config: no password on the command line.
    assert "AUTH" not in str(command["create"]) and "password" not in str(command["create"]).lower()
