"""The prod stack's Redis: plain Linux hosts driven over SSH with pulumi_command.remote.

Every file is written by a remote Command that takes the content on stdin (so no content ever
appears on a command line or in a log), into a temporary file whose owner and mode are set
before it is renamed into place. Files holding secrets get a secret Output as stdin, which
Pulumi stores encrypted in the state.

Config changes never restart every node at once: the unit is started only when the service
resource is created; later config uploads are followed by `apply-config` (CONFIG SET of the
live-settable directives on each host) and, only for nodes whose restart-needing directives
changed, one rolling-restart step per node, chained replicas first, then masters after a
failover (see cachelayer.render.rollout and docs/prod-hosts.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import pulumi
import pulumi_command as command
from pulumi_command.remote import ConnectionArgsDict

from cachelayer.components.monitoring import host_exporter_files
from cachelayer.components.tls_material import RedisTlsArgs, RedisTlsMaterial, create_tls_material
from cachelayer.config.hosts import Machine
from cachelayer.config.settings import Settings
from cachelayer.plan.topology import SentinelNode, Topology
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
    render_apply_config,
    render_backup_script,
    render_backup_service,
    render_backup_timer,
    render_dirs_script,
    render_firewall_unit,
    render_health_check,
    render_health_plan,
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
    run_script_command,
    sentinel_paths,
    ssh_user,
    sudo_prefix,
    write_file_command,
)
from cachelayer.render.nodes import (
    Passwords,
    render_auth_conf,
    render_bootstrap_script,
    render_redis_conf,
    render_sentinel_conf,
    render_users_acl,
)
from cachelayer.render.rollout import content_hash, restart_fingerprint, rolling_plan

LOGGING = command.remote.Logging.STDOUT_AND_STDERR


@dataclass
class RedisHostsArgs:
    settings: Settings
    topology: Topology
    passwords: pulumi.Output[Passwords]  # secret
    ssh_private_key: pulumi.Output[str]  # secret


@dataclass
class _Host:
    """What the component declares on one machine, for the resources that follow."""

    plan: HostPlan
    user: str
    connection: ConnectionArgsDict
    ready: list[pulumi.Resource]  # install + dirs: every file waits for these
    shared_files: list[pulumi.Resource]  # TLS material and admin.pass: every process needs them
    system: list[pulumi.Resource]  # firewall and kernel applied: before any process starts


class RedisHostsDeployment(pulumi.ComponentResource):
    """Redis nodes (and sentinels) as systemd services on the hosts of hosts.machines."""

    hosts: pulumi.Output[list[str]]
    services: pulumi.Output[list[str]]
    bootstrap_output: pulumi.Output[str]
    ca_cert_pem: pulumi.Output[str] | None

    def __init__(self, name: str, args: RedisHostsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cachelayer:hosts:RedisHostsDeployment", name, None, opts)
        self._name = name
        settings, topology, passwords = args.settings, args.topology, args.passwords
        assert settings.hosts is not None, "the hosts target needs hosts settings"
        plans = host_plans(settings, topology)
        admin_password: pulumi.Output[str] = pulumi.Output.secret(passwords.apply(lambda p: p.admin))
        # No `environment` on any Command: pulumi-command fails the command when sshd refuses an
        # env request (stock sshd accepts only LANG/LC_*), found by the rehearsal. The scripts
        # read the root-only admin.pass, uploaded before any of them runs (run_script_command).

        tls_material: RedisTlsMaterial | None = None
        if settings.redis.tls:
            tls_material = create_tls_material(
                f"{name}-tls", RedisTlsArgs(settings.stack, [(p.name, p.address) for p in plans]), parent=self
            )
        self.ca_cert_pem = tls_material.ca_cert_pem if tls_material else None

        acl: pulumi.Output[str] = pulumi.Output.secret(passwords.apply(lambda p: render_users_acl(settings, p)))
        confs = {node.port: render_redis_conf(settings, topology, node, node_paths(node)) for node in topology.nodes}
        hosts: dict[str, _Host] = {}
        node_services: list[pulumi.Resource] = []
        sentinel_services: list[pulumi.Resource] = []
        node_files: list[pulumi.Resource] = []
        for plan in plans:
            host = self._host(settings, topology, plan, args.ssh_private_key, admin_password, tls_material)
            hosts[plan.name] = host
            for node in plan.nodes:
                paths = node_paths(node)
                files = [
                    self._file(host, f"{node.name}-conf", paths.conf_file, confs[node.port], "0640", "redis"),
                    self._file(host, f"{node.name}-acl", paths.acl_file, acl, "0640", "redis", secret=True),
                    self._file(
                        host,
                        f"{node.name}-auth",
                        paths.auth_file,
                        _auth_conf(passwords, node.name),
                        "0640",
                        "redis",
                        secret=True,
                    ),
                ]
                if topology.kind == "sentinel":
                    # Root's file, run by the unit as redis: the node cannot rewrite its own start.
                    start = render_node_start(settings, topology, node)
                    files.append(self._file(host, f"{node.name}-start", paths.start_script, start, "0755", "root"))
                unit = render_node_unit(settings, topology, node)
                unit_file = self._file(
                    host, f"{node.name}-unit", f"{UNIT_DIR}/{node.name}.service", unit, "0644", "root"
                )
                node_files += files
                node_services.append(
                    self._service(host, node.name, unit, [*files, unit_file, *host.shared_files, *host.system])
                )
            for sentinel in plan.sentinels:
                paths = sentinel_paths(sentinel)
                conf = _sentinel_conf(settings, topology, sentinel, passwords)
                # Sentinel rewrites its config: upload a template next to it and copy it into
                # place only when the host has none yet (see the service's create command).
                dist = self._file(
                    host, f"{sentinel.name}-conf-dist", f"{paths.conf_file}.dist", conf, "0640", "redis", secret=True
                )
                unit = render_sentinel_unit(settings, sentinel)
                unit_file = self._file(
                    host, f"{sentinel.name}-unit", f"{UNIT_DIR}/{sentinel.name}.service", unit, "0644", "root"
                )
                install_conf = (
                    f"{sudo_prefix(host.user)}sh -c '[ -e {paths.conf_file} ] || "
                    f"install -m 0640 -o redis -g redis {paths.conf_file}.dist {paths.conf_file}'"
                )
                sentinel_services.append(
                    self._service(
                        host,
                        sentinel.name,
                        unit,
                        [dist, unit_file, *host.shared_files, *host.system],
                        before=install_conf,
                    )
                )
            if settings.monitoring_enabled:
                self._exporters(host, settings, topology, passwords)

        # Form the cluster (or check the sentinel quorum) once every process runs: the dev
        # stack's script, from the first host, the password read from the host's admin.pass.
        first = hosts[topology.nodes[0].host]
        bootstrap = command.remote.Command(
            f"{name}-bootstrap",
            connection=first.connection,
            create=run_script_command(first.user),
            stdin=render_bootstrap_script(settings, topology, TLS_DIR),
            # Re-run when the set of processes changes; the script leaves an existing cluster alone.
            triggers=[n.endpoint for n in topology.nodes] + [s.endpoint for s in topology.sentinels],
            logging=LOGGING,
            opts=self._opts([*node_services, *sentinel_services]),
        )

        # Later config changes: live settings on every host at once, then restarts one node at a time.
        apply_steps: list[pulumi.Resource] = []
        for plan in plans:
            if not plan.nodes:
                continue
            host = hosts[plan.name]
            script = render_apply_config(settings, plan, confs)
            apply_steps.append(
                command.remote.Command(
                    f"{name}-{plan.name}-apply-config",
                    connection=host.connection,
                    create=run_script_command(host.user),
                    update=run_script_command(host.user),
                    stdin=script,
                    triggers=[content_hash(confs[port]) for port in plan.ports] + [acl.apply(content_hash)],
                    logging=LOGGING,
                    opts=self._opts([bootstrap, *node_files]),
                )
            )
        # Sentinel owns its config after the first start: users and settings of later deploys go
        # through ACL SETUSER and SENTINEL SET. Before any node restarts, so a restarted node's
        # start script finds the replication user it asks with.
        sentinel_steps: list[pulumi.Resource] = []
        for plan in plans:
            if not plan.sentinels:
                continue
            host = hosts[plan.name]
            watch = settings.sentinel
            sentinel_script: pulumi.Output[str] = pulumi.Output.secret(
                passwords.apply(partial(render_sentinel_set, settings, topology, plan))
            )
            sentinel_steps.append(
                command.remote.Command(
                    f"{name}-{plan.name}-sentinel-set",
                    connection=host.connection,
                    create=run_script_command(host.user),
                    update=run_script_command(host.user),
                    stdin=sentinel_script,
                    triggers=[
                        watch.quorum,
                        watch.down_after_milliseconds,
                        watch.failover_timeout,
                        watch.parallel_syncs,
                        sentinel_script.apply(content_hash),
                    ],
                    logging=LOGGING,
                    opts=self._opts([bootstrap], secret_outputs=["stdin"]),
                )
            )

        previous: list[pulumi.Resource] = []
        for step in rolling_plan(topology):
            host = hosts[step.host]
            # What the node read at start-up: a change must *update* this resource, which runs
            # `update` (the rolling restart). Not `triggers`: pulumi-command replaces the
            # resource on a triggers change and runs `create` (the echo), so no node would ever
            # restart (found by the rehearsal). The fingerprints ride in a shell comment.
            fingerprints: list[pulumi.Input[str]] = [restart_fingerprint(confs[step.port])[:16]]
            if tls_material is not None:
                # A renewed certificate is read at start-up only.
                fingerprints.append(
                    tls_material.certificates[step.host].cert_pem.apply(lambda pem: content_hash(pem or "")[:16])
                )
            restart_run = f"{sudo_prefix(host.user)}{ROLLING_RESTART_SCRIPT} {step.port}"
            restart_command = pulumi.Output.all(*fingerprints).apply(partial(_with_comment, restart_run))
            restart = command.remote.Command(
                f"{name}-{step.name}-restart",
                connection=host.connection,
                # Created together with the service, which started with this very config.
                create=f"echo '{step.name}: started with the deployed config, no restart needed'",
                update=restart_command,
                logging=LOGGING,
                # After the sentinels know this deploy's users (a restarted node's start script asks
                # them), and after the new certificate and key are on the host (shared_files), or
                # the node restarts with the old ones and nothing restarts it again.
                opts=self._opts([*apply_steps, *sentinel_steps, *previous, *host.ready, *host.shared_files]),
            )
            previous = [restart]

        self.hosts = pulumi.Output.from_input([p.name for p in plans])
        self.services = pulumi.Output.from_input(
            [f"{p.name}:{n.name}" for p in plans for n in p.nodes]
            + [f"{p.name}:{s.name}" for p in plans for s in p.sentinels]
        )
        self.bootstrap_output = bootstrap.stdout
        outputs: dict[str, pulumi.Input[object]] = {
            "hosts": self.hosts,
            "services": self.services,
            "bootstrap_output": self.bootstrap_output,
        }
        if self.ca_cert_pem is not None:
            outputs["ca_cert_pem"] = self.ca_cert_pem
        self.register_outputs(outputs)

    # --- per host -------------------------------------------------------------------------

    def _host(
        self,
        settings: Settings,
        topology: Topology,
        plan: HostPlan,
        ssh_private_key: pulumi.Output[str],
        admin_password: pulumi.Output[str],
        tls_material: RedisTlsMaterial | None,
    ) -> _Host:
        assert settings.hosts is not None
        machine = plan.machine
        user = ssh_user(settings, machine)
        connection = _connection(machine, user, ssh_private_key)
        install = command.remote.Command(
            f"{self._name}-{plan.name}-install",
            connection=connection,
            create=run_script_command(user),
            stdin=render_install_script(settings, plan),
            logging=LOGGING,
            opts=self._opts([]),
        )
        dirs = command.remote.Command(
            f"{self._name}-{plan.name}-dirs",
            connection=connection,
            create=run_script_command(user),
            stdin=render_dirs_script(settings, plan),
            logging=LOGGING,
            opts=self._opts([install]),
        )
        host = _Host(plan, user, connection, [install, dirs], [], [])
        host.shared_files.append(
            self._file(
                host,
                "admin-pass",
                ADMIN_PASS_FILE,
                admin_password.apply(lambda p: p + "\n"),
                "0600",
                "root",
                secret=True,
            )
        )
        if tls_material is not None:
            certificate = tls_material.certificates[plan.name]
            host.shared_files += [
                self._file(host, "tls-ca", f"{TLS_DIR}/ca.crt", tls_material.ca_cert_pem, "0640", "redis"),
                self._file(host, "tls-cert", f"{TLS_DIR}/redis.crt", certificate.cert_pem, "0640", "redis"),
                self._file(host, "tls-key", f"{TLS_DIR}/redis.key", certificate.key_pem, "0640", "redis", secret=True),
            ]

        # Firewall: the rule set file, a unit that loads it at boot, and loading it now.
        rules = render_nftables(settings, topology, plan)
        firewall_unit = render_firewall_unit(settings)
        firewall_files = [
            self._file(host, "firewall-rules", NFT_FILE, rules, "0644", "root"),
            self._file(host, "firewall-unit", f"{UNIT_DIR}/{FIREWALL_UNIT}", firewall_unit, "0644", "root"),
        ]
        sudo = sudo_prefix(user)
        host.system.append(
            self._systemd(
                host,
                "firewall",
                create=f"{sudo}nft -c -f {NFT_FILE} && {sudo}systemctl daemon-reload && "
                f"{sudo}systemctl enable {FIREWALL_UNIT} && {sudo}systemctl reload-or-restart {FIREWALL_UNIT}",
                triggers=[content_hash(rules), content_hash(firewall_unit)],
                depends_on=firewall_files,
            )
        )
        if settings.hosts.kernel_tuning:
            sysctl, thp = render_sysctl(settings), render_thp_unit(settings)
            kernel_files = [
                self._file(host, "sysctl", SYSCTL_FILE, sysctl, "0644", "root"),
                self._file(host, "thp-unit", f"{UNIT_DIR}/{THP_UNIT}", thp, "0644", "root"),
            ]
            # A script rather than `sysctl -p && ...`: a container cannot write these, and that
            # must be a clear warning, not a failed deploy (found by the rehearsal on nspawn).
            kernel_apply = render_kernel_apply(settings, plan)
            host.system.append(
                command.remote.Command(
                    f"{self._name}-{plan.name}-kernel",
                    connection=connection,
                    create=run_script_command(user),
                    stdin=kernel_apply,
                    triggers=[content_hash(sysctl), content_hash(thp), content_hash(kernel_apply)],
                    logging=LOGGING,
                    opts=self._opts([*host.ready, *kernel_files]),
                )
            )

        # Backups and health check: scripts read the admin password from ADMIN_PASS_FILE.
        if plan.nodes:
            backup_script = render_backup_script(settings, plan)
            backup_service, backup_timer = render_backup_service(settings), render_backup_timer(settings)
            backup_files = [
                self._file(host, "backup-script", BACKUP_SCRIPT, backup_script, "0750", "root"),
                self._file(
                    host, "backup-service-unit", f"{UNIT_DIR}/redis-backup.service", backup_service, "0644", "root"
                ),
                self._file(host, "backup-timer-unit", f"{UNIT_DIR}/redis-backup.timer", backup_timer, "0644", "root"),
            ]
            self._systemd(
                host,
                "backup-timer",
                create=f"{sudo}systemctl daemon-reload && {sudo}systemctl enable redis-backup.timer && "
                f"{sudo}systemctl restart redis-backup.timer",
                triggers=[content_hash(backup_script), content_hash(backup_service), content_hash(backup_timer)],
                depends_on=[*backup_files, *host.shared_files],
            )
            self._file(
                host,
                "rolling-restart-script",
                ROLLING_RESTART_SCRIPT,
                render_rolling_restart(settings, topology, plan),
                "0750",
                "root",
            )
        self._file(host, "health-check", HEALTH_CHECK_SCRIPT, render_health_check(settings, plan), "0750", "root")
        self._file(host, "health-module", HEALTH_MODULE, health_module_source(), "0644", "root")
        self._file(host, "health-plan", HEALTH_PLAN_FILE, render_health_plan(settings, topology, plan), "0644", "root")
        return host

    # --- monitoring ------------------------------------------------------------------------

    def _exporters(
        self, host: _Host, settings: Settings, topology: Topology, passwords: pulumi.Output[Passwords]
    ) -> None:
        """One exporter unit per process on this host (components/monitoring.py renders them).
        Unlike a Redis node, an exporter is restarted on any change: it holds no data."""
        sudo = sudo_prefix(host.user)
        for exporter in host_exporter_files(settings, topology, host.plan.name, passwords, CONF_DIR, f"{TLS_DIR}/ca.crt"):
            unit_name = exporter.unit_name
            files = [
                self._file(
                    host, f"{unit_name}-password", exporter.password_path, exporter.password_json, "0600", "root", secret=True
                ),
                self._file(host, f"{unit_name}-unit", f"{UNIT_DIR}/{unit_name}.service", exporter.unit, "0644", "root"),
            ]
            start = (
                f"{sudo}systemctl daemon-reload && {sudo}systemctl enable {unit_name}.service && "
                f"{sudo}systemctl restart {unit_name}.service"
            )
            command.remote.Command(
                f"{self._name}-{unit_name}-service",
                connection=host.connection,
                create=start,
                update=start,
                delete=f"{sudo}systemctl disable --now {unit_name}.service",
                triggers=[content_hash(exporter.unit), exporter.password_json.apply(content_hash)],
                logging=LOGGING,
                opts=self._opts([*host.ready, *files, *host.shared_files, *host.system]),
            )

    # --- building blocks -------------------------------------------------------------------

    def _opts(
        self,
        depends_on: Sequence[pulumi.Resource],
        secret_outputs: list[str] | None = None,
        delete_before_replace: bool = False,
    ) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(
            parent=self,
            depends_on=list(depends_on),
            additional_secret_outputs=secret_outputs,
            delete_before_replace=delete_before_replace,
        )

    def _file(
        self,
        host: _Host,
        label: str,
        path: str,
        content: pulumi.Input[str],
        mode: str,
        owner: str,
        secret: bool = False,
    ) -> command.remote.Command:
        """A file written from stdin; re-written (create runs again) when the content changes."""
        group = "root" if owner == "root" else "redis"
        return command.remote.Command(
            f"{self._name}-{host.plan.name}-{label}",
            connection=host.connection,
            create=write_file_command(path, mode, owner, group, host.user),
            stdin=pulumi.Output.secret(content) if secret else content,
            logging=LOGGING,
            opts=self._opts(host.ready, secret_outputs=["stdin"] if secret else None),
        )

    def _systemd(
        self, host: _Host, label: str, create: str, triggers: list[str], depends_on: Sequence[pulumi.Resource]
    ) -> command.remote.Command:
        return command.remote.Command(
            f"{self._name}-{host.plan.name}-{label}",
            connection=host.connection,
            create=create,
            triggers=triggers,
            logging=LOGGING,
            opts=self._opts([*host.ready, *depends_on]),
        )

    def _service(
        self, host: _Host, process: str, unit: str, depends_on: Sequence[pulumi.Resource], before: str | None = None
    ) -> command.remote.Command:
        """Enable and start the unit once. A changed unit is only reloaded: the process keeps
        running until a restart that is meant (a rolling-restart step)."""
        sudo = sudo_prefix(host.user)
        service = f"{process}.service"
        start = f"{sudo}systemctl daemon-reload && {sudo}systemctl enable --now {service}"
        return command.remote.Command(
            f"{self._name}-{process}-service",
            connection=host.connection,
            create=f"{before} && {start}" if before else start,
            # The unit's hash in a comment makes a changed unit an update (daemon-reload only).
            # As `triggers` it replaced the resource: `delete` then `create`, every node of the
            # deployment stopped and started at once (found by the rehearsal).
            update=f"{sudo}systemctl daemon-reload # unit {content_hash(unit)[:16]}",
            delete=f"{sudo}systemctl disable --now {service}",
            logging=LOGGING,
            # If this ever gets replaced, stop the old process before starting the new one.
            opts=self._opts([*host.ready, *depends_on], delete_before_replace=True),
        )


def _with_comment(command_line: str, fingerprints: list[str]) -> str:
    return f"{command_line} # start-up inputs {' '.join(fingerprints)}"


def _auth_conf(passwords: pulumi.Output[Passwords], node_name: str) -> pulumi.Output[str]:
    def render(p: Passwords) -> str:
        return render_auth_conf(node_name, p)

    return pulumi.Output.secret(passwords.apply(render))


def _sentinel_conf(
    settings: Settings, topology: Topology, sentinel: SentinelNode, passwords: pulumi.Output[Passwords]
) -> pulumi.Output[str]:
    def render(p: Passwords) -> str:
        return render_sentinel_conf(settings, topology, sentinel, sentinel_paths(sentinel), p)

    return pulumi.Output.secret(passwords.apply(render))


def _connection(machine: Machine, user: str, private_key: pulumi.Output[str]) -> ConnectionArgsDict:
    connection: ConnectionArgsDict = {
        "host": machine.address,
        "port": float(machine.ssh_port),
        "user": user,
        "private_key": private_key,
        "dial_error_limit": 20,
    }
    if machine.ssh_host_key:
        connection["host_key"] = machine.ssh_host_key
    return connection
