"""Rehearsal of the prod stack in Sentinel topology: deploy, lose a master's host, failover,
bring the host back. Its node must come back as a replica of the new master, which is what
the start script (templates/redis-node-start.sh.j2) asks the sentinels for, under real systemd."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cachelayer.ops.rotate import logs_in
from cachelayer.render.nodes import USERS
from rehearsal.hosts import leftovers
from rehearsal.scenario import SIX_HOSTS, Rehearsal

pytestmark = pytest.mark.rehearsal
SENTINEL = {"topology": "sentinel"}


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    started = Rehearsal.start()
    try:
        yield started
    finally:
        started.down()
        print(f"\nsentinel rehearsal timings: {started.timings}")
        assert not leftovers(), f"left behind: {leftovers()}"


# Sentinels on the first three hosts (the default placement), as "<address>:<port>".
SENTINELS = {"cache-1": (SIX_HOSTS["cache-1"], 26379), "cache-2": (SIX_HOSTS["cache-2"], 26380), "cache-3": (SIX_HOSTS["cache-3"], 26381)}
GROUPS = [f"redis-master-{i}" for i in (1, 2, 3)]


def master_of(rehearsal: Rehearsal, group: str, sentinel_host: str) -> str:
    address, port = SENTINELS[sentinel_host]
    answer = rehearsal.cli(address, port, "sentinel", "get-master-addr-by-name", group).stdout.split()
    return ":".join(answer)


# HAProxy on cache-1 (every host with a node runs one); group 2's write and read ports.
LOAD_BALANCER, GROUP_2_WRITE, GROUP_2_READ = SIX_HOSTS["cache-1"], 7101, 7201


def port_behind_load_balancer(rehearsal: Rehearsal) -> str:
    """The port of the node HAProxy's write port reaches, asked from the app network (through
    the firewall, over TLS end to end: HAProxy passes the connection through)."""
    # The prod stack runs TLS: the node listens on its tls-port (`port` is 0).
    answer = rehearsal.cli(LOAD_BALANCER, GROUP_2_WRITE, "config", "get", "tls-port", namespace="rh-app")
    return answer.stdout.split()[-1] if answer.returncode == 0 and answer.stdout.split() else answer.stderr.strip()


def test_sentinel_deploy_failover_and_the_old_master_rejoins_as_a_replica(rehearsal: Rehearsal) -> None:
    replay = rehearsal.deploy(redis=SENTINEL)
    rehearsal.timings["sentinel_deploy"] = replay.seconds
    bootstrap = rehearsal.engine.state["redis-bootstrap"]["outputs"]["stdout"]
    assert "sentinel ok:" in bootstrap, bootstrap

    by_address = {address: name for name, address in SIX_HOSTS.items()}
    # The master of group 2 runs on cache-2, with a sentinel: losing the host loses both.
    group, witness = "redis-master-2", "cache-1"
    old_master = master_of(rehearsal, group, witness)
    assert old_master == f"{SIX_HOSTS['cache-2']}:7001", old_master
    address, port = old_master.split(":")
    host = by_address[address]
    # The deployed HAProxy reaches the group's master from the app network.
    assert rehearsal.hosts.sh("cache-1", "systemctl is-active haproxy.service")[1].strip() == "active"
    assert port_behind_load_balancer(rehearsal) == port

    started = time.monotonic()
    rehearsal.hosts.stop(host)
    deadline = time.monotonic() + 90
    while (new_master := master_of(rehearsal, group, witness)) == old_master:
        assert time.monotonic() < deadline, "no failover within 90 s"
        time.sleep(1)
    rehearsal.timings["failover"] = time.monotonic() - started
    # HAProxy follows the failover: its write port now reaches the new master.
    new_port = new_master.split(":")[1]
    while (behind := port_behind_load_balancer(rehearsal)) != new_port:
        assert time.monotonic() < deadline, f"HAProxy still reaches {behind}, not the new master {new_master}"
        time.sleep(0.5)
    rehearsal.timings["load_balancer_follows"] = time.monotonic() - started

    rehearsal.hosts.start(host)
    deadline = time.monotonic() + 120
    while True:
        role = rehearsal.cli(address, int(port), "role").stdout.split()
        if role[:3] == ["slave", *new_master.split(":")] and "connected" in role:
            break
        assert time.monotonic() < deadline, f"{host} came back as {role}, not a replica of {new_master}"
        time.sleep(1)
    rehearsal.timings["rejoin_as_replica"] = time.monotonic() - started
    journal = rehearsal.hosts.sh(host, f"journalctl -b -u redis-{port}.service --no-pager | tail -n 20")[1]
    assert f"starting as a replica of {new_master.replace(':', ' ')}" in journal, journal
    # Only one writable master for the group.
    assert master_of(rehearsal, group, witness) == new_master


def test_replica_reads_through_the_sentinels_and_through_haproxys_read_port(rehearsal: Rehearsal) -> None:
    """After the failover above: the cache library reads a namespace allowed on replicas from
    the replicas the sentinels name now (Sentinel `slave_for`, TLS), and HAProxy's read port of a
    group reaches one of its replicas."""
    writer, reader = rehearsal.cache(sentinel=True), rehearsal.cache(sentinel=True, replica_namespaces=("content",))
    try:
        pages = {f"page:{i}": {"id": i} for i in range(30)}
        assert writer.mset(pages, ttl=600, namespace="content")
        deadline = time.monotonic() + 10
        while reader.mget(list(pages), namespace="content") != pages:  # replicated
            assert time.monotonic() < deadline, "the replicas never had every page"
            time.sleep(0.2)
        rehearsal.reset_stats()
        for key, page in pages.items():
            assert reader.get(key, namespace="content") == page
        assert rehearsal.reads_by_role() == {"master": 0, "replica": len(pages)}
    finally:
        writer.close()
        reader.close()
    # The read port serves the master (a backup server) until HAProxy's check has seen a replica:
    # the old master rejoined a moment ago, and a check runs every check_interval_ms (rise 1).
    deadline = time.monotonic() + 10
    while (read := rehearsal.cli(LOAD_BALANCER, GROUP_2_READ, "role", namespace="rh-app")).stdout.split()[:1] != ["slave"]:
        assert time.monotonic() < deadline, read.stdout + read.stderr
        time.sleep(0.5)


def sentinel_links_hold(rehearsal: Rehearsal, seconds: float = 8) -> None:
    """Every sentinel and node drops the connections made as `sentinel` (the sentinels' links to
    the nodes and to each other), so each sentinel logs in again with the auth-pass and
    sentinel-pass it holds now; past down-after (5 s), no group is down and every quorum holds."""
    for name, address in SIX_HOSTS.items():
        rehearsal.cli(address, 7000 + list(SIX_HOSTS).index(name), "client", "kill", "user", USERS.sentinel)
    for address, port in SENTINELS.values():
        rehearsal.cli(address, port, "client", "kill", "user", USERS.sentinel)
    time.sleep(seconds)
    for host, (address, port) in SENTINELS.items():
        for group in GROUPS:
            assert rehearsal.cli(address, port, "sentinel", "ckquorum", group).stdout.startswith("OK"), (host, group)
            master = rehearsal.cli(address, port, "sentinel", "master", group).stdout.split()
            flags = master[master.index("flags") + 1]
            assert flags == "master", (host, group, flags)


def accepts_sentinel(rehearsal: Rehearsal, address: str, port: int, password: str) -> bool:
    return logs_in(host=address, port=port, username=USERS.sentinel, password=password, ssl=True,
                   ssl_ca_certs=rehearsal.ca_file, socket_timeout=5)


def test_the_sentinel_password_rotates_through_two_replays_keeping_every_quorum(rehearsal: Rehearsal) -> None:
    old = str(rehearsal.provider_state.resources["redis-credentials-sentinel-password"]["outputs"]["result"])
    new = "RotatedSentinelPassword0123456789"
    rehearsal.secrets.update(sentinel_password=new, sentinel_password_previous=old)
    phase_1 = rehearsal.deploy(redis=SENTINEL)
    rehearsal.timings["sentinel_phase_1"] = phase_1.seconds
    processes = [(a, 7000 + i) for i, a in enumerate(SIX_HOSTS.values())] + list(SENTINELS.values())
    assert all(accepts_sentinel(rehearsal, a, p, old) and accepts_sentinel(rehearsal, a, p, new) for a, p in processes)
    sentinel_links_hold(rehearsal)
    del rehearsal.secrets["sentinel_password_previous"]
    phase_2 = rehearsal.deploy(redis=SENTINEL)
    rehearsal.timings["sentinel_phase_2"] = phase_2.seconds
    for address, port in processes:
        assert not accepts_sentinel(rehearsal, address, port, old) and accepts_sentinel(rehearsal, address, port, new)
    sentinel_links_hold(rehearsal)  # with only the new password accepted anywhere
