"""The generated alerts fire on a real Prometheus: the sandbox with Debian's redis exporter per
process and Debian's Prometheus on loopback (what `cachelayer sandbox up --monitoring` starts).

Each test causes a fault, reads Prometheus's HTTP API until the expected alert is firing, then
undoes the fault and waits until it resolves. Fault-to-firing times are printed (run with -s) and
never asserted. Ports: nodes 8000-8005 / 8010-8015 (bus 18000-18005), sentinels 28010-28012,
exporters 9150-9158 / 9170-9178, Prometheus 9091 / 9092, Pushgateways 9191 / 9192.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from cachelayer.cli.app import main
from cachelayer.ops.backup import StoredBackup, backup_name
from cachelayer.ops.backup_metrics import push_newest_backup
from cachelayer.render.monitoring import BACKUP_TIMESTAMP
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.load_balancer import SandboxLoadBalancer
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from cachelayer.sandbox.monitoring import SandboxMonitoring
from cachelayer.sandbox.processes import process_cmdline
from support.sandbox_processes import kill, process_named

from .conftest import cluster_client, refused_logins, require_redis

pytestmark = pytest.mark.integration

# Fast on purpose: 1 s scrapes and evaluations, conditions held 1 s, 5 s rate windows.
MONITORING = {
    "scrape_interval_seconds": 1,
    "for_seconds": 1,
    "rate_window_seconds": 5,
    "failover_window_seconds": 20,
    "memory_percent": 80,
    "auth_failures_per_minute": 600,  # 50 in the 5 s window: a brute force, not a few typos
}
SMALL = {"maxmemory": "16mb", "repl_backlog_size": "1mb", "cluster_node_timeout": 2000}
ALERT_TIMEOUT = 90.0
MEASURED: dict[str, float] = {}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> float:
    """Seconds until `check()` is truthy; fails naming `what` after `timeout`."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout:
        try:
            if check():
                return time.monotonic() - begin
        except OSError:
            pass  # Prometheus busy on a loaded machine: ask again
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def firing_for(monitoring: SandboxMonitoring, alert: str, **labels: str) -> Callable[[], bool]:
    def check() -> bool:
        return any(all(a["labels"].get(k) == v for k, v in labels.items()) for a in monitoring.firing(alert))

    return check


def resolved(monitoring: SandboxMonitoring, alert: str, **labels: str) -> Callable[[], bool]:
    """Neither firing nor pending any more."""

    def check() -> bool:
        active = [a for a in monitoring.alerts() if a["labels"].get("alertname") == alert]
        return not any(all(a["labels"].get(k) == v for k, v in labels.items()) for a in active)

    return check


@pytest.fixture(scope="module", autouse=True)
def print_measurements() -> Iterator[None]:
    """The module's fault -> firing times, once at its end (shown with -s)."""
    yield
    print("\nfault -> firing (s), scrape and evaluation every 1 s, for: 1 s:")
    for name, seconds in MEASURED.items():
        print(f"  {name}: {seconds:.1f}")


def measure(name: str, seconds: float) -> None:
    MEASURED[name] = seconds
    print(f"\nfault -> firing: {name}: {seconds:.1f} s")


def monitored(
    tmp_path_factory: pytest.TempPathFactory,
    base_port: int,
    topology: str,
    exporter_base_port: int,
    prometheus_port: int,
    sentinel: dict[str, Any] | None = None,
) -> Iterator[tuple[LocalSandbox, SandboxMonitoring]]:
    """A sandbox with its exporters and Prometheus, taken down at the end, pass or fail."""
    require_redis()
    config: dict[str, Any] = {
        "redis": {"base_port": base_port, **SMALL},
        "monitoring": {**MONITORING, "exporter_base_port": exporter_base_port},
    }
    if topology == "sentinel":
        config["sentinel"] = {"ports": [base_port + 20000 + i for i in range(3)], **(sentinel or {})}
        # HAProxy in front of the groups, as `sandbox up` starts it (its alerts are among the rules).
        config["load_balancer"] = {"write_base_port": base_port + 30, "read_base_port": base_port + 40,
                                   "exporter_port": exporter_base_port + 20}
    settings, merged = sandbox_settings(config, "test", topology=topology)
    sandbox = LocalSandbox(settings, tmp_path_factory.mktemp(f"monitored-{base_port}"), config=merged)
    monitoring = SandboxMonitoring(sandbox, prometheus_port=prometheus_port)
    balancer = SandboxLoadBalancer(sandbox)
    try:
        sandbox.up()
        if balancer.wanted:
            balancer.up()
        monitoring.up()
        yield sandbox, monitoring
    finally:
        monitoring.down()
        balancer.down()
        sandbox.down()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSandbox, SandboxMonitoring]]:
    yield from monitored(tmp_path_factory, 8000, "cluster", 9150, 9091)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSandbox, SandboxMonitoring]]:
    sentinel_settings = {"down_after_milliseconds": 1000, "failover_timeout": 5000}
    yield from monitored(tmp_path_factory, 8010, "sentinel", 9170, 9092, sentinel_settings)


def firing_names(monitoring: SandboxMonitoring) -> set[str]:
    return {a["labels"]["alertname"] for a in monitoring.alerts() if a["state"] == "firing"}


def master_of(sandbox: LocalSandbox, replica: str) -> str:
    with sandbox.admin_client(process_named(sandbox, replica)) as client:
        return f"redis-{client.info('replication')['master_port']}"


def test_a_healthy_cluster_fires_nothing(cluster: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    _, monitoring = cluster
    time.sleep(3)  # a few evaluations, with every rate window filled
    assert firing_names(monitoring) == set()


def test_the_exporter_reads_as_monitor_and_is_refused_secrets(cluster: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = cluster
    exporters = [r for name, r in monitoring.running().items() if name not in ("prometheus", "pushgateway")]
    assert len(exporters) == 6
    for record in exporters:
        cmdline = process_cmdline(record.pid)
        assert "--redis.user=monitor" in cmdline and sandbox.passwords.monitor not in cmdline
    node = sandbox.topology.nodes[0]
    client = sandbox.client(node, USERS.monitor, sandbox.passwords.monitor)
    try:
        assert client.ping() and "used_memory" in client.info("memory")
        for command in (("CONFIG", "GET", "masterauth"), ("GET", "anykey"), ("SLOWLOG", "GET"), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
    finally:
        client.close()


def test_a_brute_force_fires_authentication_failures_and_a_typo_does_not(
    cluster: tuple[LocalSandbox, SandboxMonitoring],
) -> None:
    sandbox, monitoring = cluster
    node = sandbox.topology.nodes[1]
    process = f"redis-{node.port}"

    def guesses(count: int) -> None:
        """Exactly `count` wrong AUTHs, counted by the node."""
        with sandbox.admin_client(node.port) as admin:
            before = int(admin.info("errorstats").get("errorstat_WRONGPASS", {"count": 0})["count"])
        refused_logins(node.address, node.port, [(USERS.app, "not-the-password")] * count)
        with sandbox.admin_client(node.port) as admin:
            assert int(admin.info("errorstats")["errorstat_WRONGPASS"]["count"]) == before + count

    guesses(3)  # an operator's typos: below auth_failures_per_minute
    time.sleep(3)  # a few evaluations
    assert not firing_for(monitoring, "RedisAuthenticationFailures", process=process)()
    begin = time.monotonic()
    guesses(200)
    measure("RedisAuthenticationFailures (200 wrong passwords)", time.monotonic() - begin + wait_for(
        firing_for(monitoring, "RedisAuthenticationFailures", process=process), ALERT_TIMEOUT, "authentication failures"))
    firing = {a["labels"]["process"] for a in monitoring.firing("RedisAuthenticationFailures")}
    assert firing == {process}  # the node that refused them, no other
    wait_for(resolved(monitoring, "RedisAuthenticationFailures", process=process), ALERT_TIMEOUT, "authentication failures resolved")


def test_a_command_refused_to_the_app_fires_command_denied(cluster: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = cluster
    # The exporters are refused CONFIG GET and SLOWLOG GET every second: the alert still resolves
    # (an earlier test's refusals to the monitor user fired it) and stays quiet.
    wait_for(resolved(monitoring, "RedisCommandDenied"), ALERT_TIMEOUT, "command denied quiet")
    time.sleep(3)
    assert "RedisCommandDenied" not in firing_names(monitoring)
    node = sandbox.topology.nodes[2]
    process = f"redis-{node.port}"
    client = sandbox.client(node, USERS.app, sandbox.passwords.app)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("FLUSHALL")
    finally:
        client.close()
    measure("RedisCommandDenied (app ran FLUSHALL once)",
            wait_for(firing_for(monitoring, "RedisCommandDenied", process=process), ALERT_TIMEOUT, "command denied"))
    firing = {a["labels"]["process"] for a in monitoring.firing("RedisCommandDenied")}
    assert firing == {process}
    wait_for(resolved(monitoring, "RedisCommandDenied", process=process), ALERT_TIMEOUT, "command denied resolved")


def test_a_missed_backup_fires_and_a_fresh_backup_resolves_it(
    cluster: tuple[LocalSandbox, SandboxMonitoring], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RedisBackupMissed on the real Prometheus, fed by the real Pushgateway: the last report says
    the newest complete backup is two days old (the nightly runs since then missed), it fires;
    `cachelayer backup --pushgateway` stores a backup, reads it back and reports it, it resolves."""
    sandbox, monitoring = cluster
    stack = sandbox.settings.stack
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    begin = time.monotonic()
    push_newest_backup(monitoring.pushgateway_url, stack,
                       StoredBackup(backup_name(stack, two_days_ago), True, two_days_ago))
    wait_for(firing_for(monitoring, "RedisBackupMissed", stack=stack), ALERT_TIMEOUT, "backup missed")
    measure("RedisBackupMissed (two-day-old newest backup reported)", time.monotonic() - begin)

    capsys.readouterr()  # the measurement printed above
    code = main(["backup", "--workdir", str(sandbox.workdir), "--to", str(tmp_path),
                 "--pushgateway", monitoring.pushgateway_url, "--json"])
    backup = json.loads(capsys.readouterr().out)
    assert code == 0 and backup["ok"] is True, backup
    assert backup["pushed"] == backup["manifest"]["name"]  # the newest complete backup in the destination
    wait_for(resolved(monitoring, "RedisBackupMissed", stack=stack), ALERT_TIMEOUT, "backup missed resolved")
    (sample,) = monitoring.api("query", query=f'{BACKUP_TIMESTAMP}{{stack="{stack}"}}')["result"]
    started = datetime.fromisoformat(backup["manifest"]["started_at"].replace("Z", "+00:00"))
    assert abs(float(sample["value"][1]) - started.timestamp()) < 1


def test_killed_replica_fires_master_without_replicas(cluster: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = cluster
    replica = next(n.name for n in sandbox.status().nodes if n.role == "replica")
    master = master_of(sandbox, replica)
    kill(sandbox, replica, signal.SIGKILL)
    begin = time.monotonic()
    sandbox.stop([replica])
    wait_for(firing_for(monitoring, "RedisMasterMissingReplicas", process=master), ALERT_TIMEOUT, "missing replica")
    measure("RedisMasterMissingReplicas (replica killed)", time.monotonic() - begin)
    wait_for(firing_for(monitoring, "RedisDown", process=replica), ALERT_TIMEOUT, "down")
    measure("RedisDown (replica killed)", time.monotonic() - begin)
    sandbox.start([replica])
    sandbox.wait_converged()
    wait_for(resolved(monitoring, "RedisMasterMissingReplicas", process=master), ALERT_TIMEOUT, "missing replica resolved")
    wait_for(resolved(monitoring, "RedisDown", process=replica), ALERT_TIMEOUT, "down resolved")


def test_memory_past_the_threshold_fires_then_evictions(cluster: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = cluster
    client = cluster_client(sandbox)
    value = "x" * 65536
    try:
        slot_owner = client.get_node_from_key("{fill}")
        master = f"redis-{slot_owner.port}"
        admin = sandbox.admin(slot_owner.port)

        def share() -> float:
            memory = admin.info("memory")
            return float(memory["used_memory"]) / float(memory["maxmemory"])

        index = 0
        while share() < 0.85:
            client.set(f"{{fill}}:{index}", value)
            index += 1
        # The fault is complete when the last write lands: measured from there.
        measure("RedisMemoryHigh (filled to 85%)", wait_for(firing_for(monitoring, "RedisMemoryHigh", process=master),
                                                            ALERT_TIMEOUT, "memory high"))
        # Past maxmemory allkeys-lru evicts: the evictions alert.
        while int(admin.info("stats")["evicted_keys"]) == 0:
            client.set(f"{{fill}}:{index}", value)
            index += 1
        measure("RedisEvictions (writes past maxmemory)", wait_for(firing_for(monitoring, "RedisEvictions", process=master),
                                                                   ALERT_TIMEOUT, "evictions"))
        for start in range(0, index, 100):
            client.delete(*(f"{{fill}}:{i}" for i in range(start, min(index, start + 100))))
        wait_for(resolved(monitoring, "RedisMemoryHigh", process=master), ALERT_TIMEOUT, "memory high resolved")
        wait_for(resolved(monitoring, "RedisEvictions", process=master), ALERT_TIMEOUT, "evictions resolved")
        admin.close()
    finally:
        client.close()


def test_stopped_master_fires_down_and_failover(cluster: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = cluster
    master = next(n.name for n in sandbox.status().nodes if n.role == "master")
    replica = next(n.name for n in sandbox.status().nodes if n.role == "replica" and master_of(sandbox, n.name) == master)
    kill(sandbox, master, signal.SIGKILL)
    begin = time.monotonic()
    sandbox.stop([master])
    wait_for(firing_for(monitoring, "RedisDown", process=master), ALERT_TIMEOUT, "down")
    measure("RedisDown (master killed)", time.monotonic() - begin)
    def promoted() -> bool:
        with sandbox.admin_client(process_named(sandbox, replica)) as client:
            return bool(client.info("replication")["role"] == "master")

    wait_for(promoted, ALERT_TIMEOUT, "replica promoted")
    promoted_at = time.monotonic() - begin
    wait_for(firing_for(monitoring, "RedisFailover", process=replica), ALERT_TIMEOUT, "failover")
    measure("RedisFailover (master killed, replica promoted)", time.monotonic() - begin)
    measure("  of which Redis Cluster's own failover (kill -> promoted)", promoted_at)
    # The promoted replica has no replica of its own while the old master is down.
    wait_for(firing_for(monitoring, "RedisMasterMissingReplicas", process=replica), ALERT_TIMEOUT, "promoted alone")
    sandbox.start([master])
    sandbox.wait_converged()
    wait_for(resolved(monitoring, "RedisDown", process=master), ALERT_TIMEOUT, "down resolved")
    wait_for(resolved(monitoring, "RedisMasterMissingReplicas", process=replica), ALERT_TIMEOUT, "replica back")
    # Reported for failover_window_seconds after the last role change, then resolved.
    wait_for(resolved(monitoring, "RedisFailover"), ALERT_TIMEOUT, "failover resolved")


def test_sentinels_without_quorum_fire(sentinel: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = sentinel
    time.sleep(3)
    assert firing_names(monitoring) == set()
    stopped = [s.name for s in sandbox.topology.sentinels[1:]]
    for name in stopped:
        kill(sandbox, name, signal.SIGKILL)
    begin = time.monotonic()
    for name in stopped:
        sandbox.stop([name])
    wait_for(firing_for(monitoring, "RedisSentinelNoQuorum", master_name="redis-master-1"), ALERT_TIMEOUT, "no quorum")
    measure("RedisSentinelNoQuorum (2 of 3 sentinels killed)", time.monotonic() - begin)
    sandbox.start(stopped)
    wait_for(resolved(monitoring, "RedisSentinelNoQuorum"), ALERT_TIMEOUT, "quorum back")


def test_sentinel_failover_fires(sentinel: tuple[LocalSandbox, SandboxMonitoring]) -> None:
    sandbox, monitoring = sentinel
    master = sandbox.topology.masters[0].name
    kill(sandbox, master, signal.SIGKILL)
    begin = time.monotonic()
    sandbox.stop([master])
    wait_for(firing_for(monitoring, "RedisFailover"), ALERT_TIMEOUT, "failover")
    measure("RedisFailover (sentinel topology, master killed)", time.monotonic() - begin)
    sandbox.start([master])
    sandbox.wait_converged()
    wait_for(resolved(monitoring, "RedisDown", process=master), ALERT_TIMEOUT, "down resolved")
    wait_for(resolved(monitoring, "RedisFailover"), ALERT_TIMEOUT, "failover resolved")
