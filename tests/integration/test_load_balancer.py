"""HAProxy in front of the Sentinel groups, on real processes: haproxy, redis-server, sentinels.

A plain redis-py client (no Sentinel) writes through HAProxy's write port while a Sentinel-aware
client writes through the sentinels; the group's master is killed (SIGKILL). Both must write
again after the failover and neither may lose a write a replica acknowledged (WAIT 1). How long
each was refused is measured and printed (`-s`), not asserted: benchmarks/load_balancer.py is
where the numbers come from.

Ports 758x (sentinels 2758x), HAProxy 7590-7598. down-after 2 s so the failover is quick.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachelayer.plan.topology import Node
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.load_balancer import SandboxLoadBalancer
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from support.failover_writes import FailoverWriter, measure, plain_client, sentinel_client, table
from support.sandbox_processes import kill

from .conftest import require_redis, wait_until
from .test_rotate import assert_old_refused_everywhere, rotate

pytestmark = pytest.mark.integration

BASE = 7580
LOAD_BALANCER = {"write_base_port": 7590, "read_base_port": 7594, "exporter_port": 7598, "check_interval_ms": 500}
GROUP = "redis-master-1"


def lb_config() -> dict[str, Any]:
    return {
        "redis": {"base_port": BASE},
        "sentinel": {"ports": [BASE + 20000 + i for i in range(3)], "down_after_milliseconds": 2000, "failover_timeout": 10000},
        "load_balancer": LOAD_BALANCER,
    }


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxLoadBalancer]:
    require_redis()
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy not found on PATH: scripts/setup.sh installs it (apt-get install haproxy)", pytrace=False)
    settings, config = sandbox_settings(lb_config(), "test", topology="sentinel")
    sandbox = LocalSandbox(settings, tmp_path_factory.mktemp("sandbox-lb"), config=config)
    balancer = SandboxLoadBalancer(sandbox)
    try:
        sandbox.up()
        balancer.up()
        yield balancer
    finally:
        balancer.down()
        sandbox.down()


def master_port(sandbox: LocalSandbox, group: str = GROUP) -> int:
    with sandbox.admin_client(sandbox.topology.sentinels[0]) as client:
        reply: Any = client.sentinel_get_master_addr_by_name(group)
    return int(reply[1])


def acknowledged_more_than(writer: FailoverWriter, count: int) -> bool:
    return len(writer.acknowledged) > count


def writes_since(writer: FailoverWriter, since: float) -> bool:
    return any(sent >= since for sent, _ in writer.written_at)


def app_client(balancer: SandboxLoadBalancer, port: int) -> redis.Redis:
    return redis.Redis(
        host=balancer.address, port=port, username=USERS.app, password=balancer.sandbox.passwords.app,
        socket_timeout=2, decode_responses=True,
    )


def test_write_port_reaches_the_master_read_port_a_replica(balanced: SandboxLoadBalancer) -> None:
    sandbox = balanced.sandbox
    assert balanced.config_file.stat().st_mode & 0o777 == 0o600
    assert sandbox.passwords.monitor in balanced.config_file.read_text()
    for index, endpoint in enumerate(balanced.endpoints):
        write_port = int(endpoint.write.rsplit(":", 1)[1])
        read_port = int(endpoint.read.rsplit(":", 1)[1])
        writes, reads = app_client(balanced, write_port), app_client(balanced, read_port)
        try:
            assert writes.set(f"lb-probe:{index}", "x")
            assert writes.execute_command("WAIT", 1, 2000) >= 1
            # A replica refuses writes: the read port did not reach the master.
            with pytest.raises(redis.ReadOnlyError):
                reads.set(f"lb-probe:{index}", "y")
            assert reads.get(f"lb-probe:{index}") == "x"
        finally:
            writes.close()
            reads.close()
        master = sandbox.topology.masters[index]
        assert master_port(sandbox, master.group) == master.port
    up = balanced.servers_up()
    for master in sandbox.topology.masters:
        (replica,) = sandbox.topology.replicas_of(master)
        assert up[f"{master.group}-write"] == [master.name], up
        # The replica serves reads; the master is UP as the backup (used only with no replica up).
        assert up[f"{master.group}-read"] == [replica.name, f"{master.name}-as-master"], up


class PlainWriter(threading.Thread):
    """A plain redis-py client (no Sentinel, no retries) writing through HAProxy's write ports;
    every error of any kind (READONLY, a refused or cut connection) is kept. `fresh`: a new
    connection for every write, so each reaches whatever process and server HAProxy picks then;
    else one connection held throughout."""

    def __init__(self, balancer: SandboxLoadBalancer, ports: list[int], fresh: bool) -> None:
        super().__init__(daemon=True, name=f"plain-{'fresh' if fresh else 'held'}")
        self.balancer, self.ports, self.fresh = balancer, ports, fresh
        self.writes = 0
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=self.balancer.address, port=port, username=USERS.app, password=self.balancer.sandbox.passwords.app,
            socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), decode_responses=True,
        )

    def run(self) -> None:
        held = {port: self.client(port) for port in self.ports}
        for n in itertools.count():
            if self.stopped.is_set():
                break
            port = self.ports[n % len(self.ports)]
            client = self.client(port) if self.fresh else held[port]
            try:
                client.set(f"lb-rotation:{self.name}:{n % 100}", n)
                self.writes += 1
            except redis.RedisError as error:
                self.errors.append(repr(error))
            finally:
                if self.fresh:
                    client.close()
            time.sleep(0.005)
        for client in held.values():
            client.close()


def quit_calls(sandbox: LocalSandbox, node: Node) -> int:
    with sandbox.admin_client(node) as client:
        stats: Any = client.info("commandstats")
    return int(stats.get("cmdstat_quit", {}).get("calls", 0))


def test_a_monitor_rotation_reloads_haproxy_and_no_write_through_it_fails(
    balanced: SandboxLoadBalancer, capsys: pytest.CaptureFixture[str],
) -> None:
    """`rotate monitor --phase add` reloads HAProxy with the new password, keeping the servers'
    states (no new connection reaches a replica) and the held connections; after `--phase remove`
    every group still has its master UP, and the old password is refused everywhere."""
    sandbox = balanced.sandbox
    old_password, new_password = sandbox.passwords.monitor, secrets.token_urlsafe(24)
    old_process = balanced.running()
    assert old_process is not None
    write_ports = [int(endpoint.write.rsplit(":", 1)[1]) for endpoint in balanced.endpoints]
    writers = [PlainWriter(balanced, write_ports, fresh=True), PlainWriter(balanced, write_ports, fresh=False)]
    for writer in writers:
        writer.start()
    try:
        wait_until(lambda: all(w.writes > 50 for w in writers), 15, "the first writes through HAProxy")
        code, added = rotate(sandbox, capsys, USERS.monitor, "add", new_password)
        assert code == 0 and added["phase"] == "two passwords", added
        reloaded = balanced.running()
        assert reloaded is not None and reloaded.pid != old_process.pid, "haproxy was not reloaded"
        assert new_password in balanced.config_file.read_text()
        code, removed = rotate(sandbox, capsys, USERS.monitor, "remove", new_password)
        assert code == 0 and removed["phase"] == "one password", removed
        # The writers keep writing while every node gets several checks with the old password
        # gone: a check that logs in ends with QUIT (a failed one stops at its AUTH), and two
        # proxies check each node, so 6 QUITs are 3 rounds past `fall` (2).
        quits = {node.name: quit_calls(sandbox, node) for node in sandbox.topology.nodes}
        wait_until(lambda: all(quit_calls(sandbox, n) >= quits[n.name] + 6 for n in sandbox.topology.nodes), 20,
                   "HAProxy's checks to log in on every node after the removal")
    finally:
        for writer in writers:
            writer.stopped.set()
            writer.join(timeout=10)
    for writer in writers:
        assert writer.errors == [], f"{writer.name}: {len(writer.errors)} errors, first {writer.errors[:3]}"
    up = balanced.servers_up()
    for master in sandbox.topology.masters:
        assert up[f"{master.group}-write"] == [master.name], up
    assert_old_refused_everywhere(sandbox, USERS.monitor, old_password, new_password)
    # The password file holds the new one: a later `sandbox up` renders HAProxy's checks from it.
    assert sandbox.passwords.monitor == new_password


def test_a_plain_client_through_haproxy_and_a_sentinel_client_across_a_killed_master(
    balanced: SandboxLoadBalancer,
) -> None:
    sandbox = balanced.sandbox
    old = sandbox.topology.masters[0]
    (new,) = sandbox.topology.replicas_of(old)
    write_port = int(balanced.endpoints[0].write.rsplit(":", 1)[1])
    writers = [
        FailoverWriter("plain redis-py through HAProxy", "lb", plain_client(balanced.address, write_port, sandbox.passwords.app)),
        FailoverWriter("redis-py Sentinel client", "sn", sentinel_client(sandbox, GROUP)),
    ]
    for writer in writers:
        writer.start()
    try:
        for writer in writers:
            wait_until(partial(acknowledged_more_than, writer, 50), 15, f"{writer.name}'s first acknowledged writes")
        killed_at = time.monotonic()
        kill(sandbox, old.name)  # SIGKILL: the realistic loss of a master
        sandbox.stop([old.name])
        wait_until(lambda: master_port(sandbox) == new.port, 30, f"the sentinels to name {new.name} master")
        promoted_at = time.monotonic()
        for writer in writers:
            wait_until(partial(writes_since, writer, promoted_at), 30, f"{writer.name} to write again ({writer.last_error})")
    finally:
        for writer in writers:
            writer.stop()
    with sandbox.admin_client(new) as master:
        rows = [measure(writer, killed_at, master) for writer in writers]
    print("\n" + table(rows))
    for row in rows:
        assert row.lost == 0, f"{row.client} lost {row.lost} acknowledged writes"
        assert row.acknowledged > 50, row
    # The exporter answers with HAProxy's metrics, and shows the new master UP for the group.
    metrics = balanced.metrics()
    assert "haproxy_process_" in metrics and "haproxy_server_status" in metrics
    wait_until(lambda: balanced.servers_up().get(f"{GROUP}-write") == [new.name], 10, f"{new.name} UP on the write side")
    # With its only replica promoted, the group reads from its master (the backup) meanwhile.
    wait_until(lambda: balanced.servers_up().get(f"{GROUP}-read") == [f"{new.name}-as-master"], 10,
               f"{new.name} out of the read side's replicas, in as its master")
