"""The prod stack's Redis: plain Linux hosts driven over SSH with pulumi_command.remote.

Every file is written by a remote Command that takes the content on stdin (so no content ever
appears on a command line or in a log), into a temporary file whose owner and mode are set
before it is renamed into place. Files holding secrets get a secret Output as stdin, which
Pulumi stores encrypted in the state.

Credentials go in two waves (docs/security.md, "Rotating a password"): first every host's
running processes ACCEPT this deploy's passwords (ACL files uploaded, then `accept-credentials`
on every host: ACL LOAD, the sentinels' users), and only then does anything PRESENT a new one
(admin.pass, the nodes' auth files and live masterauth, the sentinels' auth-pass, the
exporters' password files). During a rotation (`<key>_previous` set) the first wave accepts both
passwords, so no client, replica, sentinel, exporter or script is refused at any moment.

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

from cachelayer.components.tls_material import RedisTlsArgs, RedisTlsMaterial, create_tls_material
from cachelayer.config.hosts import Machine
from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Topology
from cachelayer.render.host_files import HostDeployFiles, HostFile, HostFiles, HostScript, host_deploy_files
from cachelayer.render.hosts import (
    FIREWALL_UNIT,
    NFT_FILE,
    ROLLING_RESTART_SCRIPT,
    TLS_DIR,
    run_script_command,
    sentinel_paths,
    ssh_user,
    sudo_prefix,
    write_file_command,
)
from cachelayer.render.load_balancer import save_server_state_command
from cachelayer.render.nodes import Passwords
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

    files: HostFiles  # what render/host_files.py lists for this machine
    user: str
    connection: ConnectionArgsDict
    ready: list[pulumi.Resource]  # install + dirs: every file waits for these
    shared_files: list[pulumi.Resource]  # TLS material and admin.pass: every process needs them
    tls_files: list[pulumi.Resource]  # what a script needs to reach the local processes over TLS
    acl_files: list[pulumi.Resource]  # the nodes' ACL files: loaded by accept-credentials
    system: list[pulumi.Resource]  # firewall and kernel applied: before any process starts

    @property
    def name(self) -> str:
        return self.files.plan.name


class RedisHostsDeployment(pulumi.ComponentResource):
    """Redis nodes (and sentinels) as systemd services on the hosts of hosts.machines.

    Every file and script comes from render/host_files.py, the list `cachelayer render` writes
    too; this class only wires them into remote Commands and their order."""

    hosts: pulumi.Output[list[str]]
    services: pulumi.Output[list[str]]
    bootstrap_output: pulumi.Output[str]
    ca_cert_pem: pulumi.Output[str] | None

    def __init__(self, name: str, args: RedisHostsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cachelayer:hosts:RedisHostsDeployment", name, None, opts)
        self._name = name
        self._passwords = args.passwords
        settings, topology = args.settings, args.topology
        assert settings.hosts is not None, "the hosts target needs hosts settings"
        deploy = host_deploy_files(settings, topology)
        # No `environment` on any Command: pulumi-command fails the command when sshd refuses an
        # env request (stock sshd accepts only LANG/LC_*), found by the rehearsal. The scripts
        # read the root-only admin.pass, uploaded before any of them runs (run_script_command).

        tls_material: RedisTlsMaterial | None = None
        if settings.redis.tls:
            tls_material = create_tls_material(
                f"{name}-tls", RedisTlsArgs(settings.stack, [(h.plan.name, h.plan.address) for h in deploy.hosts]), parent=self
            )
        self.ca_cert_pem = tls_material.ca_cert_pem if tls_material else None

        hosts: dict[str, _Host] = {}
        for host_files in deploy.hosts:
            host = self._host(settings, host_files, args.ssh_private_key, tls_material)
            hosts[host.name] = host
        # Wave 1: every host's running processes accept this deploy's passwords...
        accepted = [self._accept_credentials(host) for host in hosts.values()]
        # ...wave 2: only then is any new password presented, on any host.
        node_services: list[pulumi.Resource] = []
        sentinel_services: list[pulumi.Resource] = []
        node_files: list[pulumi.Resource] = []
        for host in hosts.values():
            self._presented_shared_files(host, accepted)
            node_services += self._nodes(host, node_files, accepted)
            sentinel_services += self._sentinels(host, accepted)
            self._exporters(host, accepted)
            self._load_balancer(host, accepted)

        # Form the cluster (or check the sentinel quorum) once every process runs: the dev
        # stack's script, from the first host, the password read from the host's admin.pass.
        first = hosts[deploy.bootstrap_host]
        bootstrap = self._script(
            f"{name}-{deploy.bootstrap.label}",
            first,
            deploy.bootstrap,
            # Re-run when the set of processes changes; the script leaves an existing cluster alone.
            triggers=[n.endpoint for n in topology.nodes] + [s.endpoint for s in topology.sentinels],
            depends_on=[*node_services, *sentinel_services],
        )
        # They present passwords live (masterauth; auth-pass, sentinel-pass): after every host's
        # accept step, named directly so no engine can start them early through an unchanged
        # resource in between (the bootstrap).
        apply_steps = self._apply_config_steps(hosts, deploy, [bootstrap, *node_files, *accepted])
        sentinel_steps = self._sentinel_set_steps(hosts, settings, [bootstrap, *accepted])
        self._rolling_restarts(hosts, deploy, topology, tls_material, [*apply_steps, *sentinel_steps])

        self.hosts = pulumi.Output.from_input([h.plan.name for h in deploy.hosts])
        self.services = pulumi.Output.from_input(
            [f"{h.plan.name}:{n.name}" for h in deploy.hosts for n in h.plan.nodes]
            + [f"{h.plan.name}:{s.name}" for h in deploy.hosts for s in h.plan.sentinels]
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
        files: HostFiles,
        ssh_private_key: pulumi.Output[str],
        tls_material: RedisTlsMaterial | None,
    ) -> _Host:
        """Packages and directories, the files every process needs, the firewall, the kernel
        settings, and the host's backup timer and tools."""
        plan = files.plan
        user = ssh_user(settings, plan.machine)
        connection = _connection(plan.machine, user, ssh_private_key)
        host = _Host(files, user, connection, [], [], [], [], [])
        install = self._script(f"{self._name}-{plan.name}-{files.install.label}", host, files.install)
        dirs = self._script(f"{self._name}-{plan.name}-{files.dirs.label}", host, files.dirs, depends_on=[install])
        host.ready += [install, dirs]
        if tls_material is not None:
            certificate = tls_material.certificates[plan.name]
            host.tls_files += [
                self._upload(host, "tls-ca", f"{TLS_DIR}/ca.crt", tls_material.ca_cert_pem, "0640", "redis"),
                self._upload(host, "tls-cert", f"{TLS_DIR}/redis.crt", certificate.cert_pem, "0640", "redis"),
                self._upload(host, "tls-key", f"{TLS_DIR}/redis.key", certificate.key_pem, "0640", "redis", secret=True),
            ]
            host.shared_files += host.tls_files

        # Firewall: the rule set file, a unit that loads it at boot, and loading it now.
        sudo = sudo_prefix(user)
        host.system.append(
            self._systemd(
                host,
                "firewall",
                create=f"{sudo}nft -c -f {NFT_FILE} && {sudo}systemctl daemon-reload && "
                f"{sudo}systemctl enable {FIREWALL_UNIT} && {sudo}systemctl reload-or-restart {FIREWALL_UNIT}",
                triggers=[content_hash(f.text) for f in files.firewall],
                depends_on=[self._file(host, f) for f in files.firewall],
            )
        )
        if files.kernel_apply is not None:
            kernel_files = [self._file(host, f) for f in files.kernel]
            # A script rather than `sysctl -p && ...`: a container cannot write these, and that
            # must be a clear warning, not a failed deploy (found by the rehearsal on nspawn).
            host.system.append(
                self._script(
                    f"{self._name}-{plan.name}-{files.kernel_apply.label}",
                    host,
                    files.kernel_apply,
                    triggers=[*(content_hash(f.text) for f in files.kernel), content_hash(files.kernel_apply.text)],
                    depends_on=[*host.ready, *kernel_files],
                )
            )

        if files.rolling_restart is not None:
            self._file(host, files.rolling_restart)
        for tool in files.health:
            self._file(host, tool)
        # Each node's ACL file: what accept-credentials loads (wave 1).
        host.acl_files += [self._file(host, node.acl) for node in files.nodes]
        return host

    def _accept_credentials(self, host: _Host) -> pulumi.Resource:
        """Wave 1 on one host: its running nodes load the ACL files, its sentinels take the users.
        Re-run whenever a password (or a user's rules) changes: the script holds their hashes."""
        script = host.files.accept_credentials
        return self._script(
            f"{self._name}-{host.name}-{script.label}",
            host,
            script,
            rerun_on_update=True,
            # Reaches the processes over TLS; logs in with the admin.pass it finds (written after it).
            depends_on=[*host.ready, *host.tls_files, *host.acl_files],
        )

    def _presented_shared_files(self, host: _Host, accepted: Sequence[pulumi.Resource]) -> None:
        """admin.pass, which every script logs in with, and the backup timer that reads it: after
        every host accepts the admin password they hold (wave 2)."""
        files = host.files
        host.shared_files.append(self._file(host, files.admin_pass, after=accepted))
        if files.backup:
            sudo = sudo_prefix(host.user)
            self._systemd(
                host,
                "backup-timer",
                create=f"{sudo}systemctl daemon-reload && {sudo}systemctl enable redis-backup.timer && "
                f"{sudo}systemctl restart redis-backup.timer",
                triggers=[content_hash(f.text) for f in files.backup],
                depends_on=[*(self._file(host, f) for f in files.backup), *host.shared_files],
            )

    def _nodes(
        self, host: _Host, node_files: list[pulumi.Resource], accepted: Sequence[pulumi.Resource]
    ) -> list[pulumi.Resource]:
        """Each node's files and its service; the files also go to `node_files` (apply-config waits for them).
        The auth file presents the replication password: wave 2."""
        services: list[pulumi.Resource] = []
        acl_files = {node.node.name: acl for node, acl in zip(host.files.nodes, host.acl_files, strict=True)}
        for node in host.files.nodes:
            files = [
                acl_files[node.node.name] if f is node.acl else self._file(host, f, after=accepted if f is node.auth else ())
                for f in node.config
            ]
            unit_file = self._file(host, node.unit)
            node_files += files
            services.append(
                self._service(host, node.node.name, node.unit.text, [*files, unit_file, *host.shared_files, *host.system])
            )
        return services

    def _sentinels(self, host: _Host, accepted: Sequence[pulumi.Resource]) -> list[pulumi.Resource]:
        services: list[pulumi.Resource] = []
        for sentinel in host.files.sentinels:
            conf_file = sentinel_paths(sentinel.sentinel).conf_file
            # Sentinel rewrites its config: upload a template next to it and copy it into
            # place only when the host has none yet (see the service's create command).
            # It presents the sentinel password (auth-pass, sentinel-pass): wave 2.
            dist = self._file(host, sentinel.conf_dist, after=accepted)
            unit_file = self._file(host, sentinel.unit)
            install_conf = (
                f"{sudo_prefix(host.user)}sh -c '[ -e {conf_file} ] || "
                f"install -m 0640 -o redis -g redis {sentinel.conf_dist.path} {conf_file}'"
            )
            services.append(
                self._service(
                    host,
                    sentinel.sentinel.name,
                    sentinel.unit.text,
                    [dist, unit_file, *host.shared_files, *host.system],
                    before=install_conf,
                )
            )
        return services

    def _exporters(self, host: _Host, accepted: Sequence[pulumi.Resource]) -> None:
        """One exporter unit per process on this host. Unlike a Redis node, an exporter is
        restarted on any change: it holds no data. Its password file presents the monitor
        password: wave 2."""
        sudo = sudo_prefix(host.user)
        for exporter in host.files.exporters:
            unit_name = exporter.unit_name
            files = [self._file(host, exporter.password, after=accepted), self._file(host, exporter.unit)]
            start = (
                f"{sudo}systemctl daemon-reload && {sudo}systemctl enable {unit_name}.service && "
                f"{sudo}systemctl restart {unit_name}.service"
            )
            # What the exporter read at start-up rides in a comment of `update`: a change updates
            # the resource (a restart). Not `triggers`: their change replaces the resource, and the
            # old one's `delete` (disable --now) then runs last and stops the exporter for good
            # (found by the rotation rehearsal). Secret: one input is a hash of the password file.
            inputs = pulumi.Output.all(
                content_hash(exporter.unit.text)[:16],
                pulumi.Output.from_input(self._content(exporter.password)).apply(lambda text: content_hash(text)[:16]),
            )
            self._command(
                f"{self._name}-{unit_name}-service",
                host,
                create=start,
                update=inputs.apply(partial(_with_comment, start)),
                delete=f"{sudo}systemctl disable --now {unit_name}.service",
                depends_on=[*host.ready, *files, *host.shared_files, *host.system],
            )

    def _load_balancer(self, host: _Host, accepted: Sequence[pulumi.Resource]) -> None:
        """HAProxy (Debian's haproxy.service) with the rendered config: checked with `haproxy -c`
        first, so a config it refuses never replaces the running one, then reloaded (running
        connections are kept by the old process until they end). Its checks present the monitor
        password: wave 2."""
        config = host.files.load_balancer
        if config is None:
            return
        sudo = sudo_prefix(host.user)
        upload = self._file(host, config, after=accepted)
        # The running HAProxy's server states are saved just before the reload, and the new
        # process starts from them (server-state-file): it does not take every server as UP
        # until its checks fail, so no write reaches a replica meanwhile.
        start = (
            f"{sudo}haproxy -c -q -f {config.path} && {sudo}systemctl enable haproxy.service && "
            f"{save_server_state_command(sudo)} && {sudo}systemctl reload-or-restart haproxy.service"
        )
        # The config's hash in a comment makes a changed config an update (a reload). As
        # `triggers` it would replace the resource: the old one's `delete` would then stop HAProxy.
        digest = pulumi.Output.from_input(self._content(config)).apply(lambda text: content_hash(text)[:16])
        self._command(
            f"{self._name}-{host.name}-load-balancer",
            host,
            create=start,
            update=digest.apply(lambda value: f"{start} # config {value}"),
            delete=f"{sudo}systemctl disable --now haproxy.service",
            depends_on=[*host.ready, upload, *host.shared_files, *host.system],
        )

    # --- later deploys ---------------------------------------------------------------------

    def _apply_config_steps(
        self, hosts: dict[str, _Host], deploy: HostDeployFiles, after: list[pulumi.Resource]
    ) -> list[pulumi.Resource]:
        """Later config changes: live settings and masterauth on every host at once (the restarts
        come after). After wave 1 everywhere (through the services and their files)."""
        steps: list[pulumi.Resource] = []
        for host in hosts.values():
            script = host.files.apply_config
            if script is None:
                continue
            # The masterauth the host's auth files present: a change re-runs the step (a hash of
            # secret content, secret itself).
            auth = pulumi.Output.all(*(self._content(node.auth) for node in host.files.nodes)).apply(
                lambda texts: content_hash("".join(texts))
            )
            steps.append(
                self._script(
                    f"{self._name}-{host.name}-{script.label}",
                    host,
                    script,
                    rerun_on_update=True,
                    triggers=[content_hash(deploy.confs[port]) for port in host.files.plan.ports] + [auth],
                    depends_on=after,
                )
            )
        return steps

    def _sentinel_set_steps(
        self, hosts: dict[str, _Host], settings: Settings, after: list[pulumi.Resource]
    ) -> list[pulumi.Resource]:
        """Sentinel owns its config after the first start: users and settings of later deploys go
        through ACL SETUSER and SENTINEL SET. Before any node restarts, so a restarted node's
        start script finds the replication user it asks with."""
        steps: list[pulumi.Resource] = []
        watch = settings.sentinel
        for host in hosts.values():
            script = host.files.sentinel_set
            if script is None:
                continue
            content = pulumi.Output.from_input(self._content(script))
            steps.append(
                self._script(
                    f"{self._name}-{host.name}-{script.label}",
                    host,
                    script,
                    rerun_on_update=True,
                    triggers=[
                        watch.quorum,
                        watch.down_after_milliseconds,
                        watch.failover_timeout,
                        watch.parallel_syncs,
                        content.apply(content_hash),
                    ],
                    depends_on=after,
                )
            )
        return steps

    def _rolling_restarts(
        self,
        hosts: dict[str, _Host],
        deploy: HostDeployFiles,
        topology: Topology,
        tls_material: RedisTlsMaterial | None,
        after: list[pulumi.Resource],
    ) -> None:
        """One restart step per node, chained replicas first, then masters after a failover."""
        previous: list[pulumi.Resource] = []
        for step in rolling_plan(topology):
            host = hosts[step.host]
            # What the node read at start-up: a change must *update* this resource, which runs
            # `update` (the rolling restart). Not `triggers`: pulumi-command replaces the
            # resource on a triggers change and runs `create` (the echo), so no node would ever
            # restart (found by the rehearsal). The fingerprints ride in a shell comment.
            fingerprints: list[pulumi.Input[str]] = [restart_fingerprint(deploy.confs[step.port])[:16]]
            if tls_material is not None:
                # A renewed certificate is read at start-up only.
                fingerprints.append(
                    tls_material.certificates[step.host].cert_pem.apply(lambda pem: content_hash(pem or "")[:16])
                )
            restart_run = f"{sudo_prefix(host.user)}{ROLLING_RESTART_SCRIPT} {step.port}"
            restart = self._command(
                f"{self._name}-{step.name}-restart",
                host,
                # Created together with the service, which started with this very config.
                create=f"echo '{step.name}: started with the deployed config, no restart needed'",
                update=pulumi.Output.all(*fingerprints).apply(partial(_with_comment, restart_run)),
                # After the sentinels know this deploy's users (a restarted node's start script asks
                # them), and after the new certificate and key are on the host (shared_files), or
                # the node restarts with the old ones and nothing restarts it again.
                depends_on=[*after, *previous, *host.ready, *host.shared_files],
            )
            previous = [restart]

    # --- building blocks -------------------------------------------------------------------

    def _command(
        self,
        resource_name: str,
        host: _Host,
        create: pulumi.Input[str],
        depends_on: Sequence[pulumi.Resource],
        update: pulumi.Input[str] | None = None,
        delete: str | None = None,
        stdin: pulumi.Input[str] | None = None,
        triggers: Sequence[pulumi.Input[object]] | None = None,
        secret_stdin: bool = False,
        delete_before_replace: bool = False,
    ) -> command.remote.Command:
        """The one remote Command of this component: over the host's SSH connection, logged,
        a child of the deployment. A secret stdin stays a secret in the state."""
        return command.remote.Command(
            resource_name,
            connection=host.connection,
            create=create,
            update=update,
            delete=delete,
            stdin=stdin,
            triggers=list(triggers) if triggers is not None else None,
            logging=LOGGING,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(depends_on),
                additional_secret_outputs=["stdin"] if secret_stdin else None,
                delete_before_replace=delete_before_replace,
            ),
        )

    def _script(
        self,
        resource_name: str,
        host: _Host,
        script: HostScript,
        depends_on: Sequence[pulumi.Resource] = (),
        triggers: Sequence[pulumi.Input[object]] | None = None,
        rerun_on_update: bool = False,
    ) -> command.remote.Command:
        """A rendered script piped to `sh -s` on the host (as root); with `rerun_on_update`, a
        changed script runs again as an update instead of replacing the resource."""
        run = run_script_command(host.user)
        return self._command(
            resource_name,
            host,
            create=run,
            update=run if rerun_on_update else None,
            stdin=self._content(script),
            triggers=triggers,
            secret_stdin=script.secret is not None,
            depends_on=depends_on,
        )

    def _file(self, host: _Host, file: HostFile, after: Sequence[pulumi.Resource] = ()) -> command.remote.Command:
        return self._upload(
            host, file.label, file.path, self._content(file), file.mode, file.owner, file.secret is not None, after
        )

    def _upload(
        self,
        host: _Host,
        label: str,
        path: str,
        content: pulumi.Input[str],
        mode: str,
        owner: str,
        secret: bool = False,
        after: Sequence[pulumi.Resource] = (),
    ) -> command.remote.Command:
        """A file written from stdin; re-written (create runs again) when the content changes."""
        group = "root" if owner == "root" else "redis"
        return self._command(
            f"{self._name}-{host.name}-{label}",
            host,
            create=write_file_command(path, mode, owner, group, host.user),
            stdin=pulumi.Output.secret(content) if secret else content,
            secret_stdin=secret,
            depends_on=[*host.ready, *after],
        )

    def _content(self, rendered: HostFile | HostScript) -> pulumi.Input[str]:
        """The rendered text; one holding a secret is rendered from the passwords, as a secret."""
        if rendered.secret is None:
            return rendered.text
        return pulumi.Output.secret(self._passwords.apply(rendered.secret))

    def _systemd(
        self, host: _Host, label: str, create: str, triggers: list[str], depends_on: Sequence[pulumi.Resource]
    ) -> command.remote.Command:
        return self._command(
            f"{self._name}-{host.name}-{label}", host, create=create, triggers=triggers, depends_on=[*host.ready, *depends_on]
        )

    def _service(
        self, host: _Host, process: str, unit: str, depends_on: Sequence[pulumi.Resource], before: str | None = None
    ) -> command.remote.Command:
        """Enable and start the unit once. A changed unit is only reloaded: the process keeps
        running until a restart that is meant (a rolling-restart step)."""
        sudo = sudo_prefix(host.user)
        service = f"{process}.service"
        start = f"{sudo}systemctl daemon-reload && {sudo}systemctl enable --now {service}"
        return self._command(
            f"{self._name}-{process}-service",
            host,
            create=f"{before} && {start}" if before else start,
            # The unit's hash in a comment makes a changed unit an update (daemon-reload only).
            # As `triggers` it replaced the resource: `delete` then `create`, every node of the
            # deployment stopped and started at once (found by the rehearsal).
            update=f"{sudo}systemctl daemon-reload # unit {content_hash(unit)[:16]}",
            delete=f"{sudo}systemctl disable --now {service}",
            # If this ever gets replaced, stop the old process before starting the new one.
            depends_on=[*host.ready, *depends_on],
            delete_before_replace=True,
        )


def _with_comment(command_line: str, fingerprints: list[str]) -> str:
    return f"{command_line} # start-up inputs {' '.join(fingerprints)}"


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
