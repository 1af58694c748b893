"""Cluster topology from the rendered files and the bootstrap script, and its security."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox
from cachelayer.sandbox.processes import process_cmdline, process_start_time

from .conftest import BootedSandbox, boot, cluster_client, cluster_nodes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> BootedSandbox:
    return boot(sandbox_factory(7100))


def test_every_node_sees_the_cluster_ok_with_all_slots(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as client:
            info = client.execute_command("CLUSTER INFO")
        assert info["cluster_state"] == "ok", f"{node.name}: {info}"
        assert int(info["cluster_slots_ok"]) == TOTAL_SLOTS, f"{node.name}: {info}"
        assert int(info["cluster_known_nodes"]) == 6, f"{node.name}: {info}"


def test_three_masters_each_with_one_replica(cluster: BootedSandbox) -> None:
    nodes = cluster_nodes(cluster.sandbox, 7100)
    masters = {d["node_id"]: endpoint for endpoint, d in nodes.items() if "master" in d["flags"]}
    replicas_of: dict[str, list[str]] = {m: [] for m in masters}
    for endpoint, description in nodes.items():
        if "slave" in description["flags"]:
            replicas_of[description["master_id"]].append(endpoint)
    assert len(masters) == 3, nodes
    assert all(len(r) == 1 for r in replicas_of.values()), replicas_of
    served = sum(int(high) - int(low) + 1 for d in nodes.values() for low, high in d["slots"])
    assert served == TOTAL_SLOTS


def test_app_user_reads_and_writes_through_the_cluster_client(cluster: BootedSandbox) -> None:
    client: RedisCluster = cluster_client(cluster.sandbox)
    try:
        values = {f"course:{i}": f"lesson-{i}" for i in range(200)}
        for key, value in values.items():
            assert client.set(key, value)
        assert {key: client.get(key) for key in values} == values
        # The keys landed on all three shards, so redirects were followed.
        owners = {client.get_node_from_key(key).name for key in values}
        assert len(owners) == 3, owners
    finally:
        client.close()


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("maxmemory", str(2 * 1024**3)),  # 2gb in the stack: 2147483648
        ("maxmemory-policy", "allkeys-lru"),
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("save", "3600 1 300 100 60 10000"),
        ("cluster-node-timeout", "5000"),
    ],
)
def test_configuration_is_what_the_stack_asks_for(cluster: BootedSandbox, directive: str, expected: str) -> None:
    for node in cluster.sandbox.topology.nodes:
        with cluster.sandbox.admin_client(node) as client:
            assert client.config_get(directive) == {directive: expected}, node.name


# ------------------------------------------------------------------------------------- security
def test_anonymous_connection_is_refused(cluster: BootedSandbox) -> None:
    # A raw RESP client: redis-py 8 opens with HELLO, whose refusal reads differently.
    for node in cluster.sandbox.topology.nodes:
        with socket.create_connection((node.address, node.port), timeout=2) as anonymous:
            anonymous.sendall(b"GET course:1\r\n")
            reply = anonymous.recv(256)
        assert reply.startswith(b"-NOAUTH"), f"{node.name}: {reply!r}"


# Outside the app user's allowlist (acl_policy.py); the last ones got through the old denylist.
DISABLED = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "1mb"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("KEYS", "*"),
    ("MONITOR",),
    ("SAVE",),
    ("BGSAVE",),
    ("BGREWRITEAOF",),
    ("REPLICAOF", "NO", "ONE"),
    ("CLUSTER", "RESET"),
    ("CLUSTER", "FAILOVER"),
    ("FAILOVER",),
    ("ACL", "LIST"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "LIST"),
    ("MODULE", "LIST"),
    ("SYNC",),
    ("PSYNC", "?", "-1"),
    ("CLIENT", "KILL", "TYPE", "replica"),
    ("CLIENT", "PAUSE", "1000"),
    ("EVAL", "return 1", "0"),
    ("MIGRATE", "127.0.0.1", "6390", "course:1", "0", "1000"),
    ("SLOWLOG", "RESET"),
]


@pytest.mark.parametrize("command", DISABLED, ids=lambda c: " ".join(c))
def test_app_user_cannot_run_disabled_commands(cluster: BootedSandbox, command: tuple[str, ...]) -> None:
    sandbox = cluster.sandbox
    client = redis.Redis(
        host="127.0.0.1", port=sandbox.topology.nodes[0].port, username=USERS.app,
        password=sandbox.passwords.app, socket_timeout=2,
    )
    try:
        if command[0] == "DEBUG":
            # Redis refuses DEBUG to every user (enable-debug-command no) before the ACL check.
            with pytest.raises(redis.ResponseError, match=r"no permissions|DEBUG command not allowed"):
                client.execute_command(*command)
        else:
            # redis-py turns the -NOPERM reply into NoPermissionError (and drops the prefix).
            with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
                client.execute_command(*command)
        assert client.ping()  # still connected, still up: the command never ran
    finally:
        client.close()
    # The ACL itself denies it too (ACL DRYRUN asks the ACL without running the command).
    with sandbox.admin_client(sandbox.topology.nodes[0]) as admin:
        verdict = admin.execute_command("ACL", "DRYRUN", USERS.app, *command)
    assert "no permissions" in str(verdict), verdict


def test_app_user_has_the_cluster_client_commands(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    client = redis.Redis(
        host="127.0.0.1", port=sandbox.topology.nodes[0].port, username=USERS.app,
        password=sandbox.passwords.app, socket_timeout=2, decode_responses=True,
    )
    try:
        assert len(client.execute_command("CLUSTER", "SLOTS")) == 3
        assert client.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
        assert client.execute_command("CLUSTER", "KEYSLOT", "course:1") == key_slot(b"course:1")
        assert client.execute_command("READONLY") in ("OK", True)
    finally:
        client.close()


def test_replicas_are_linked_with_the_replication_user(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    replicas = 0
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as client:
            replication = client.info("replication")
            if replication["role"] != "slave":
                continue
            replicas += 1
            assert replication["master_link_status"] == "up", f"{node.name}: {replication}"
            assert client.config_get("masteruser") == {"masteruser": USERS.replication}, node.name
    assert replicas == 3
    # The replication user can sync but cannot read data.
    replication_user = redis.Redis(
        host="127.0.0.1", port=sandbox.topology.nodes[0].port, username=USERS.replication,
        password=sandbox.passwords.replication, socket_timeout=2,
    )
    try:
        assert replication_user.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            replication_user.get("course:1")
    finally:
        replication_user.close()


def _secrets(sandbox: LocalSandbox) -> list[str]:
    p = sandbox.passwords
    return [p.app, p.admin, p.replication, p.sentinel]


def test_no_password_on_any_command_line(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    lines = [process_cmdline(record.pid) for record in sandbox.running().values()]
    assert len(lines) == 6 and all("redis-server" in line for line in lines), lines
    # The bootstrap's redis-cli processes were seen while it ran (the watch scans /proc).
    assert any("redis-cli" in line and "--cluster" in line for line in cluster.bootstrap_cmdlines), (
        "the /proc watch saw no redis-cli during the bootstrap, so it proves nothing"
    )
    for line in [*lines, *cluster.bootstrap_cmdlines]:
        for secret in _secrets(sandbox):
            assert secret not in line, f"a password is on the command line: {line[:60]}…"


def test_secret_files_are_private(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    assert sandbox.passwords_file.stat().st_mode & 0o777 == 0o600
    for node in sandbox.topology.nodes:
        paths = sandbox.paths(node)
        for secret_file in (paths.acl_file, paths.auth_file):
            assert Path(secret_file).stat().st_mode & 0o777 == 0o600, secret_file
        # The ACL file holds hashes, never the clear-text password.
        acl = Path(paths.acl_file).read_text()
        assert all(secret not in acl for secret in _secrets(sandbox)), paths.acl_file


def test_down_never_signals_a_process_it_did_not_start(
    sandbox_factory: Callable[..., LocalSandbox], tmp_path: Path
) -> None:
    """A recorded pid that now belongs to another process (pid reuse) is left alone."""
    sandbox = sandbox_factory(7190, workdir=tmp_path / "sb")
    sandbox.start(names=["redis-7190"])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = json.loads(sandbox.state_file.read_text())
        real_pid = state["processes"]["redis-7190"]["pid"]
        state["processes"]["redis-7190"]["pid"] = stranger.pid  # as if the pid had been recycled
        sandbox.state_file.write_text(json.dumps(state))
        result = sandbox.down()
        assert result.not_ours == ("redis-7190",)
        assert stranger.poll() is None, "down() signalled a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()
        state["processes"]["redis-7190"]["pid"] = real_pid
        sandbox.state_file.write_text(json.dumps(state))
        sandbox.down()
    assert process_start_time(real_pid) is None
