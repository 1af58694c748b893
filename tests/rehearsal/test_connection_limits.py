"""The hosts' per-source connection limits (issue 24, part 2) on booted Debian hosts.

Three hosts (tests/rehearsal/hosts.py) run a six-node Redis Cluster and the nftables ruleset
rendered for them by render_nftables, both put there directly over SSH: this tests the
firewall, not the deploy. The whole bridge subnet is the app network here, so the flooding
namespace (rh-out, 10.233.0.200) is an *allowed* source, a compromised application server, the
worst case: an address outside app_networks is dropped whatever the limits.

Run alone, under the rehearsal lock (the hosts share the bridge rhbr0), with -s for the table:
    flock /tmp/cachelayer-rehearsal.lock venv/bin/pytest -s -p no:cacheprovider tests/rehearsal/test_connection_limits.py
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.checks import INT_RANGES
from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import Topology, build_topology
from cachelayer.render.hosts import HostPlan, host_plans, render_nftables
from rehearsal.hosts import SUBNET, Hosts, build_image, leftovers, require_tools

pytestmark = pytest.mark.rehearsal
MACHINES = {"cache-1": f"{SUBNET}.11", "cache-2": f"{SUBNET}.12", "cache-3": f"{SUBNET}.13"}
TARGET = (MACHINES["cache-1"], 7000)  # a master on cache-1 (default placement)
CLIENTS = Path(__file__).with_name("connection_clients.py")
DATA = "/var/lib/rh-limits"
LIMIT_KEYS = ("connection_rate_per_source", "connection_burst_per_source", "connections_per_source")
# The firewall as it was before the limits: every limit at the highest value the settings allow.
NO_LIMITS = {key: INT_RANGES[f"hosts.{key}"].high for key in LIMIT_KEYS}
# Low enough that any client is over them within a second, on any machine.
STRICT = {"connection_rate_per_source": 5, "connection_burst_per_source": 10, "connections_per_source": 8}


@dataclass
class Deployment:
    hosts: Hosts
    password: str
    host_key: str

    def settings(self, limits: dict[str, int] | None = None) -> Settings:
        config = read_stack_config("prod")
        machines = [{"name": n, "address": a, "ssh_host_key": self.host_key} for n, a in MACHINES.items()]
        config["hosts"] = {**config["hosts"], "machines": machines, "app_networks": [f"{SUBNET}.0/24"], **(limits or {})}
        return load_settings(config, "prod")

    def plans(self, settings: Settings) -> tuple[Topology, tuple[HostPlan, ...]]:
        topology = build_topology(settings)
        return topology, host_plans(settings, topology)

    def load_firewall(self, limits: dict[str, int] | None = None) -> Settings:
        """The rendered ruleset on every host (one nft transaction; a reload starts empty meters)."""
        settings = self.settings(limits)
        topology, plans = self.plans(settings)
        for plan in plans:
            rules = render_nftables(settings, topology, plan)
            self.hosts.sh(plan.name, f"cat > /etc/cachelayer-redis.nft <<'NFT'\n{rules}NFT\nnft -f /etc/cachelayer-redis.nft\n")
        return settings

    def cli(self, host: str, command: str) -> str:
        """redis-cli on a host (a peer: exempt from the limits), the password from the environment."""
        return self.hosts.sh(host, f"export REDISCLI_AUTH='{self.password}'\n{command}\n")[1]

    def cluster_health(self) -> dict[str, int]:
        """Every node: cluster_state ok and no node flagged failing; the bus messages each received."""
        received = {}
        for address, port in endpoints():
            info = self.cli("cache-1", f"redis-cli -h {address} -p {port} cluster info")
            assert "cluster_state:ok" in info, f"{address}:{port}: {info}"
            nodes = self.cli("cache-1", f"redis-cli -h {address} -p {port} cluster nodes")
            assert not re.search(r"\b(fail\??|noaddr)\b", nodes), f"{address}:{port}: {nodes}"
            received[f"{address}:{port}"] = int(re.search(r"cluster_stats_messages_received:(\d+)", info).group(1))  # type: ignore[union-attr]
        return received

    def counters(self, host: str = "cache-1") -> dict[str, int]:
        """Packets counted by the limit rules of `host`'s `admitted` chain, by what the rule does."""
        chain = self.hosts.sh(host, "nft list chain inet cachelayer_redis admitted")[1]
        found = {}
        for name, pattern in (("peers", r"ip saddr @peers_v4 counter packets (\d+)"),
                              ("rate_drops", r"ip saddr limit rate over .*? counter packets (\d+)"),
                              ("count_drops", r"ip saddr \. tcp dport ct count over \d+ } counter packets (\d+)")):  # fmt: skip
            match = re.search(pattern, chain)
            assert match, chain
            found[name] = int(match.group(1))
        return found


def endpoints() -> list[tuple[str, int]]:
    return [(MACHINES[name], port) for name, port in PLACEMENT]


# Default placement with three machines: master m on machine m, its replica one machine on.
PLACEMENT = [("cache-1", 7000), ("cache-2", 7001), ("cache-3", 7002), ("cache-2", 7003), ("cache-3", 7004), ("cache-1", 7005)]


def redis_node(port: int, address: str, password: str) -> str:
    """A cluster node with requirepass, its config file written from stdin (never argv)."""
    directory = f"{DATA}/{port}"
    return f"""set -e
mkdir -p {directory}
umask 077
cat > {directory}/redis.conf <<'CONF'
port {port}
bind 0.0.0.0
protected-mode no
cluster-enabled yes
cluster-config-file {directory}/nodes.conf
cluster-announce-ip {address}
dir {directory}
requirepass {password}
masterauth {password}
maxclients 10000
tcp-backlog 4096
save ""
appendonly no
daemonize yes
logfile {directory}/redis.log
CONF
redis-server {directory}/redis.conf
export REDISCLI_AUTH='{password}'
for _ in $(seq 100); do [ "$(redis-cli -p {port} ping 2>/dev/null)" = PONG ] && exit 0; sleep 0.1; done
echo "redis {port} did not answer"; exit 1
"""


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    require_tools()
    image = build_image()
    hosts = Hosts.create(image)
    try:
        hosts.up(MACHINES)
        found = Deployment(hosts, secrets.token_hex(16), image.host_key)
        settings = found.load_firewall()  # the defaults, before Redis starts, as the deploy does
        _, plans = found.plans(settings)
        assert sorted((p.name, n.port) for p in plans for n in p.nodes) == sorted(PLACEMENT)
        for name, port in PLACEMENT:
            hosts.sh(name, redis_node(port, MACHINES[name], found.password))
        nodes = " ".join(f"{a}:{p}" for a, p in endpoints())
        found.cli("cache-1", f"redis-cli --cluster create {nodes} --cluster-replicas 1 --cluster-yes")
        deadline = time.monotonic() + 30
        while True:
            try:
                found.cluster_health()
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        # The flooding namespace may open tens of thousands of connections: reuse TIME_WAIT ports.
        for key, value in (("net.ipv4.tcp_tw_reuse", "1"), ("net.ipv4.ip_local_port_range", "1024 65000")):
            subprocess.run(["ip", "netns", "exec", "rh-out", "sysctl", "-qw", f"{key}={value}"], check=True)
        yield found
    finally:
        hosts.down()
        assert not leftovers(), f"left behind: {leftovers()}"


def from_namespace(deployment: Deployment, namespace: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    result = deployment.hosts.netns(namespace, sys.executable, str(CLIENTS), *args, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def from_peer(deployment: Deployment, host: str, *args: str) -> dict[str, Any]:
    script = f"cat > /tmp/connection_clients.py <<'PY'\n{CLIENTS.read_text()}PY\npython3 /tmp/connection_clients.py {' '.join(args)}\n"
    return json.loads(deployment.hosts.sh(host, script)[1].strip().splitlines()[-1])


def start_app(deployment: Deployment, seconds: int) -> subprocess.Popen[str]:
    """The application in rh-app (inside app_networks): redis-py's cluster client, its pools."""
    return subprocess.Popen(
        ["ip", "netns", "exec", "rh-app", sys.executable, str(CLIENTS), "app", TARGET[0], str(TARGET[1]), str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "REDIS_PASSWORD": deployment.password},
    )  # fmt: skip


def app_result(app: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = app.communicate(timeout=120)
    assert app.returncode == 0, err
    return json.loads(out)


def sustained(brute: dict[str, Any]) -> tuple[float, int]:
    """Guesses per second that reached Redis once the firewall started dropping (the burst
    spent), and over how many whole seconds; (mean of all seconds, 0) when nothing was dropped."""
    through, dropped = brute["through"], brute["dropped"]
    first = next((i for i, n in enumerate(dropped) if n), None)
    if first is None:
        return sum(through) / len(through), 0
    after = through[first + 1 :]
    return (sum(after) / len(after) if after else float("nan")), len(after)


# Long enough for one Python client (~500-1000 guesses/s here) to spend the default burst of 4096.
BRUTE_SECONDS = 20


def test_a_brute_force_is_throttled_and_the_app_pool_is_not(deployment: Deployment) -> None:
    rows: dict[str, dict[str, Any]] = {}
    for label, limits in (("no limits", NO_LIMITS), ("defaults", None)):
        settings = deployment.load_firewall(limits)
        before = deployment.counters()
        app = start_app(deployment, BRUTE_SECONDS + 6)
        brute = from_namespace(deployment, "rh-out", "brute", *map(str, TARGET), str(BRUTE_SECONDS), "64")
        pipelined = from_namespace(deployment, "rh-out", "pipelined", *map(str, TARGET), "3")
        rows[label] = {"settings": settings.hosts, "brute": brute, "pipelined": pipelined, "app": app_result(app),
                       "counters": {k: v - before[k] for k, v in deployment.counters().items()}}  # fmt: skip
        deployment.cluster_health()

    defaults = rows["defaults"]["settings"]
    print("\nAUTH guesses from one source (rh-out) that reached Redis, per second")
    print(f"{'firewall':<12}{'new connection each':>22}{'seconds measured':>18}{'one connection':>16}{'app ops':>9}{'app errors':>12}")
    for label, row in rows.items():
        rate, seconds = sustained(row["brute"])
        one = row["pipelined"]["through"] / row["pipelined"]["seconds"]
        print(f"{label:<12}{rate:>22.0f}{seconds:>18}{one:>16.0f}{row['app']['ops']:>9}{row['app']['error_count']:>12}")
        print(f"{'':<12}per second: {row['brute']['through']}  dropped SYN timeouts: {row['brute']['dropped']}")

    for label, row in rows.items():
        # The application host's pool (a different source) never noticed, reconnects included.
        assert row["app"]["error_count"] == 0 and row["app"]["ops"] > 0, (label, row["app"])
        assert row["brute"]["error_count"] == 0, (label, row["brute"]["errors"])
    unlimited = rows["no limits"]
    assert sum(unlimited["brute"]["dropped"]) == 0 and unlimited["counters"]["rate_drops"] == 0, unlimited
    limited = rows["defaults"]
    rate, seconds = sustained(limited["brute"])
    assert limited["counters"]["rate_drops"] > 0, limited["counters"]
    assert seconds >= 2, f"the burst of {defaults.connection_burst_per_source} was spent too late to measure: {limited['brute']}"
    # Throttled: once the burst is spent, at most the bucket's rate gets through (slack for second
    # boundaries). Not throttled: the same client without limits never had a SYN dropped (its
    # speed depends on this machine's load, so it is printed, not asserted).
    assert rate <= 1.5 * defaults.connection_rate_per_source, limited["brute"]


def test_a_flood_of_held_connections_stops_at_the_per_source_count(deployment: Deployment) -> None:
    settings = deployment.load_firewall()
    assert settings.hosts is not None
    limit = settings.hosts.connections_per_source
    app = start_app(deployment, 12)
    held = from_namespace(deployment, "rh-out", "hold", *map(str, TARGET), str(limit + 500), "256")
    app_run = app_result(app)
    print(f"\nheld connections from one source: {held['served']} served, {held['refused']} refused (limit {limit})")
    assert held["served"] == limit and held["refused"] == 500, held
    assert deployment.counters()["count_drops"] > 0
    assert app_run["error_count"] == 0 and app_run["ops"] > 0, app_run
    deployment.cluster_health()


def test_the_peers_are_exempt_and_the_cluster_bus_is_untouched(deployment: Deployment) -> None:
    # Limits any client exceeds at once: the peers pass them all, an application source does not.
    deployment.load_firewall(STRICT)
    bus_before = deployment.cluster_health()
    peer = from_peer(deployment, "cache-2", "brute", *map(str, TARGET), "3", "16")
    other = from_namespace(deployment, "rh-out", "brute", *map(str, TARGET), "3", "16")
    allowed = STRICT["connection_burst_per_source"] + 3 * STRICT["connection_rate_per_source"]
    print(f"\nstrict limits {STRICT}: peer cache-2 {sum(peer['through'])} guesses in 3 s, 0 expected dropped "
          f"({sum(peer['dropped'])}); rh-out {sum(other['through'])} (at most ~{allowed})")
    assert sum(peer["dropped"]) == 0 and sum(peer["through"]) > 3 * allowed, peer
    assert sum(other["dropped"]) > 0 and sum(other["through"]) <= allowed + STRICT["connection_rate_per_source"], other
    # A failover under the strict limits: replication and bus links between the machines are remade.
    nodes = deployment.cli("cache-1", f"redis-cli -h {TARGET[0]} -p {TARGET[1]} cluster nodes")
    replica = next(line.split()[1].split("@")[0] for line in nodes.splitlines() if " slave " in f" {line.split()[2]} ".replace(",", " "))
    address, port = replica.rsplit(":", 1)
    answer = deployment.cli("cache-1", f"redis-cli -h {address} -p {port} cluster failover")
    assert answer.strip() == "OK", answer
    deadline = time.monotonic() + 30
    while "role:master" not in deployment.cli("cache-1", f"redis-cli -h {address} -p {port} info replication"):
        assert time.monotonic() < deadline, f"replica {replica} was not promoted under the strict limits"
        time.sleep(0.5)
    time.sleep(2)
    bus_after = deployment.cluster_health()
    assert all(bus_after[node] > bus_before[node] for node in bus_before), (bus_before, bus_after)
    assert deployment.counters()["peers"] > 0
