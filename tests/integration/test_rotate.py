"""Password rotation with no downtime (issue 24 part 1), on real redis-server processes.

The cluster sandbox rotates `app`, `replication` and `admin` through `cachelayer rotate`; the
sentinel sandbox rotates `sentinel`, `replication` and `app`. Throughout a rotation a client
holding the old password and one switching to the new keep writing, each reconnecting (and so
authenticating again) every few writes, with 0 authentication errors; replicas stay linked and
never resync in full, even when their link is cut and remade after the old password is gone;
sentinels keep their quorum; and afterwards the old password is refused by every process.
A node that stops answering in the middle of either phase stops the command with an error naming
it; every node still accepts a password that works, and re-running the phase finishes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.cli.app import main
from cachelayer.cli.common import ExitCode, Runtime
from cachelayer.cli.rotate import NEW_PASSWORD_ENV
from cachelayer.ops.rotate import RotationError, add_password, logs_in, remove_old_passwords
from cachelayer.ops.target import Endpoint, Target
from cachelayer.plan.topology import Node, SentinelNode
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox
from cachelayer.sandbox.monitoring import SandboxMonitoring
from cachelayer.sandbox.targets import target_of_sandbox

from .conftest import boot, wait_until

pytestmark = pytest.mark.integration

CLUSTER_BASE = 7530
SENTINEL_BASE = 7560


def new_password() -> str:
    return secrets.token_urlsafe(24)


def password_of(sandbox: LocalSandbox, user: str) -> str:
    password: str = getattr(sandbox.passwords, user)
    return password


def processes(sandbox: LocalSandbox) -> list[Node | SentinelNode]:
    return [*sandbox.topology.nodes, *sandbox.topology.sentinels]


def accepts(process: Node | SentinelNode, user: str, password: str) -> bool:
    """A fresh connection logs in as `user` (redis-py authenticates while connecting)."""
    return logs_in(host=process.address, port=process.port, username=user, password=password, socket_timeout=2)


def holders(sandbox: LocalSandbox, user: str) -> list[Node | SentinelNode]:
    """The processes that know the user (every node; the sentinels know all five users too)."""
    found = []
    for process in processes(sandbox):
        with sandbox.admin_client(process) as client:
            if client.acl_getuser(user) is not None:
                found.append(process)
    return found


def rotate(sandbox: LocalSandbox, capsys: pytest.CaptureFixture[str], user: str, phase: str,
           password: str | None = None) -> tuple[int, dict[str, Any]]:
    """`cachelayer rotate USER --phase PHASE --json` on the sandbox, the password in the environment."""
    env = {NEW_PASSWORD_ENV: password} if password else {}
    code = main(["rotate", user, "--phase", phase, "--stack", "test", "--workdir", str(sandbox.workdir), "--json"],
                runtime=Runtime(env=env))
    captured = capsys.readouterr()
    for secret in [password, *(getattr(sandbox.passwords, u) for u in ("app", "admin", "replication", "sentinel", "monitor"))]:
        assert not secret or (secret not in captured.out and secret not in captured.err), "a password was printed"
    return code, json.loads(captured.out)


# ---------------------------------------------------------------------------- writers
class Writer(threading.Thread):
    """Writes through a cluster (or a sentinel group's master) as `app`, opening a new client every
    few writes so every moment of the rotation sees fresh AUTHs. Counts authentication errors
    apart from any other error."""

    def __init__(self, connect: Callable[[str], Any], password: str, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.connect = connect
        self.password = password
        self.writes = 0
        self.auth_errors = 0
        self.other_errors: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            client = None
            try:
                client = self.connect(self.password)
                for _ in range(10):
                    n += 1
                    client.set(f"rotate:{self.name}:{n % 500}", n)
                    self.writes += 1
            except redis.RedisError as error:
                if isinstance(error, redis.AuthenticationError) or "WRONGPASS" in str(error):
                    self.auth_errors += 1
                else:
                    self.other_errors.append(repr(error))
            finally:
                if client is not None:
                    client.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)
        assert not self.is_alive(), f"{self.name} did not stop"

    def assert_clean(self) -> None:
        assert self.writes > 50, f"{self.name} wrote only {self.writes} times"
        assert self.auth_errors == 0, f"{self.name}: {self.auth_errors} authentication errors"
        assert self.other_errors == [], f"{self.name}: {self.other_errors[:3]}"


def cluster_connect(sandbox: LocalSandbox) -> Callable[[str], Any]:
    def connect(password: str) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode(n.address, n.port) for n in sandbox.topology.nodes],
                            username=USERS.app, password=password, decode_responses=True, socket_timeout=2)
    return connect


def sentinel_connect(sandbox: LocalSandbox) -> Callable[[str], Any]:
    """The application's Sentinel client: asks a sentinel (as `app`) for group 1's master."""
    def connect(password: str) -> redis.Redis:
        sentinels = [(s.address, s.port) for s in sandbox.topology.sentinels]
        watcher = redis.Sentinel(sentinels, socket_timeout=2,
                                 sentinel_kwargs={"username": USERS.app, "password": password, "socket_timeout": 2})
        return watcher.master_for(sandbox.topology.masters[0].group, username=USERS.app, password=password,
                                  socket_timeout=2)
    return connect


@pytest.fixture
def writers(request: pytest.FixtureRequest) -> Iterator[list[Writer]]:
    """Writers started by the test, stopped even when it fails."""
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stopped.set()


def start_writers(started: list[Writer], connect: Callable[[str], Any], password: str) -> tuple[Writer, Writer]:
    old, switching = Writer(connect, password, "holds-old"), Writer(connect, password, "switches")
    for writer in (old, switching):
        writer.start()
        started.append(writer)
    return old, switching


# ------------------------------------------------------------------------- replication
def replication_facts(sandbox: LocalSandbox) -> dict[str, dict[str, Any]]:
    """Per node: role, link, replication id, full and partial syncs served."""
    facts = {}
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as client:
            info = client.info("replication") | client.info("stats")
        facts[node.name] = {
            "role": info["role"],
            "link": info.get("master_link_status", "-"),
            "replid": info["master_replid"],
            "sync_full": info["sync_full"],
            "sync_partial_ok": info["sync_partial_ok"],
        }
    return facts


def assert_no_full_resync(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
    for name, fact in after.items():
        assert fact["role"] == before[name]["role"], f"{name} changed role"
        assert fact["replid"] == before[name]["replid"], f"{name}: a new replication history"
        assert fact["sync_full"] == before[name]["sync_full"], f"{name} served a full resync"
        if fact["role"] == "slave":
            assert fact["link"] == "up", f"{name}: link {fact['link']}"


def relink_replicas(sandbox: LocalSandbox) -> None:
    """Cut every replica's link at its master: each replica logs in again with its current
    masterauth; wait until all are linked."""
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node) as client:
            if client.info("replication")["role"] == "master":
                client.execute_command("CLIENT", "KILL", "TYPE", "replica")

    def all_linked() -> bool:
        return all(f["link"] == "up" for f in replication_facts(sandbox).values() if f["role"] == "slave")

    wait_until(all_linked, 20, "every replica linked again")


def full_rotation(sandbox: LocalSandbox, capsys: pytest.CaptureFixture[str], user: str,
                  between: Callable[[str], None] = lambda new: None) -> tuple[str, str]:
    """add, `between` (the application switches), remove; returns (old, new)."""
    old, new = password_of(sandbox, user), new_password()
    code, status = rotate(sandbox, capsys, user, "add", new)
    assert (code, status.get("phase")) == (ExitCode.OK, "two passwords"), status
    assert all(p["accepts_new"] and p["passwords"] == 2 for p in status["processes"]), status
    code, status = rotate(sandbox, capsys, user, "status")
    assert (code, status.get("phase")) == (ExitCode.OK, "two passwords"), "the phase is read from the deployment"
    between(new)
    code, status = rotate(sandbox, capsys, user, "remove", new)
    assert (code, status.get("phase")) == (ExitCode.OK, "one password"), status
    assert all(p["accepts_new"] for p in status["processes"]), status
    assert password_of(sandbox, user) == new, "the sandbox keeps the new password for its next start"
    return old, new


def assert_old_refused_everywhere(sandbox: LocalSandbox, user: str, old: str, new: str) -> None:
    for process in holders(sandbox, user):
        assert not accepts(process, user, old), f"{process.name} still accepts the old {user} password"
        assert accepts(process, user, new), f"{process.name} refuses the new {user} password"


def assert_acl_file_holds(sandbox: LocalSandbox, user: str, count: int) -> None:
    """ACL SAVE wrote the passwords where a restart reads them."""
    for node in sandbox.topology.nodes:
        lines = Path(sandbox.paths(node).acl_file).read_text().splitlines()
        line = next(entry for entry in lines if entry.startswith(f"user {user} "))
        assert line.count(" #") == count, f"{node.name}'s ACL file: {line.count(' #')} passwords for {user}"


# ------------------------------------------------------------------------------ cluster
@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    return boot(sandbox_factory(CLUSTER_BASE)).sandbox


def test_a_refused_password_is_tried_once(cluster: LocalSandbox) -> None:
    """The log-in check takes a refusal as the answer: redis-py's default retry would send the
    same AUTH four times (an AuthenticationError is a ConnectionError), for every process."""
    node = cluster.topology.nodes[0]
    with cluster.admin_client(node) as admin:
        admin.config_resetstat()
        assert not accepts(node, USERS.app, "not-the-app-password")
        refused = admin.info("errorstats").get("errorstat_WRONGPASS", {}).get("count")
    assert refused == 1, refused


def test_app_rotation_keeps_every_writer_authenticated(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str], writers: list[Writer]
) -> None:
    old_writer, switching = start_writers(writers, cluster_connect(cluster), password_of(cluster, USERS.app))
    before = replication_facts(cluster)
    time.sleep(0.5)

    def switch(new: str) -> None:
        assert_acl_file_holds(cluster, USERS.app, 2)
        switching.password = new  # the application takes the new password from its secret
        time.sleep(1.0)
        old_writer.stop()  # the last client holding the old password goes away before phase 2
        switching.writes = 0  # from here on, count only writes made with the new password

    old, new = full_rotation(cluster, capsys, USERS.app, switch)
    time.sleep(1.0)
    switching.stop()
    old_writer.assert_clean()
    switching.assert_clean()
    assert_old_refused_everywhere(cluster, USERS.app, old, new)
    assert_acl_file_holds(cluster, USERS.app, 1)
    assert_no_full_resync(before, replication_facts(cluster))


def test_replication_rotation_keeps_replicas_linked_without_full_resync(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    before = replication_facts(cluster)

    def between(new: str) -> None:
        relink_replicas(cluster)  # links made now log in with the new masterauth while both are accepted
        assert_no_full_resync(before, replication_facts(cluster))

    old, new = full_rotation(cluster, capsys, USERS.replication, between)
    partial_before = {n: f["sync_partial_ok"] for n, f in replication_facts(cluster).items()}
    relink_replicas(cluster)  # only the new password works now: the replicas must still get back in
    after = replication_facts(cluster)
    assert_no_full_resync(before, after)
    masters = [n for n, f in after.items() if f["role"] == "master"]
    assert all(after[n]["sync_partial_ok"] > partial_before[n] for n in masters), "each master resynced partially"
    assert_old_refused_everywhere(cluster, USERS.replication, old, new)


def test_admin_rotation_keeps_the_operator_logged_in(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = full_rotation(cluster, capsys, USERS.admin)
    assert_old_refused_everywhere(cluster, USERS.admin, old, new)
    code, status = rotate(cluster, capsys, USERS.app, "status")  # the next command logs in with the new one
    assert (code, status.get("phase")) == (ExitCode.OK, "one password"), status


def pause_when(sandbox: LocalSandbox, after: str, victim: Node) -> tuple[Callable[[str], None], list[int]]:
    """A report hook that freezes `victim` (SIGSTOP: it stops answering, keeping its state) as
    soon as the phase reports `after` done."""
    paused: list[int] = []

    def report(line: str) -> None:
        if line.startswith(f"{after}:") and not paused:
            pid = sandbox.running()[victim.name].pid
            os.kill(pid, signal.SIGSTOP)
            paused.append(pid)
    return report, paused


def resume(paused: list[int]) -> None:
    for pid in paused:
        os.kill(pid, signal.SIGCONT)


class NoRetryTarget(Target):
    """The sandbox's target without redis-py's retries: a frozen node then fails a step after one
    timeout (about 6 s) instead of four with backoff (about 26 s), which is all this test needs."""

    def client(self, endpoint: Endpoint, timeout: float = 2.0, retry: bool = True) -> redis.Redis:
        return super().client(endpoint, timeout, retry=False)


def test_a_node_lost_in_the_middle_of_either_phase_stops_it_and_a_rerun_finishes(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox_target = target_of_sandbox(cluster)
    target = NoRetryTarget(**{f.name: getattr(sandbox_target, f.name) for f in dataclasses.fields(sandbox_target)})
    nodes = cluster.topology.nodes
    # A replica (no failover while it is frozen) with nodes after it, which the phase never reaches.
    # The frozen node itself may still run the command it was sent once it wakes: no assertion on it.
    first, victim = nodes[0], cluster.topology.replicas[0]
    later = nodes[nodes.index(victim) + 1:]
    assert first != victim and later, "the victim must sit in the middle of the nodes"
    old, new = password_of(cluster, USERS.app), new_password()

    report, paused = pause_when(cluster, first.name, victim)
    try:
        with pytest.raises(RotationError, match=rf"{victim.name} .*adding the new password failed.*--phase add"):
            add_password(target, USERS.app, new, report)
    finally:
        resume(paused)
    assert paused, "the node was never frozen: the failure was not in the middle of the phase"
    assert accepts(first, USERS.app, new), "the phase had begun"
    assert not any(accepts(n, USERS.app, new) for n in later), "the phase stopped at the frozen node"
    assert all(accepts(n, USERS.app, old) for n in nodes), "phase 1 never removes"
    code, status = rotate(cluster, capsys, USERS.app, "status")
    assert (code, status.get("phase")) == (ExitCode.PROBLEM, "mixed"), "status says a phase stopped halfway"
    code, status = rotate(cluster, capsys, USERS.app, "remove", new)
    assert code == ExitCode.PROBLEM and "nothing was removed" in status["error"], status
    assert all(accepts(n, USERS.app, old) for n in nodes), "remove refused before removing anything"

    code, status = rotate(cluster, capsys, USERS.app, "add", new)  # the re-run finishes phase 1
    assert (code, status.get("phase")) == (ExitCode.OK, "two passwords"), status

    report, paused = pause_when(cluster, first.name, victim)
    try:
        with pytest.raises(RotationError, match=rf"{victim.name} .*removing the old password failed.*--phase remove"):
            remove_old_passwords(target, USERS.app, new, report)
    finally:
        resume(paused)
    assert paused, "the node was never frozen: the failure was not in the middle of the phase"
    assert not accepts(first, USERS.app, old), "the phase had begun"
    assert all(accepts(n, USERS.app, old) for n in later), "the phase stopped at the frozen node"
    assert all(accepts(n, USERS.app, new) for n in nodes), "every node accepts the new password throughout"
    code, status = rotate(cluster, capsys, USERS.app, "status")
    assert (code, status.get("phase")) == (ExitCode.PROBLEM, "mixed"), status

    code, status = rotate(cluster, capsys, USERS.app, "remove", new)  # the re-run finishes phase 2
    assert (code, status.get("phase")) == (ExitCode.OK, "one password"), status
    assert_old_refused_everywhere(cluster, USERS.app, old, new)


def test_a_node_that_cannot_save_its_acl_file_is_named_and_blocks_the_removal(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """As on the hosts, where /etc/redis is read-only to the service: ACL SAVE fails. Phase 1
    goes on (the file keeps the old password, which still works) and says where the new one is
    in memory only; phase 2 refuses before removing anything."""
    stuck = cluster.topology.nodes[1]
    acl_file = cluster.paths(stuck).acl_file
    old, new = password_of(cluster, USERS.app), new_password()
    subprocess.run(["chattr", "+i", acl_file], check=True)  # even root cannot replace it now
    try:
        code, status = rotate(cluster, capsys, USERS.app, "add", new)
        assert (code, status.get("unsaved")) == (ExitCode.PROBLEM, [stuck.name]), status
        assert status["phase"] == "two passwords", "the new password is in memory everywhere"
        code, status = rotate(cluster, capsys, USERS.app, "remove", new)
        assert code == ExitCode.PROBLEM and f"{stuck.name} cannot save its users" in status["error"], status
        assert all(accepts(n, USERS.app, old) for n in cluster.topology.nodes), "nothing was removed"
    finally:
        subprocess.run(["chattr", "-i", acl_file], check=True)
    code, status = rotate(cluster, capsys, USERS.app, "add", new)  # saves now
    assert (code, status.get("unsaved")) == (ExitCode.OK, []), status
    code, status = rotate(cluster, capsys, USERS.app, "remove", new)
    assert (code, status.get("phase")) == (ExitCode.OK, "one password"), status
    assert_old_refused_everywhere(cluster, USERS.app, old, new)
    assert_acl_file_holds(cluster, USERS.app, 1)


def test_a_refused_password_or_user_is_a_usage_error(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    code, status = rotate(cluster, capsys, USERS.app, "add", "Zq9-tiny")
    assert code == ExitCode.USAGE and "shorter than 16" in status["error"], status
    code, status = rotate(cluster, capsys, "nobody", "add", new_password())
    assert code == ExitCode.USAGE and "cannot rotate user 'nobody'" in status["error"], status


def exporters_up(monitoring: SandboxMonitoring) -> dict[str, str]:
    """process -> its exporter's redis_up (or why it could not be read)."""
    found = {}
    for target in monitoring.targets:
        try:
            with urllib.request.urlopen(f"http://{target.listen}/metrics", timeout=2) as response:
                lines = response.read().decode().splitlines()
            found[target.process] = next((line.split()[-1] for line in lines if line.startswith("redis_up ")), "?")
        except OSError as error:
            found[target.process] = f"unreachable: {error}"
    return found


def test_monitor_rotation_switches_the_sandboxs_exporters(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Phase 1 restarts the running exporters with the new monitor password once every node
    accepts it; after phase 2 (the old one refused) they still read their nodes."""
    monitoring = SandboxMonitoring(cluster, prometheus_port=9094)
    try:
        monitoring.up()
        pids = {name: record.pid for name, record in monitoring.running().items()}
        assert set(exporters_up(monitoring).values()) == {"1"}

        def between(new: str) -> None:
            restarted = {name: record.pid for name, record in monitoring.running().items()}
            assert all(restarted[t.process] != pids[t.process] for t in monitoring.targets), "exporters not restarted"
            assert restarted["prometheus"] == pids["prometheus"]
            assert set(exporters_up(monitoring).values()) == {"1"}

        old, new = full_rotation(cluster, capsys, USERS.monitor, between)
        assert set(exporters_up(monitoring).values()) == {"1"}, exporters_up(monitoring)
        assert_old_refused_everywhere(cluster, USERS.monitor, old, new)
    finally:
        monitoring.down()


# ----------------------------------------------------------------------------- sentinel
@pytest.fixture(scope="module")
def sentinel(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    return boot(sandbox_factory(SENTINEL_BASE, topology="sentinel")).sandbox


def assert_quorum(sandbox: LocalSandbox) -> None:
    for watcher in sandbox.topology.sentinels:
        with sandbox.admin_client(watcher) as client:
            for master in sandbox.topology.masters:
                reply = client.execute_command("SENTINEL", "CKQUORUM", master.group)
                assert str(reply).startswith("OK"), f"{watcher.name} / {master.group}: {reply}"


def relink_sentinels(sandbox: LocalSandbox) -> None:
    """Drop every connection the sentinels made as user `sentinel` (to the nodes and to each
    other): they must log in again with their current auth-pass / sentinel-pass."""
    for process in processes(sandbox):
        with sandbox.admin_client(process) as client:
            client.execute_command("CLIENT", "KILL", "USER", USERS.sentinel)

    def reconnected() -> bool:
        for watcher in sandbox.topology.sentinels:
            with sandbox.admin_client(watcher) as client:
                for master in sandbox.topology.masters:
                    state: dict[str, Any] = client.execute_command("SENTINEL MASTER", master.group)
                    if state["flags"] != "master" or state["num-other-sentinels"] != 2 or state["num-slaves"] < 1:
                        return False
                    peers: list[dict[str, Any]] = client.execute_command("SENTINEL SENTINELS", master.group)
                    pings = [state["last-ok-ping-reply"], *(peer["last-ok-ping-reply"] for peer in peers)]
                    if max(int(ping) for ping in pings) > 1000:  # a link that cannot log in gets no PONG
                        return False
        return True

    time.sleep(1.5)  # past one ping period, so last-ok-ping-reply is measured on the new links
    wait_until(reconnected, 20, "every sentinel linked again to every master and to the other sentinels")


def test_sentinel_rotation_keeps_quorum_and_the_links(sentinel: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    before = replication_facts(sentinel)

    def between(new: str) -> None:
        assert_quorum(sentinel)
        relink_sentinels(sentinel)  # links made now present the new auth-pass and sentinel-pass

    old, new = full_rotation(sentinel, capsys, USERS.sentinel, between)
    relink_sentinels(sentinel)  # only the new password works now
    assert_quorum(sentinel)
    assert_old_refused_everywhere(sentinel, USERS.sentinel, old, new)
    assert_no_full_resync(before, replication_facts(sentinel))
    conf = Path(sentinel.paths(sentinel.topology.sentinels[0]).conf_file).read_text()
    user_line = next(line for line in conf.splitlines() if line.startswith(f"user {USERS.sentinel} "))
    assert user_line.count(" #") == 1, "the sentinel's own config file keeps one password"


def test_app_and_replication_rotation_on_sentinel_groups(
    sentinel: LocalSandbox, capsys: pytest.CaptureFixture[str], writers: list[Writer]
) -> None:
    old_writer, switching = start_writers(writers, sentinel_connect(sentinel), password_of(sentinel, USERS.app))
    before = replication_facts(sentinel)
    time.sleep(0.5)

    def switch(new: str) -> None:
        switching.password = new
        time.sleep(1.0)
        old_writer.stop()
        switching.writes = 0

    old, new = full_rotation(sentinel, capsys, USERS.app, switch)
    time.sleep(1.0)
    switching.stop()
    old_writer.assert_clean()
    switching.assert_clean()
    assert_old_refused_everywhere(sentinel, USERS.app, old, new)

    old, new = full_rotation(sentinel, capsys, USERS.replication)
    relink_replicas(sentinel)
    assert_no_full_resync(before, replication_facts(sentinel))
    assert_old_refused_everywhere(sentinel, USERS.replication, old, new)
    assert_quorum(sentinel)
