"""What a deploy writes and runs on each host of the hosts target, written once. Pure.

RedisHostsDeployment (components/redis_hosts.py) turns every entry into a remote Command named
`<deployment>-<machine>-<label>`; `cachelayer render` (render/files.py) writes the same entries
as `hosts/<machine><path>` and `hosts/<machine>/stdin/<script>`. A label is part of a resource
name on users' servers: changing one replaces that resource.

A file or script that holds a secret is given as a function of the passwords (`secret`), so
the component can render it inside a secret Output and `cachelayer render` with placeholders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Node, SentinelNode, Topology
from cachelayer.render.hosts import (
    ADMIN_PASS_FILE,
    BACKUP_SCRIPT,
    CONF_DIR,
    FIREWALL_UNIT,
    HEALTH_CHECK_SCRIPT,
    HEALTH_MODULE,
    HEALTH_PLAN_FILE,
    NFT_FILE,
    ROLLING_RESTART_SCRIPT,
    SYSCTL_FILE,
    THP_UNIT,
    TLS_DIR,
    UNIT_DIR,
    HostPlan,
    health_module_source,
    host_plans,
    node_paths,
    render_accept_credentials,
    render_apply_config,
    render_backup_script,
    render_backup_service,
    render_backup_timer,
    render_dirs_script,
    render_firewall_unit,
    render_health_check,
    render_health_plan,
    render_host_haproxy_config,
    render_install_script,
    render_kernel_apply,
    render_nftables,
    render_node_start,
    render_node_unit,
    render_rolling_restart,
    render_sentinel_set,
    render_sentinel_unit,
    render_sysctl,
    render_thp_unit,
    sentinel_paths,
)
from cachelayer.render.load_balancer import HOST_CONFIG_FILE
from cachelayer.render.monitoring import (
    ExporterTarget,
    exporter_password_file,
    exporter_unit_name,
    render_exporter_unit,
    render_password_file,
    stack_targets,
)
from cachelayer.render.nodes import (
    USERS,
    Passwords,
    render_auth_conf,
    render_bootstrap_script,
    render_redis_conf,
    render_sentinel_conf,
    render_users_acl,
)

SecretText = Callable[[Passwords], str]


@dataclass(frozen=True)
class HostFile:
    """A file written from stdin with its owner (group: root's or redis) and mode."""

    label: str
    path: str
    mode: str
    owner: str  # "root" or "redis"
    text: str = ""
    secret: SecretText | None = None  # instead of `text` when the content holds a secret

    @property
    def group(self) -> str:
        return "root" if self.owner == "root" else "redis"

    def content(self, passwords: Passwords) -> str:
        return self.secret(passwords) if self.secret is not None else self.text


@dataclass(frozen=True)
class HostScript:
    """A script piped to `sh -s` on the host (`stdin/<file_name>` in the rendering)."""

    label: str
    file_name: str
    text: str = ""
    secret: SecretText | None = None

    def content(self, passwords: Passwords) -> str:
        return self.secret(passwords) if self.secret is not None else self.text


@dataclass(frozen=True)
class NodeFiles:
    node: Node
    conf: HostFile
    acl: HostFile
    auth: HostFile
    start: HostFile | None  # sentinel topology: picks the role from the sentinels, then execs redis-server
    unit: HostFile

    @property
    def config(self) -> tuple[HostFile, ...]:
        """What the node reads at start-up, its unit aside."""
        return (self.conf, self.acl, self.auth, *((self.start,) if self.start else ()))


@dataclass(frozen=True)
class SentinelFiles:
    sentinel: SentinelNode
    conf_dist: HostFile  # Sentinel rewrites its config: this template is copied into place once
    unit: HostFile


@dataclass(frozen=True)
class ExporterFiles:
    """One exporter on the host: a root-only password file and its unit."""

    unit_name: str
    password: HostFile
    unit: HostFile


@dataclass(frozen=True)
class HostFiles:
    """Everything one machine receives, grouped by what the component makes depend on it."""

    plan: HostPlan
    install: HostScript
    dirs: HostScript
    admin_pass: HostFile  # read by every script that talks to Redis
    accept_credentials: HostScript  # loads the users on the running processes, before anything presents a password
    firewall: tuple[HostFile, ...]  # rules, unit
    kernel: tuple[HostFile, ...]  # sysctl, THP unit (none without hosts.kernel_tuning)
    kernel_apply: HostScript | None
    backup: tuple[HostFile, ...]  # script, service, timer (hosts that run a node)
    rolling_restart: HostFile | None  # hosts that run a node
    health: tuple[HostFile, ...]  # check script, its module, its plan
    nodes: tuple[NodeFiles, ...]
    sentinels: tuple[SentinelFiles, ...]
    exporters: tuple[ExporterFiles, ...]
    apply_config: HostScript | None  # hosts that run a node
    sentinel_set: HostScript | None  # hosts that run a sentinel
    # HAProxy's config (the monitor password inside: root-only), sentinel topology with
    # load_balancer on, hosts that run a node.
    load_balancer: HostFile | None = None

    def files(self) -> Iterator[HostFile]:
        yield self.admin_pass
        yield from self.firewall
        yield from self.kernel
        yield from self.backup
        if self.rolling_restart is not None:
            yield self.rolling_restart
        yield from self.health
        for node in self.nodes:
            yield from (*node.config, node.unit)
        for sentinel in self.sentinels:
            yield from (sentinel.conf_dist, sentinel.unit)
        for exporter in self.exporters:
            yield from (exporter.password, exporter.unit)
        if self.load_balancer is not None:
            yield self.load_balancer

    def scripts(self) -> Iterator[HostScript]:
        for script in (
            self.install, self.dirs, self.kernel_apply, self.accept_credentials, self.apply_config, self.sentinel_set
        ):
            if script is not None:
                yield script


@dataclass(frozen=True)
class HostDeployFiles:
    """The hosts target's files and scripts, machine by machine, and the bootstrap run once."""

    hosts: tuple[HostFiles, ...]
    bootstrap: HostScript  # from the first node's host, once every process runs
    bootstrap_host: str
    confs: dict[int, str]  # port -> the node's redis.conf: what apply-config and the restarts compare

    def rendered(self, passwords: Passwords) -> dict[str, str]:
        """Relative path -> content, as `cachelayer render` writes them."""
        files: dict[str, str] = {}
        for host in self.hosts:
            base = f"hosts/{host.plan.name}"
            for script in host.scripts():
                files[f"{base}/stdin/{script.file_name}"] = script.content(passwords)
            for file in host.files():
                files[base + file.path] = file.content(passwords)
        files[f"hosts/{self.bootstrap_host}/stdin/{self.bootstrap.file_name}"] = self.bootstrap.content(passwords)
        return files


def host_deploy_files(settings: Settings, topology: Topology) -> HostDeployFiles:
    assert settings.hosts is not None, "the hosts target needs hosts settings"
    confs = {node.port: render_redis_conf(settings, topology, node, node_paths(node)) for node in topology.nodes}
    hosts = tuple(_host_files(settings, topology, plan, confs) for plan in host_plans(settings, topology))
    bootstrap = HostScript("bootstrap", "bootstrap.sh", render_bootstrap_script(settings, topology, TLS_DIR))
    return HostDeployFiles(hosts, bootstrap, topology.nodes[0].host, confs)


def _host_files(settings: Settings, topology: Topology, plan: HostPlan, confs: dict[int, str]) -> HostFiles:
    assert settings.hosts is not None
    kernel: tuple[HostFile, ...] = ()
    kernel_apply = None
    if settings.hosts.kernel_tuning:
        kernel = (
            HostFile("sysctl", SYSCTL_FILE, "0644", "root", render_sysctl(settings)),
            HostFile("thp-unit", f"{UNIT_DIR}/{THP_UNIT}", "0644", "root", render_thp_unit(settings)),
        )
        kernel_apply = HostScript("kernel", "kernel-apply.sh", render_kernel_apply(settings, plan))
    backup: tuple[HostFile, ...] = ()
    rolling_restart = apply_config = None
    if plan.nodes:
        backup = (
            HostFile("backup-script", BACKUP_SCRIPT, "0750", "root", render_backup_script(settings, plan)),
            HostFile(
                "backup-service-unit", f"{UNIT_DIR}/redis-backup.service", "0644", "root", render_backup_service(settings)
            ),
            HostFile("backup-timer-unit", f"{UNIT_DIR}/redis-backup.timer", "0644", "root", render_backup_timer(settings)),
        )
        rolling_restart = HostFile(
            "rolling-restart-script", ROLLING_RESTART_SCRIPT, "0750", "root", render_rolling_restart(settings, topology, plan)
        )
        apply_config = HostScript("apply-config", "apply-config.sh", render_apply_config(settings, plan, confs))
    sentinel_set = None
    if plan.sentinels:
        sentinel_set = HostScript(
            "sentinel-set", "sentinel-set.sh", secret=partial(render_sentinel_set, settings, topology, plan)
        )
    return HostFiles(
        plan=plan,
        install=HostScript("install", "host-install.sh", render_install_script(settings, plan)),
        dirs=HostScript("dirs", "host-dirs.sh", render_dirs_script(settings, plan)),
        admin_pass=HostFile("admin-pass", ADMIN_PASS_FILE, "0600", "root", secret=_admin_pass),
        accept_credentials=HostScript(
            "accept-credentials", "accept-credentials.sh", secret=partial(render_accept_credentials, settings, plan)
        ),
        firewall=(
            HostFile("firewall-rules", NFT_FILE, "0644", "root", render_nftables(settings, topology, plan)),
            HostFile("firewall-unit", f"{UNIT_DIR}/{FIREWALL_UNIT}", "0644", "root", render_firewall_unit(settings)),
        ),
        kernel=kernel,
        kernel_apply=kernel_apply,
        backup=backup,
        rolling_restart=rolling_restart,
        health=(
            HostFile("health-check", HEALTH_CHECK_SCRIPT, "0750", "root", render_health_check(settings, plan)),
            HostFile("health-module", HEALTH_MODULE, "0644", "root", health_module_source()),
            HostFile("health-plan", HEALTH_PLAN_FILE, "0644", "root", render_health_plan(settings, topology, plan)),
        ),
        nodes=tuple(_node_files(settings, topology, node, confs[node.port]) for node in plan.nodes),
        sentinels=tuple(_sentinel_files(settings, topology, sentinel) for sentinel in plan.sentinels),
        exporters=tuple(
            _exporter_files(settings, target)
            for target in (stack_targets(settings, topology) if settings.monitoring_enabled else ())
            if target.host == plan.name
        ),
        apply_config=apply_config,
        sentinel_set=sentinel_set,
        load_balancer=HostFile(
            "haproxy-config", HOST_CONFIG_FILE, "0600", "root",
            secret=partial(render_host_haproxy_config, settings, topology, plan),
        )
        if plan.nodes and settings.load_balancer_enabled
        else None,
    )


def _node_files(settings: Settings, topology: Topology, node: Node, conf: str) -> NodeFiles:
    paths = node_paths(node)
    start = None
    if topology.kind == "sentinel":
        # Root's file, run by the unit as redis: the node cannot rewrite its own start.
        start = HostFile(f"{node.name}-start", paths.start_script, "0755", "root", render_node_start(settings, topology, node))
    return NodeFiles(
        node,
        conf=HostFile(f"{node.name}-conf", paths.conf_file, "0640", "redis", conf),
        acl=HostFile(f"{node.name}-acl", paths.acl_file, "0640", "redis", secret=partial(render_users_acl, settings)),
        auth=HostFile(f"{node.name}-auth", paths.auth_file, "0640", "redis", secret=partial(render_auth_conf, node.name)),
        start=start,
        unit=HostFile(
            f"{node.name}-unit", f"{UNIT_DIR}/{node.name}.service", "0644", "root", render_node_unit(settings, topology, node)
        ),
    )


def _sentinel_files(settings: Settings, topology: Topology, sentinel: SentinelNode) -> SentinelFiles:
    paths = sentinel_paths(sentinel)
    return SentinelFiles(
        sentinel,
        conf_dist=HostFile(
            f"{sentinel.name}-conf-dist",
            f"{paths.conf_file}.dist",
            "0640",
            "redis",
            secret=partial(render_sentinel_conf, settings, topology, sentinel, paths),
        ),
        unit=HostFile(
            f"{sentinel.name}-unit", f"{UNIT_DIR}/{sentinel.name}.service", "0644", "root", render_sentinel_unit(settings, sentinel)
        ),
    )


def _exporter_files(settings: Settings, target: ExporterTarget) -> ExporterFiles:
    tls = settings.redis.tls
    unit_name = exporter_unit_name(target)
    return ExporterFiles(
        unit_name,
        password=HostFile(
            f"{unit_name}-password",
            exporter_password_file(target, CONF_DIR),
            "0600",
            "root",
            secret=partial(_exporter_password, target, tls),
        ),
        unit=HostFile(
            f"{unit_name}-unit",
            f"{UNIT_DIR}/{unit_name}.service",
            "0644",
            "root",
            render_exporter_unit(settings, target, CONF_DIR, f"{TLS_DIR}/ca.crt" if tls else None),
        ),
    )


def _admin_pass(passwords: Passwords) -> str:
    return passwords.presented(USERS.admin) + "\n"


def _exporter_password(target: ExporterTarget, tls: bool, passwords: Passwords) -> str:
    return render_password_file(target, passwords.presented(USERS.monitor), tls)
