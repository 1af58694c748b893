"""Render what the prod stack puts on each Linux host besides the Redis configs: systemd units,
the firewall rule set, kernel settings, and the operator scripts. Pure (jinja2, no Pulumi).

Every script reads the admin password from a root-only file (ADMIN_PASS_FILE) or from
REDISCLI_AUTH when the caller already set it, never from its command line.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import shlex
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from cachelayer.config.hosts import Machine
from cachelayer.config.settings import Settings, exporter_ports
from cachelayer.plan.topology import Node, SentinelNode, Topology
from cachelayer.render.load_balancer import load_balancer_groups, render_haproxy_config
from cachelayer.render.nodes import (
    USERS,
    Passwords,
    Paths,
    accepted_hashes,
    cli_tls_flags,
    host_paths,
    render_node_start_script,
    render_template,
    sentinel_users,
)
from cachelayer.render.rollout import live_values

CONF_DIR = "/etc/redis"
TLS_DIR = f"{CONF_DIR}/tls"
ADMIN_PASS_FILE = f"{CONF_DIR}/admin.pass"
SCRIPTS_DIR = "/opt/redis/scripts"
BACKUP_DIR = "/var/backups/redis"
# Whatever their age, the newest backups of each node stay: a run of failed nights never
# leaves a host without one.
KEEP_NEWEST_BACKUPS = 3
LOG_DIR = "/var/log/redis"
UNIT_DIR = "/etc/systemd/system"
NFT_DIR = "/etc/nftables.d"
NFT_FILE = f"{NFT_DIR}/cachelayer-redis.nft"
SYSCTL_FILE = "/etc/sysctl.d/60-cachelayer-redis.conf"
FIREWALL_UNIT = "cachelayer-firewall.service"
THP_UNIT = "disable-thp.service"
BACKUP_SCRIPT = f"{SCRIPTS_DIR}/redis-backup.sh"
HEALTH_CHECK_SCRIPT = f"{SCRIPTS_DIR}/health-check.sh"
# health-check.sh runs health.py itself (the checks of `cachelayer health`), shipped beside it, over this plan.
HEALTH_MODULE = f"{SCRIPTS_DIR}/cachelayer_health.py"
HEALTH_PLAN_FILE = f"{CONF_DIR}/health.json"
ROLLING_RESTART_SCRIPT = f"{SCRIPTS_DIR}/rolling-restart.sh"
SOMAXCONN = 1024  # above redis.conf's tcp-backlog 511
WAIT_SECONDS = 120
REDIS_SERVER = "/usr/bin/redis-server"

def _render(template: str, settings: Settings, **context: Any) -> str:
    return render_template(template, stack=settings.stack, **context)


@dataclass(frozen=True)
class HostPlan:
    """One machine and the Redis processes it runs."""

    machine: Machine
    nodes: tuple[Node, ...]
    sentinels: tuple[SentinelNode, ...]

    @property
    def name(self) -> str:
        return self.machine.name

    @property
    def address(self) -> str:
        return self.machine.address

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(n.port for n in self.nodes)


def host_plans(settings: Settings, topology: Topology) -> tuple[HostPlan, ...]:
    """Every machine that runs at least one process, in the order hosts.machines lists them."""
    assert settings.hosts is not None, "the hosts target needs hosts settings"
    plans = []
    for machine in settings.hosts.machines:
        nodes = tuple(n for n in topology.nodes if n.host == machine.name)
        sentinels = tuple(s for s in topology.sentinels if s.host == machine.name)
        if nodes or sentinels:
            plans.append(HostPlan(machine, nodes, sentinels))
    return tuple(plans)


def ssh_user(settings: Settings, machine: Machine) -> str:
    assert settings.hosts is not None
    return machine.ssh_user or settings.hosts.ssh_user


def sudo_prefix(user: str) -> str:
    """Root needs no sudo; anyone else runs the privileged part with non-interactive sudo."""
    return "" if user == "root" else "sudo -n "


def node_paths(node: Node) -> Paths:
    return host_paths(node.name, node.port)


def sentinel_paths(sentinel: SentinelNode) -> Paths:
    return host_paths(sentinel.name, sentinel.port)


def write_file_command(path: str, mode: str, owner: str, group: str, user: str) -> str:
    """Write stdin to `path` atomically (temporary file + rename) with its owner and mode set
    before the file appears, so a secret is never readable by others, not even briefly."""
    directory, base = posixpath.split(path)
    inner = (
        "umask 077 && "
        f'tmp="$(mktemp {shlex.quote(directory)}/.{base}.XXXXXX)" && '
        'cat > "$tmp" && '
        f'chown {owner}:{group} "$tmp" && chmod {mode} "$tmp" && '
        f'mv -f "$tmp" {shlex.quote(path)}'
    )
    return f"{sudo_prefix(user)}sh -c {shlex.quote(inner)}"


def run_script_command(user: str) -> str:
    """Run the script on stdin as root with REDISCLI_AUTH set from the root-only admin password
    file (a caller's own REDISCLI_AUTH, kept across sudo, wins). Never on a command line, and
    not through the Command's `environment`: pulumi-command fails a command whose env request
    sshd refuses, and stock sshd accepts only LANG and LC_*."""
    inner = (
        'if [ -z "${REDISCLI_AUTH:-}" ] && [ -r ' + ADMIN_PASS_FILE + " ]; then "
        'REDISCLI_AUTH="$(cat ' + ADMIN_PASS_FILE + ')"; export REDISCLI_AUTH; fi; exec bash -s'
    )
    prefix = "" if user == "root" else "sudo -n --preserve-env=REDISCLI_AUTH "
    return f"{prefix}sh -c {shlex.quote(inner)}"


def _cli_context(settings: Settings) -> dict[str, Any]:
    return {
        "admin_user": USERS.admin,
        "admin_pass_file": ADMIN_PASS_FILE,
        "tls_dir": TLS_DIR,
        # "$TLS_DIR" expands in the script, so tests can point it at their own certificates.
        "tls_flags": cli_tls_flags(settings, "$TLS_DIR"),
    }


def render_install_script(settings: Settings, host: HostPlan) -> str:
    return _render(
        "host-install.sh.j2",
        settings,
        host=host.name,
        sentinel=settings.redis.topology == "sentinel",
        monitoring=settings.monitoring_enabled,
        load_balancer=bool(host.nodes) and settings.load_balancer_enabled,
    )


def render_dirs_script(settings: Settings, host: HostPlan) -> str:
    data_dirs = [node_paths(n).data_dir for n in host.nodes] + [sentinel_paths(s).data_dir for s in host.sentinels]
    return _render(
        "host-dirs.sh.j2",
        settings,
        host=host.name,
        sentinel=settings.redis.topology == "sentinel",
        conf_dir=CONF_DIR,
        tls_dir=TLS_DIR,
        data_dirs=data_dirs,
        log_dir=LOG_DIR,
        scripts_dir=SCRIPTS_DIR,
        backup_dir=BACKUP_DIR,
        nft_dir=NFT_DIR,
    )


def render_node_unit(settings: Settings, topology: Topology, node: Node) -> str:
    assert settings.hosts is not None
    return _render(
        "redis-node.service.j2",
        settings,
        node=node,
        topology=topology.kind,
        paths=node_paths(node),
        redis_server=REDIS_SERVER,
        log_dir=LOG_DIR,
        kernel_tuning=settings.hosts.kernel_tuning,
    )


def render_node_start(settings: Settings, topology: Topology, node: Node) -> str:
    """Sentinel topology: the unit's ExecStart, which picks the role before it execs redis-server."""
    return render_node_start_script(settings, topology, node, node_paths(node), [REDIS_SERVER])


def render_sentinel_unit(settings: Settings, sentinel: SentinelNode) -> str:
    return _render(
        "redis-sentinel.service.j2", settings, sentinel=sentinel, paths=sentinel_paths(sentinel), log_dir=LOG_DIR
    )


def firewall_ports(settings: Settings, topology: Topology) -> tuple[int, ...]:
    """Every port of the deployment: client, cluster bus (cluster), sentinel and the load
    balancer's write and read ports (sentinel)."""
    ports = [n.port for n in topology.nodes]
    if topology.kind == "cluster":
        ports += [n.bus_port for n in topology.nodes]
    ports += [s.port for s in topology.sentinels]
    if settings.load_balancer_enabled:
        ports += [p for g in load_balancer_groups(settings, topology) for p in (g.write_port, g.read_port)]
    return tuple(sorted(set(ports)))


def firewall_sources(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IPv4, IPv6) sources allowed to the Redis ports: every machine and the app networks.

    Overlapping entries are merged (a machine inside an app network, two nested networks):
    nft refuses an interval set whose elements overlap ("conflicting intervals specified"),
    which the rehearsal hit with the machines inside app_networks.
    """
    assert settings.hosts is not None
    networks = [ipaddress.ip_network(t, strict=False) for t in [m.address for m in settings.hosts.machines]]
    networks += [ipaddress.ip_network(t, strict=False) for t in settings.hosts.app_networks]
    v4 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
    return tuple(_nft_entry(n) for n in v4), tuple(_nft_entry(n) for n in v6)


def _nft_entry(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def render_nftables(settings: Settings, topology: Topology, host: HostPlan) -> str:
    allowed_v4, allowed_v6 = firewall_sources(settings)
    scrape_v4, scrape_v6 = _split_networks(settings.monitoring.scrape_networks)
    hosts = settings.hosts
    assert hosts is not None
    # The machines' own addresses (not the app networks): exempt from the per-source limits.
    peers_v4, peers_v6 = _split_networks(tuple(m.address for m in hosts.machines))
    return _render(
        "nftables.conf.j2",
        settings,
        host=host.name,
        ports=firewall_ports(settings, topology),
        kinds=["client", "cluster bus"] if topology.kind == "cluster" else (
            ["client", "sentinel", "load balancer"] if settings.load_balancer_enabled else ["client", "sentinel"]
        ),
        allowed_v4=allowed_v4,
        allowed_v6=allowed_v6,
        # Monitoring: the exporter ports, open to the scrape networks only (none: loopback only).
        exporter_ports=(
            exporter_ports(settings.redis, settings.sentinel, settings.monitoring) if settings.monitoring_enabled else ()
        )
        + ((settings.load_balancer.exporter_port,) if settings.load_balancer_enabled else ()),
        scrape_v4=scrape_v4,
        scrape_v6=scrape_v6,
        peers_v4=peers_v4,
        peers_v6=peers_v6,
        rate=hosts.connection_rate_per_source,
        burst=hosts.connection_burst_per_source,
        count=hosts.connections_per_source,
    )


def _split_networks(networks: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4: list[str] = []
    v6: list[str] = []
    for text in networks:
        network = ipaddress.ip_network(text, strict=False)
        entry = str(network.network_address) if network.num_addresses == 1 else str(network)
        (v4 if network.version == 4 else v6).append(entry)
    return tuple(v4), tuple(v6)


def render_host_haproxy_config(settings: Settings, topology: Topology, host: HostPlan, passwords: Passwords) -> str:
    """/etc/haproxy/haproxy.cfg of a machine: listens on the machine's address, checks every node
    of the deployment (over TLS with the stack's CA when the stack runs TLS)."""
    ca_file = f"{TLS_DIR}/ca.crt" if settings.redis.tls else None
    return render_haproxy_config(settings, topology, passwords, host.address, host=host.name, ca_file=ca_file)


def render_firewall_unit(settings: Settings) -> str:
    return _render("cachelayer-firewall.service.j2", settings, nft_file=NFT_FILE)


def render_sysctl(settings: Settings) -> str:
    return _render("sysctl.conf.j2", settings, somaxconn=SOMAXCONN, tcp_backlog=511)


def render_thp_unit(settings: Settings) -> str:
    return _render("disable-thp.service.j2", settings)


def render_kernel_apply(settings: Settings, host: HostPlan) -> str:
    """Applies the sysctl file and the THP unit; warns (does not fail) where a container cannot."""
    return _render("kernel-apply.sh.j2", settings, host=host.name, sysctl_file=SYSCTL_FILE, thp_unit=THP_UNIT)


def render_backup_script(settings: Settings, host: HostPlan) -> str:
    assert settings.hosts is not None
    return _render(
        "redis-backup.sh.j2",
        settings,
        host=host.name,
        ports=host.ports,
        backup_dir=BACKUP_DIR,
        retention_days=settings.hosts.backup_retention_days,
        keep_newest=KEEP_NEWEST_BACKUPS,
        on_calendar=backup_calendar(settings),
        **_cli_context(settings),
    )


def render_backup_service(settings: Settings) -> str:
    return _render(
        "redis-backup.service.j2",
        settings,
        script=BACKUP_SCRIPT,
        admin_pass_file=ADMIN_PASS_FILE,
        backup_dir=BACKUP_DIR,
    )


def backup_calendar(settings: Settings) -> str:
    """The backup timer's calendar, in UTC unless the stack says so: a host's local time zone
    would move the 02:00 save against the cluster-wide backup workflow, which runs in UTC."""
    assert settings.hosts is not None
    calendar = settings.hosts.backup_on_calendar
    return calendar if calendar.split(" ")[-1] == "UTC" else f"{calendar} UTC"


def render_backup_timer(settings: Settings) -> str:
    return _render("redis-backup.timer.j2", settings, on_calendar=backup_calendar(settings))


def render_health_check(settings: Settings, host: HostPlan) -> str:
    return _render(
        "health-check.sh.j2",
        settings,
        host=host.name,
        module=posixpath.basename(HEALTH_MODULE),
        plan_file=HEALTH_PLAN_FILE,
        **_cli_context(settings),
    )


def health_module_source() -> str:
    """health.py as shipped to every host: one implementation of the checks."""
    # Read as package data, not imported: render sits below ops and must not import it.
    return (files("cachelayer.ops") / "health.py").read_text(encoding="utf-8")


def health_plan(settings: Settings, topology: Topology, host: str | None = None) -> dict[str, Any]:
    """What health.py checks from a host: every node and sentinel of the deployment, the planned
    shape, how to connect (admin user, TLS), and which processes are local to `host`."""
    return {
        "stack": settings.stack,
        "kind": topology.kind,
        "host": host,
        "nodes": [{"name": n.name, "host": n.address, "port": n.port} for n in topology.nodes],
        "sentinels": [{"name": s.name, "host": s.address, "port": s.port} for s in topology.sentinels],
        "groups": [m.group for m in topology.masters] if topology.kind == "sentinel" else [],
        "masters": settings.redis.masters,
        "replicas_per_master": settings.redis.replicas_per_master,
        "admin_user": USERS.admin,
        "tls": settings.redis.tls,
        "tls_dir": TLS_DIR,
        "local": [n.name for n in topology.nodes if n.host == host] + [s.name for s in topology.sentinels if s.host == host],
    }


def render_health_plan(settings: Settings, topology: Topology, host: HostPlan) -> str:
    return json.dumps(health_plan(settings, topology, host.name), indent=2) + "\n"


def render_rolling_restart(settings: Settings, topology: Topology, host: HostPlan) -> str:
    return _render(
        "rolling-restart.sh.j2",
        settings,
        host=host.name,
        cluster=topology.kind == "cluster",
        ports=host.ports,
        nodes=topology.nodes,
        sentinels=topology.sentinels,
        wait_seconds=WAIT_SECONDS,
        **_cli_context(settings),
    )


@dataclass(frozen=True)
class NodeLiveValues:
    port: int
    live: tuple[tuple[str, str], ...]
    auth_file: str  # the node's masterauth: set live too


def render_apply_config(settings: Settings, host: HostPlan, confs: dict[int, str]) -> str:
    """CONFIG SET of every live-settable directive of each local node's rendered config, and of
    the masterauth its auth file holds (read on the host: the script holds no secret)."""
    nodes = [
        NodeLiveValues(n.port, tuple(sorted(live_values(confs[n.port]).items())), node_paths(n).auth_file)
        for n in host.nodes
    ]
    return _render("apply-config.sh.j2", settings, host=host.name, nodes=nodes, **_cli_context(settings))


def render_accept_credentials(settings: Settings, host: HostPlan, passwords: Passwords) -> str:
    """The step that makes the host's running processes accept this deploy's passwords (both of a
    user during a rotation) before anything presents one. Holds password hashes: a secret."""
    rotating = passwords.rotating
    return _render(
        "accept-credentials.sh.j2",
        settings,
        host=host.name,
        nodes=host.nodes,
        sentinels=host.sentinels,
        sentinel_users=sentinel_users(passwords),
        admin_hashes=accepted_hashes(passwords)[USERS.admin],
        rotating_note=f" (two passwords: {', '.join(rotating)})" if rotating else "",
        **_cli_context(settings),
    )


def render_sentinel_set(settings: Settings, topology: Topology, host: HostPlan, passwords: Passwords) -> str:
    """The script that brings the host's sentinels to this deploy's settings and the sentinel
    password they present (auth-pass, sentinel-pass). Holds that password: a secret."""
    return _render(
        "sentinel-set.sh.j2",
        settings,
        host=host.name,
        sentinels=host.sentinels,
        groups=[m.group for m in topology.masters],
        sentinel_settings=settings.sentinel,
        sentinel_password=passwords.presented(USERS.sentinel),
        **_cli_context(settings),
    )
