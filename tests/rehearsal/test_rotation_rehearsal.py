"""Password rotation through `pulumi up` on six booted Debian hosts (issue 24, part 1).

One deployment of the shipped prod stack (cluster, TLS, exporters), then, in order:
- phase 1 of `app`, `admin`, `replication` and `monitor` together (the four `<key>_previous` set),
  while a client keeps the old app password and another switches to the new one, both
  reconnecting every few writes, and every exporter is sampled on its host;
- phase 2 (the `_previous` keys removed): the old passwords are refused by every node;
- a host unreachable (its SSH refused) in the middle of each phase of a second `app` rotation:
  the replay stops naming it, every client keeps working, and a replay once it is back finishes.

Run it with `-s` for the numbers (auth errors, sync_full, replay times).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.ops.rotate import logs_in as fresh_login
from cachelayer.render.nodes import USERS
from rehearsal.engine import StepFailed
from rehearsal.hosts import leftovers
from rehearsal.scenario import SIX_HOSTS, Rehearsal

pytestmark = pytest.mark.rehearsal
PORTS = {name: 7000 + i for i, name in enumerate(SIX_HOSTS)}
ROTATED = ("app", "admin", "replication", "monitor")
SAMPLER = "/run/rotation-sampler"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    started = Rehearsal.start()
    try:
        started.timings["deploy"] = started.deploy().seconds
        # The generated passwords become the stack's given ones, as an operator reads them from
        # the outputs before a rotation (the stack keeps the same values: nothing changes).
        started.secrets = {f"{user}_password": generated(started, user) for user in (*ROTATED, "sentinel")}
        assert started.deploy().steps == []
        yield started
    finally:
        started.down()
        print(f"\nrotation rehearsal timings: {started.timings}")
        assert not leftovers(), f"left behind: {leftovers()}"


def generated(rehearsal: Rehearsal, user: str) -> str:
    return str(rehearsal.provider_state.resources[f"redis-credentials-{user}-password"]["outputs"]["result"])


def new_password(user: str, round_: int) -> str:
    return f"Rotated{round_}{user.capitalize()}Pw0123456789abcdef"


# --- clients and samplers -------------------------------------------------------------------


def is_auth_error(error: Exception) -> bool:
    text = str(error)
    return isinstance(error, redis.AuthenticationError) or any(
        word in text for word in ("WRONGPASS", "NOAUTH", "invalid username-password")
    )


@dataclass
class Writer:
    """Writes through the cluster as `app`, reconnecting (a fresh login) every 10 writes; its
    password can be switched, as an application switches to the stack's new output."""

    rehearsal: Rehearsal
    password: str
    name: str
    writes: int = 0
    auth_errors: list[str] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def _client(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(address, PORTS[name]) for name, address in SIX_HOSTS.items()],
            username=USERS.app, password=self.password, ssl=True, ssl_ca_certs=self.rehearsal.ca_file,
            socket_timeout=3, socket_connect_timeout=3,
        )

    def run(self) -> None:
        client: RedisCluster | None = None
        while not self.stop.is_set():
            try:
                if client is None or self.writes % 10 == 0:
                    if client is not None:
                        client.close()
                    client = self._client()
                client.set(f"rotation:{self.name}:{self.writes % 300}", self.writes)
                self.writes += 1
            except Exception as error:  # every error is a finding
                (self.auth_errors if is_auth_error(error) else self.other_errors).append(f"{type(error).__name__}: {error}")
                client = None
                time.sleep(0.2)
            time.sleep(0.005)
        if client is not None:
            client.close()

    def __enter__(self) -> Writer:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)

    def summary(self) -> str:
        return f"{self.name}: {self.writes} writes, {len(self.auth_errors)} auth errors, {len(self.other_errors)} other"


SAMPLER_SCRIPT = """
import time, urllib.request
urls = {urls!r}
with open("{log}", "a", buffering=1) as log:
    while True:
        for url in urls:
            try:
                text = urllib.request.urlopen(url, timeout=2).read().decode()
                up = [l.split()[-1] for l in text.splitlines() if l.startswith("redis_up ")]
                log.write(f"{{url}} up={{up[0] if up else '?'}}\\n")
            except Exception as error:
                log.write(f"{{url}} unreachable {{type(error).__name__}}\\n")
        time.sleep(0.5)
"""


@contextmanager
def exporters_sampled(rehearsal: Rehearsal) -> Iterator[dict[str, list[str]]]:
    """Every exporter of every host scraped twice a second on its host (they listen on the
    machine's address; the firewall lets loopback in). Yields host -> its log lines at the end."""
    found: dict[str, list[str]] = {}
    for name, address in SIX_HOSTS.items():
        candidates = [f"http://{address}:{9121 + i}/metrics" for i in range(6)]
        probe = (f"import urllib.request\nfor url in {candidates!r}:\n    try:\n        urllib.request.urlopen(url, timeout=2)\n"
                 "        print(url)\n    except OSError:\n        pass\n")
        urls = rehearsal.hosts.sh(name, f"python3 - <<'EOF'\n{probe}EOF\n")[1].split()
        assert urls, f"{name}: no exporter answers"
        script = SAMPLER_SCRIPT.format(urls=urls, log=f"{SAMPLER}.log")
        rehearsal.hosts.sh(name, f"cat > {SAMPLER}.py <<'EOF'\n{script}\nEOF\nrm -f {SAMPLER}.log; date +%s > {SAMPLER}.since; "
                                 f"setsid nohup python3 {SAMPLER}.py >/dev/null 2>&1 < /dev/null & echo $! > {SAMPLER}.pid")
    try:
        yield found
    finally:
        for name in SIX_HOSTS:
            # The exporters' own journal since the sampling began: every refused login they met.
            refused = (f"journalctl --since=@$(cat {SAMPLER}.since) -u 'redis-*exporter*' --no-pager -o cat "
                       "| grep -ciE 'WRONGPASS|invalid username-password' || true")
            log = rehearsal.hosts.sh(name, f"kill $(cat {SAMPLER}.pid); {refused}; cat {SAMPLER}.log; rm -f {SAMPLER}.*",
                                     check=False)[1].splitlines()
            found[name] = log[1:]
            found[f"{name} refused logins"] = [log[0]]


def assert_exporters_kept_reading(scrapes: dict[str, list[str]]) -> None:
    """No exporter was refused a login; each reads its process at the end. (A scrape in flight when
    its node runs ACL LOAD reads redis_up 0 once: Redis 7.0 drops every connection of the reloaded
    users, and the exporter's next scrape logs in again; docs/security.md, "Measured".)"""
    for host, lines in scrapes.items():
        if host.endswith("refused logins"):
            assert lines == ["0"], (host, lines)
            continue
        assert lines, host
        for url in {line.split()[0] for line in lines}:
            mine = [line for line in lines if line.startswith(url + " ")]
            assert mine[-1].endswith("up=1"), (url, mine[-5:])
            assert sum(line.endswith("up=0") for line in mine) <= 1, (url, mine)


def scrape_summary(scrapes: dict[str, list[str]]) -> str:
    lines = [line for host, host_lines in scrapes.items() if not host.endswith("refused logins") for line in host_lines]
    counts = {kind: sum(1 for line in lines if kind in line) for kind in ("up=1", "up=0", "unreachable")}
    return f"{len(lines)} scrapes: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())


# --- reading the nodes ---------------------------------------------------------------------


def logs_in(rehearsal: Rehearsal, address: str, port: int, user: str, password: str) -> bool:
    return fresh_login(host=address, port=port, username=user, password=password, ssl=True,
                       ssl_ca_certs=rehearsal.ca_file, socket_timeout=5)


def info(rehearsal: Rehearsal, address: str, port: int, section: str) -> dict[str, str]:
    text = rehearsal.cli(address, port, "info", section).stdout
    return dict(line.split(":", 1) for line in text.replace("\r", "").splitlines() if ":" in line)


def masters(rehearsal: Rehearsal) -> dict[str, int]:
    """master name -> its sync_full (full resyncs it served since it started)."""
    found = {}
    for name, address in SIX_HOSTS.items():
        if info(rehearsal, address, PORTS[name], "replication").get("role") == "master":
            found[name] = int(info(rehearsal, address, PORTS[name], "stats")["sync_full"])
    return found


def replicas_linked(rehearsal: Rehearsal) -> list[str]:
    linked = []
    for name, address in SIX_HOSTS.items():
        replication = info(rehearsal, address, PORTS[name], "replication")
        if replication.get("role") == "slave" and replication.get("master_link_status") == "up":
            linked.append(name)
    return linked


def cut_replica_links(rehearsal: Rehearsal) -> None:
    """Every replica drops its link: it reconnects with the masterauth it holds now."""
    for name, address in SIX_HOSTS.items():
        if info(rehearsal, address, PORTS[name], "replication").get("role") == "slave":
            rehearsal.cli(address, PORTS[name], "client", "kill", "type", "master")


def wait_linked(rehearsal: Rehearsal, seconds: float = 30) -> list[str]:
    deadline = time.monotonic() + seconds
    while len(linked := replicas_linked(rehearsal)) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    return linked


def automation_works(rehearsal: Rehearsal, host: str = "cache-2") -> None:
    """The host's health check and backup service, which log in with admin.pass."""
    health = rehearsal.hosts.sh(host, "/opt/redis/scripts/health-check.sh", check=False)[1]
    assert f"health of prod (cluster) as seen from {host}: ok" in health, health
    status, backup = rehearsal.hosts.sh(host, "systemctl start redis-backup.service", check=False)
    assert status == 0, backup + rehearsal.hosts.sh(host, "journalctl -u redis-backup.service -n 20 --no-pager")[1]


@contextmanager
def ssh_refused(address: str) -> Iterator[None]:
    """The host's SSH refused from the controller (a reset, as a host whose sshd is down), while
    its Redis keeps serving: what a deploy meets when a host drops out of reach."""
    table = "rh_rotation_block"
    subprocess.run(["nft", "add", "table", "inet", table], check=True)
    try:
        subprocess.run(["nft", "add", "chain", "inet", table, "out", "{ type filter hook output priority 0; }"], check=True)
        subprocess.run(["nft", "add", "rule", "inet", table, "out", "ip", "daddr", address, "tcp", "dport", "22",
                        "reject", "with", "tcp", "reset"], check=True)
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)


# --- the scenarios ---------------------------------------------------------------------------


def test_phase_1_of_four_users_together_refuses_nobody(rehearsal: Rehearsal) -> None:
    old = dict(rehearsal.secrets)
    sync_before = masters(rehearsal)
    for user in ROTATED:
        rehearsal.secrets[f"{user}_password"] = new_password(user, 1)
        rehearsal.secrets[f"{user}_password_previous"] = old[f"{user}_password"]
    with Writer(rehearsal, old["app_password"], "keeps-old") as keeps_old, \
            Writer(rehearsal, old["app_password"], "switches") as switches, \
            exporters_sampled(rehearsal) as scrapes:
        time.sleep(1)
        replay = rehearsal.deploy()
        switches.password = new_password("app", 1)  # the application takes the new output
        time.sleep(2)
    rehearsal.timings["phase_1"] = replay.seconds
    sync_after = masters(rehearsal)
    print(f"\nphase 1 ({replay.seconds:.1f} s): {keeps_old.summary()}; {switches.summary()}; "
          f"sync_full before {sync_before} after {sync_after}")
    ran = set(replay.ran())
    assert {f"redis-{h}-accept-credentials" for h in SIX_HOSTS} <= ran and {f"redis-{h}-apply-config" for h in SIX_HOSTS} <= ran
    assert not any(name.endswith("-restart") for name in ran), ran  # no node restarted
    assert keeps_old.auth_errors == [] and switches.auth_errors == [], (keeps_old.auth_errors[:5], switches.auth_errors[:5])
    assert keeps_old.other_errors == [] and switches.other_errors == [], (keeps_old.other_errors[:5], switches.other_errors[:5])
    assert keeps_old.writes > 50 and switches.writes > 50
    # Exporters: never redis_up 0 (a refused monitor login); each scraped after its restart.
    print(f"exporter samples in phase 1: {scrape_summary(scrapes)}")
    assert_exporters_kept_reading(scrapes)
    # Both passwords of every rotated user work on every node; the new ones are presented.
    for name, address in SIX_HOSTS.items():
        for user in ROTATED:
            assert logs_in(rehearsal, address, PORTS[name], user, old[f"{user}_password"]), (name, user)
            assert logs_in(rehearsal, address, PORTS[name], user, new_password(user, 1)), (name, user)
        assert rehearsal.cli(address, PORTS[name], "config", "get", "masterauth").stdout.split()[-1] == new_password(
            "replication", 1)
        admin_pass = rehearsal.hosts.sh(name, "cat /etc/redis/admin.pass")[1].strip()
        assert admin_pass == new_password("admin", 1), name
    # Replicas: still linked, no full resync; a link cut now comes back with the new masterauth.
    assert sync_after == sync_before and len(replicas_linked(rehearsal)) == 3
    cut_replica_links(rehearsal)
    assert len(wait_linked(rehearsal)) == 3 and masters(rehearsal) == sync_before
    automation_works(rehearsal)


def test_phase_2_refuses_the_old_passwords_everywhere(rehearsal: Rehearsal) -> None:
    retired = {user: rehearsal.secrets.pop(f"{user}_password_previous") for user in ROTATED}
    sync_before = masters(rehearsal)
    with Writer(rehearsal, new_password("app", 1), "new") as writer, exporters_sampled(rehearsal) as scrapes:
        time.sleep(1)
        replay = rehearsal.deploy()
        time.sleep(2)
    rehearsal.timings["phase_2"] = replay.seconds
    print(f"\nphase 2 ({replay.seconds:.1f} s): {writer.summary()}; sync_full before {sync_before} after {masters(rehearsal)}")
    assert writer.auth_errors == [] and writer.other_errors == [] and writer.writes > 50, writer.summary()
    print(f"exporter samples in phase 2: {scrape_summary(scrapes)}")
    assert_exporters_kept_reading(scrapes)
    for name, address in SIX_HOSTS.items():
        for user in ROTATED:
            assert not logs_in(rehearsal, address, PORTS[name], user, retired[user]), (name, user)
            assert logs_in(rehearsal, address, PORTS[name], user, new_password(user, 1)), (name, user)
    cut_replica_links(rehearsal)
    assert len(wait_linked(rehearsal)) == 3 and masters(rehearsal) == sync_before
    automation_works(rehearsal)
    assert rehearsal.deploy().steps == []


def test_a_host_out_of_reach_in_either_phase_stops_it_and_a_rerun_finishes(rehearsal: Rehearsal) -> None:
    rehearsal.dial_attempts = 2
    old, new = rehearsal.secrets["app_password"], new_password("app", 2)
    rehearsal.secrets.update(app_password=new, app_password_previous=old)
    with Writer(rehearsal, old, "keeps-old") as writer:
        with ssh_refused(SIX_HOSTS["cache-3"]), pytest.raises(StepFailed) as failed:
            rehearsal.deploy()
        assert failed.value.name.startswith("redis-cache-3-"), failed.value
        # Nothing presents the new password anywhere yet: every old login still works.
        for name, address in SIX_HOSTS.items():
            assert logs_in(rehearsal, address, PORTS[name], USERS.app, old), name
        started = time.monotonic()
        rehearsal.deploy()  # the host is back: the re-run finishes phase 1
        rehearsal.timings["phase_1_rerun"] = time.monotonic() - started
    assert writer.auth_errors == [] and writer.other_errors == [], writer.summary()
    for name, address in SIX_HOSTS.items():
        assert logs_in(rehearsal, address, PORTS[name], USERS.app, new) and logs_in(rehearsal, address, PORTS[name], USERS.app, old)

    del rehearsal.secrets["app_password_previous"]
    with Writer(rehearsal, new, "new") as writer:
        with ssh_refused(SIX_HOSTS["cache-4"]), pytest.raises(StepFailed) as failed:
            rehearsal.deploy()
        assert failed.value.name.startswith("redis-cache-4-"), failed.value
        # The old password still works where phase 2 did not reach (cache-4, and any host whose
        # step had not started when the engine stopped), the new one everywhere.
        assert logs_in(rehearsal, SIX_HOSTS["cache-4"], PORTS["cache-4"], USERS.app, old)
        for name, address in SIX_HOSTS.items():
            assert logs_in(rehearsal, address, PORTS[name], USERS.app, new), name
        rehearsal.deploy()
    assert writer.auth_errors == [] and writer.other_errors == [], writer.summary()
    for name, address in SIX_HOSTS.items():
        assert not logs_in(rehearsal, address, PORTS[name], USERS.app, old), name
    automation_works(rehearsal)
    print(f"\nfailure rehearsal: {writer.summary()}")
