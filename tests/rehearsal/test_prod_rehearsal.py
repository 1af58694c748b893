"""Rehearsal of the prod stack on six booted Debian hosts over SSH (see tests/rehearsal/engine.py).

The scenarios share one set of hosts and run in order, as an operator would: deploy, deploy
again, a live change, a change that needs restarts, a host reboot. Each checks the servers,
not the harness.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from rehearsal.hosts import leftovers
from rehearsal.scenario import SIX_HOSTS, Probe, Rehearsal

pytestmark = pytest.mark.rehearsal
PORTS = {name: 7000 + i for i, name in enumerate(SIX_HOSTS)}
FIRST = "10.233.0.11"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    started = Rehearsal.start()
    try:
        yield started
    finally:
        started.down()
        print(f"\nrehearsal timings: {started.timings}")
        assert not leftovers(), f"left behind: {leftovers()}"


def cluster_check(rehearsal: Rehearsal) -> str:
    result = rehearsal.cli(FIRST, 7000, "--cluster", "check", f"{FIRST}:7000")
    assert result.returncode == 0, result.stdout + result.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # colours


def host_sh(rehearsal: Rehearsal, name: str, script: str) -> str:
    return rehearsal.hosts.sh(name, script)[1]


def test_fresh_deploy_of_the_shipped_prod_stack(rehearsal: Rehearsal) -> None:
    replay = rehearsal.deploy()
    rehearsal.timings["fresh_deploy"] = replay.seconds
    assert len(replay.ran("create")) == len(rehearsal.last) > 100

    report = cluster_check(rehearsal)
    assert "[OK] All 16384 slots covered." in report and "[ERR]" not in report and "[WARNING]" not in report
    assert len(re.findall(r"^M: ", report, re.M)) == 3 and len(re.findall(r"^S: ", report, re.M)) == 3

    for name, port in PORTS.items():
        units = f"redis-{port}.service cachelayer-firewall.service redis-backup.timer"
        state = host_sh(rehearsal, name, f"systemctl is-enabled {units}; systemctl is-active {units}")
        assert state.split() == ["enabled"] * 3 + ["active"] * 3, f"{name}: {state}"
        # health.py on Debian's python3-redis, over the whole deployment, from every host.
        health = host_sh(rehearsal, name, "/opt/redis/scripts/health-check.sh")
        assert f"redis-{port} up role=" in health, health
        assert f"health of prod (cluster) as seen from {name}: ok" in health, health

    # Kernel tuning cannot apply in a container: the deploy says so instead of failing.
    kernel_step = rehearsal.engine.state["redis-cache-1-kernel"]
    assert "WARNING cache-1: kernel settings not applied" in kernel_step["outputs"]["stderr"]


def test_firewall_lets_the_app_network_in_and_keeps_others_out(rehearsal: Rehearsal) -> None:
    inside = rehearsal.cli(FIRST, 7000, "ping", namespace="rh-app")
    assert inside.stdout.strip() == "PONG", inside.stderr
    outside = rehearsal.cli(FIRST, 7000, "ping", namespace="rh-out")
    assert outside.stdout.strip() != "PONG"
    # Only the Redis ports are filtered: SSH from the same outsider still connects.
    ssh = rehearsal.hosts.netns("rh-out", "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{FIRST}/22")
    assert ssh.returncode == 0, ssh.stderr
    counters = host_sh(rehearsal, "cache-1", "nft list chain inet cachelayer_redis input")
    assert re.search(r"counter packets [1-9]\d* bytes \d+ drop", counters), counters


def test_backup_service_writes_an_rdb_that_redis_check_rdb_accepts(rehearsal: Rehearsal) -> None:
    client = rehearsal.cluster()
    for index in range(200):
        client.set(f"backup:{index}", "x" * 100)
    client.close()
    script = (
        "systemctl start redis-backup.service && ls /var/backups/redis/ && "
        "for f in /var/backups/redis/redis-7000-*.rdb; do redis-check-rdb \"$f\"; done"
    )
    output = host_sh(rehearsal, "cache-1", script)
    assert re.search(r"redis-7000-\d{8}T\d{6}Z\.rdb", output), output
    assert "RDB looks OK!" in output, output
    timer = host_sh(rehearsal, "cache-1", "systemctl show redis-backup.timer -p TimersCalendar -p NextElapseUSecRealtime")
    assert "OnCalendar=*-*-* 02:00:00" in timer and re.search(r"NextElapseUSecRealtime=\w+ [\d-]+ 02:00:00", timer), timer


def test_reads_allowed_on_replicas_are_answered_by_them_over_tls(rehearsal: Rehearsal) -> None:
    """The cache library's read policy on the booted hosts (cache_library/README.md): a
    namespace listed in `replica_namespaces` is read from the replicas (TLS, through the
    firewall); a read of a key this client just wrote, and any other namespace, from the masters."""
    writer = rehearsal.cache()
    reader = None
    try:
        pages = {f"page:{i}": {"id": i} for i in range(30)}
        assert writer.mset(pages, ttl=600, namespace="content")
        assert writer.set("profile:7", {"name": "Ada"}, ttl=600, namespace="users")
        for i, address in enumerate(list(SIX_HOSTS.values())[:3]):  # the masters of the fresh deploy
            assert rehearsal.cli(address, 7000 + i, "wait", "1", "5000").stdout.strip() == "1"
        # Redis lists a replica in CLUSTER SLOTS once it has replicated something: a client made
        # before reads the masters until it reads the map again (replica_refresh_interval).
        deadline = time.monotonic() + 30
        while not rehearsal.replicas_listed_everywhere():
            assert time.monotonic() < deadline, "the replicas never appeared in every node's CLUSTER SLOTS"
            time.sleep(0.5)
        reader = rehearsal.cache(replica_namespaces=("content",))
        rehearsal.reset_stats()
        for key, page in pages.items():
            assert reader.get(key, namespace="content") == page
        assert rehearsal.reads_by_role() == {"master": 0, "replica": len(pages)}
        assert reader.get("profile:7", namespace="users") == {"name": "Ada"}
        assert rehearsal.reads_by_role() == {"master": 1, "replica": len(pages)}
    finally:
        writer.close()
        if reader is not None:
            reader.close()


def test_the_same_replay_again_changes_nothing(rehearsal: Rehearsal) -> None:
    replay = rehearsal.deploy()
    assert replay.steps == [], [(s.name, s.action) for s in replay.steps]


def test_a_live_setting_is_applied_without_restarting_any_node(rehearsal: Rehearsal) -> None:
    before = {name: rehearsal.info(address, PORTS[name], "process_id") for name, address in SIX_HOSTS.items()}
    replay = rehearsal.deploy(redis={"maxmemory": "1gb"})
    ran = replay.ran()
    assert all(not n.endswith(("-restart", "-service")) for n in ran), ran
    assert {f"redis-{h}-apply-config" for h in SIX_HOSTS} <= set(replay.ran("update")) | set(replay.ran("replace"))
    for name, address in SIX_HOSTS.items():
        assert rehearsal.cli(address, PORTS[name], "config", "get", "maxmemory").stdout.split() == ["maxmemory", "1073741824"]
        assert rehearsal.info(address, PORTS[name], "process_id") == before[name], f"{name} restarted"
    cluster_check(rehearsal)


def test_a_renewed_certificate_rolls_through_the_nodes_without_losing_acknowledged_writes(rehearsal: Rehearsal) -> None:
    # Renewal, as pulumi-tls does it 30 days before expiry: new certificates for every host.
    for name in [n for n in rehearsal.provider_state.resources if n.endswith("-cert")]:
        del rehearsal.provider_state.resources[name]
    pids = {name: rehearsal.info(address, PORTS[name], "process_id") for name, address in SIX_HOSTS.items()}
    old_certs = {name: rehearsal.stdin_of(f"redis-{name}-tls-cert") for name in SIX_HOSTS}
    client = rehearsal.cluster()
    with Probe(client) as probe:
        time.sleep(1)
        replay = rehearsal.deploy()
        time.sleep(1)
    restarts = [s for s in replay.steps if s.name.endswith("-restart")]
    assert len(restarts) == 6 and {s.action for s in restarts} == {"update"}, replay.ran()
    print(f"\nprobe: {len(probe.acknowledged)} acknowledged writes, {len(probe.errors)} errors: {probe.errors[:10]}")
    assert len(probe.acknowledged) > 50
    lost = [key for key in probe.acknowledged if client.get(key) is None]
    client.close()
    assert not lost, f"acknowledged writes lost: {lost[:20]}"
    for name, address in SIX_HOSTS.items():
        assert rehearsal.info(address, PORTS[name], "process_id") != pids[name], f"{name} was not restarted"
        # The node serves the renewed certificate, not the one it started with.
        served = rehearsal.hosts.netns(
            "rh-app", "sh", "-c", f"openssl s_client -connect {address}:{PORTS[name]} </dev/null 2>/dev/null | openssl x509"
        ).stdout
        deployed = rehearsal.stdin_of(f"redis-{name}-tls-cert")
        assert served.strip() == deployed.strip() and deployed != old_certs[name], name
    cluster_check(rehearsal)
    rehearsal.timings["rolling_restart"] = replay.seconds


def wait_rejoined(rehearsal: Rehearsal, address: str, port: int, seconds: float = 90) -> None:
    """Until the cluster check covers every slot with the node in it and the node sees it ok."""
    deadline = time.monotonic() + seconds
    while True:
        report = rehearsal.cli(FIRST, 7000, "--cluster", "check", f"{FIRST}:7000")
        if report.returncode == 0 and "[OK] All 16384 slots covered." in report.stdout and f"{address}:{port}" in report.stdout:
            nodes = rehearsal.cli(address, port, "cluster", "info").stdout
            if "cluster_state:ok" in nodes:
                return
        assert time.monotonic() < deadline, report.stdout + report.stderr
        time.sleep(1)


def test_a_replica_stopped_while_writing_its_first_aof_exits_cleanly(rehearsal: Rehearsal) -> None:
    """Redis drops a SIGTERM while it writes its initial AOF (a replica right after a full sync)
    and never tries again; the unit's ExecStop repeats it, so `systemctl stop` ends in a clean
    exit, not in a SIGKILL after TimeoutStopSec."""
    name = next(n for n, a in SIX_HOSTS.items() if rehearsal.cli(a, PORTS[n], "role").stdout.split()[0] == "slave")
    address, port = SIX_HOSTS[name], PORTS[name]
    client = rehearsal.cluster()
    for i in range(3000):
        client.set(f"first-aof:{i}", "v")
    client.close()
    keys = int(rehearsal.cli(address, port, "dbsize").stdout)
    assert keys >= 500, keys
    for setting, value in (("rdb-key-save-delay", str(3_000_000 // keys)), ("appendonly", "no"), ("appendonly", "yes")):
        assert rehearsal.cli(address, port, "config", "set", setting, value).stdout.strip() == "OK"  # ~3 s rewrite
    assert "aof_rewrite_in_progress:1" in rehearsal.cli(address, port, "info", "persistence").stdout
    started = time.monotonic()
    stop = f"systemctl stop redis-{port}.service; systemctl show -p Result --value redis-{port}.service"
    result = rehearsal.hosts.sh(name, stop, timeout=180)[1]  # longer than TimeoutStopSec=120
    rehearsal.timings["stop_during_first_aof"] = time.monotonic() - started
    log = host_sh(rehearsal, name, f"tail -n 60 /var/log/redis/redis-{port}.log")
    assert result.strip() == "success", result  # "timeout": it was SIGKILLed
    assert "Writing initial AOF, can't exit." in log and "ready to exit" in log.split("can't exit.")[-1], log
    host_sh(rehearsal, name, f"systemctl start redis-{port}.service")
    wait_rejoined(rehearsal, address, port)


def test_a_rebooted_host_comes_back_and_its_node_rejoins(rehearsal: Rehearsal) -> None:
    name, address, port = "cache-2", SIX_HOSTS["cache-2"], PORTS["cache-2"]
    # When the host's systemd started (containers share the kernel's boot id).
    booted = host_sh(rehearsal, name, "ps -o lstart= -p 1")
    started = time.monotonic()
    rehearsal.hosts.stop(name)
    rehearsal.hosts.start(name)
    wait_rejoined(rehearsal, address, port)
    rehearsal.timings["reboot_rejoin"] = time.monotonic() - started
    assert int(rehearsal.info(address, port, "uptime_in_seconds")) <= time.monotonic() - started + 1
    assert host_sh(rehearsal, name, "ps -o lstart= -p 1") != booted, "the host did not reboot"
    state = host_sh(rehearsal, name, f"systemctl is-active redis-{port}.service cachelayer-firewall.service redis-backup.timer")
    assert state.split() == ["active"] * 3, state
    # The firewall came back with the host: the outsider is still kept out.
    assert rehearsal.cli(address, port, "ping", namespace="rh-out").stdout.strip() != "PONG"
    assert rehearsal.deploy().steps == []


def test_scale_out_from_six_to_eight_nodes_over_two_new_hosts(rehearsal: Rehearsal) -> None:
    new = {"cache-7": "10.233.0.17", "cache-8": "10.233.0.18"}
    rehearsal.hosts.up(new)
    rehearsal.machines.update(new)
    client = rehearsal.cluster()
    keys = {f"scale:{i}": str(i) for i in range(300)}
    for key, value in keys.items():
        client.set(key, value)
    client.close()
    replay = rehearsal.deploy(redis={"node_count": 8})
    rehearsal.timings["scale_out"] = replay.seconds
    assert "redis-bootstrap" in replay.ran("replace"), replay.ran()
    report = cluster_check(rehearsal)
    assert "[OK] All 16384 slots covered." in report and "[ERR]" not in report, report
    assert len(re.findall(r"^M: ", report, re.M)) == 4 and len(re.findall(r"^S: ", report, re.M)) == 4, report
    assert "10.233.0.17:7006" in report and "10.233.0.18:7007" in report, report
    client = rehearsal.cluster()
    assert {key: client.get(key) for key in keys} == keys
    client.close()
    # The new hosts' firewalls and every old host's let the new machines in (cluster bus too).
    for name in ("cache-1", "cache-7"):
        rules = host_sh(rehearsal, name, "nft list set inet cachelayer_redis allowed_v4")
        assert "10.233.0.0/26" in rules, rules
    assert rehearsal.deploy(redis={"node_count": 8}).steps == []
