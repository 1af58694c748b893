"""Fixtures that start real redis-server processes through LocalSandbox.

Each fixture has its own base port (71xx, away from a user's sandbox on 7000) and a tmp_path
working directory, and calls `down()` even when the test fails. A missing redis-server is a
failure, not a skip: a suite that skips its integration tests proves nothing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.plan.topology import Placement
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from cachelayer.sandbox.processes import process_cmdline

README_TEST_COMMAND = "scripts/test.sh"


def require_redis() -> None:
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found on PATH: the integration tests need a real Redis. "
            f"Run the README's test command `{README_TEST_COMMAND}`, which installs it.",
            pytrace=False,
        )


def make_settings(
    base_port: int, topology: str = "cluster", sentinel: dict[str, Any] | None = None, **redis_overrides: Any
) -> tuple[Any, dict[str, Any]]:
    """Default settings (the dev stack's values) with the test's ports and overrides."""
    config: dict[str, Any] = {"redis": {"base_port": base_port, **redis_overrides}}
    if topology == "sentinel":
        config["sentinel"] = {"ports": [base_port + 20000 + i for i in range(3)], **(sentinel or {})}
    return sandbox_settings(config, "test", topology=topology)


def refused_logins(address: str, port: int, attempts: list[tuple[str, str]]) -> None:
    """AUTH with each (user, password) on one plain connection, each answered WRONGPASS. Not
    redis-py: it sends CLIENT SETINFO first (refused with NOAUTH before any AUTH) and retries."""
    with socket.create_connection((address, port), timeout=5) as connection, connection.makefile("rb") as replies:
        for user, password in attempts:
            words = [b"AUTH", user.encode(), password.encode()]
            connection.sendall(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
            reply = replies.readline()
            assert reply.startswith(b"-WRONGPASS"), reply


def cluster_client(sandbox: LocalSandbox, user: str = USERS.app) -> RedisCluster:
    password = sandbox.passwords.app if user == USERS.app else sandbox.passwords.admin
    return RedisCluster(
        startup_nodes=[ClusterNode(n.address, n.port) for n in sandbox.topology.nodes],
        username=user,
        password=password,
        decode_responses=True,
        socket_timeout=2,
    )


def cluster_nodes(sandbox: LocalSandbox, port: int) -> dict[str, dict[str, Any]]:
    """CLUSTER NODES as seen by one node, keyed by endpoint (address:port)."""
    with sandbox.admin_client(port) as client:
        parsed: dict[str, dict[str, Any]] = client.execute_command("CLUSTER NODES")
    return parsed


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy (errors count as not yet); fail naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (redis.RedisError, OSError) as error:
            last_error = error
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


@dataclass
class CmdlineWatch:
    """Every distinct command line seen in /proc while it runs (catches short-lived redis-cli)."""

    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _scan(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    line = process_cmdline(int(proc.name))
                    if line:
                        self.seen.add(line)
            time.sleep(0.005)

    def __enter__(self) -> CmdlineWatch:
        self._thread = threading.Thread(target=self._scan, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


@dataclass
class BootedSandbox:
    sandbox: LocalSandbox
    bootstrap_output: str
    bootstrap_cmdlines: set[str]


def boot(sandbox: LocalSandbox) -> BootedSandbox:
    """up(), step by step, watching command lines while the bootstrap script runs."""
    sandbox.start()
    with CmdlineWatch() as watch:
        output = sandbox.bootstrap()
    sandbox.wait_converged()
    return BootedSandbox(sandbox, output, watch.seen)


@pytest.fixture(scope="module")
def sandbox_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalSandbox]]:
    """Builds sandboxes; every one is taken down at the end of the module, pass or fail."""
    require_redis()
    made: list[LocalSandbox] = []

    def factory(
        base_port: int,
        topology: str = "cluster",
        workdir: Path | None = None,
        sentinel: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> LocalSandbox:
        settings, config = make_settings(base_port, topology, sentinel, **overrides)
        sandbox = LocalSandbox(settings, workdir or tmp_path_factory.mktemp(f"sandbox-{base_port}"), config=config)
        made.append(sandbox)
        return sandbox

    yield factory
    for sandbox in reversed(made):
        sandbox.down()


# ----------------------------------------------------------------------------- network namespaces
SUBNET_PREFIX = "10.231.0"
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.1"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class NetnsHosts:
    """Six 'hosts': one network namespace each, joined by a bridge in the root namespace.

    Host i has address 10.231.0.(11+i) on its eth0; the root side of its veth is `links[i]`,
    so `ip link set <links[i]> down` cuts host i off from every other host and from the test."""

    namespaces: list[str]
    links: list[str]
    addresses: list[str]
    bridge: str

    def placement(self) -> Placement:
        return Placement(tuple(zip(self.namespaces, self.addresses, strict=True)), ())

    @staticmethod
    def prefix(host: str) -> list[str]:
        return ["ip", "netns", "exec", host]

    def cut(self, index: int) -> None:
        ip("link", "set", self.links[index], "down")

    def restore(self, index: int) -> None:
        ip("link", "set", self.links[index], "up")


@pytest.fixture(scope="module")
def netns_hosts() -> Iterator[NetnsHosts]:
    require_redis()
    if shutil.which("ip") is None or ip("netns", "list", check=False).returncode != 0:
        pytest.fail("`ip netns` does not work here: the netns tests need root and iproute2", pytrace=False)
    tag = f"{time.time_ns() % 100000:05d}"
    hosts = NetnsHosts([], [], [], f"clb{tag}")
    try:
        ip("link", "add", hosts.bridge, "type", "bridge")
        ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", hosts.bridge)
        ip("link", "set", hosts.bridge, "up")
        for i in range(6):
            namespace, link, address = f"clt{tag}h{i}", f"clv{tag}h{i}", f"{SUBNET_PREFIX}.{11 + i}"
            ip("netns", "add", namespace)
            hosts.namespaces.append(namespace)
            ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            hosts.links.append(link)
            hosts.addresses.append(address)
            ip("link", "set", link, "master", hosts.bridge, "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        yield hosts
    finally:
        for namespace in hosts.namespaces:
            # Only processes inside a namespace this fixture created: they are ours.
            pids = ip("netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], check=False)
            ip("netns", "delete", namespace, check=False)  # also removes the veth pair
        for link in hosts.links:
            ip("link", "delete", link, check=False)
        ip("link", "delete", hosts.bridge, check=False)
