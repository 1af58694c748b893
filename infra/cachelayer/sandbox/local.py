"""A local sandbox: the stack's Redis as plain `redis-server` processes, no Docker, no Pulumi.

It renders the very files the Pulumi program uploads (cachelayer.render), starts one process per
node (and per sentinel) from them, and runs the same bootstrap script the program runs, with the
same `sh -s` and REDISCLI_AUTH, only without the `docker exec` wrapper. The integration tests and
the benchmarks drive this class directly, with their own working directory, ports and placement.

`LocalSandbox` coordinates the rooms of this package, one job each: the workdir's state file
(state.py), passwords (passwords.py), each process's files (process_files.py), processes
(processes.py: it never signals a pid that is no longer the redis-server it started), the
bootstrap (bootstrap.py), convergence (convergence.py) and clients (clients.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachelayer.config.settings import Settings, load_settings
from cachelayer.errors import SettingsError
from cachelayer.plan.topology import Node, Placement, SentinelNode, Topology, build_topology, local_placement
from cachelayer.render.nodes import USERS, Passwords, Paths
from cachelayer.sandbox.bootstrap import BOOTSTRAP_FILE, bootstrap_script, run_bootstrap
from cachelayer.sandbox.clients import process_client
from cachelayer.sandbox.convergence import SandboxStatus, sandbox_status, wait_converged
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.passwords import PASSWORDS_FILE, PasswordFile
from cachelayer.sandbox.process_files import TLS_FILES, ProcessFiles
from cachelayer.sandbox.processes import HostPrefix, ProcessSupervisor, check_ports, require_binaries
from cachelayer.sandbox.state import STATE_FILE, Deployment, ProcessRecord, StateFile


@dataclass(frozen=True)
class UpResult:
    started: tuple[str, ...]
    slots_ok_seconds: float  # from the first process start to every node seeing every slot served
    seconds: float  # ... to converged: also every replica's link up (full sync included)
    bootstrap_output: str


@dataclass(frozen=True)
class DownResult:
    stopped: tuple[str, ...]
    not_ours: tuple[str, ...]  # recorded pids that are now some other process: left alone


def sandbox_settings(
    config: Mapping[str, Any],
    stack: str,
    topology: str | None = None,
    base_port: int | None = None,
    tls_dir: Path | None = None,
) -> tuple[Settings, dict[str, Any]]:
    """Stack settings with the sandbox's overrides; also the config they came from (kept in
    state.json so `status` and `down` rebuild the same settings)."""
    merged = json.loads(json.dumps(dict(config)))  # a deep copy
    redis_config = dict(merged.get("redis") or {})
    if topology is not None:
        redis_config["topology"] = topology
        if topology == "sentinel":
            redis_config.pop("cluster_enabled", None)
    if base_port is not None:
        redis_config["base_port"] = base_port
    merged["redis"] = redis_config
    settings = load_settings(merged, stack)
    if settings.redis.tls and tls_dir is None:
        raise SettingsError(
            "redis.tls",
            "the stack runs TLS and the local sandbox was given no certificates",
            f"pass --tls-dir with {', '.join(TLS_FILES)} (a CA and a certificate for the sandbox's address), "
            "or run a stack whose redis.tls is false (e.g. dev)",
        )
    return settings, merged


class LocalSandbox:
    """The stack's nodes as local processes under `workdir`."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        address: str = "127.0.0.1",
        placement: Placement | None = None,
        host_prefix: HostPrefix | None = None,
        config: Mapping[str, Any] | None = None,
        wait_seconds: int = 60,
        tls_dir: Path | None = None,
    ) -> None:
        if settings.redis.tls:
            if tls_dir is None:
                raise SandboxError(f"redis.tls is on: give the sandbox a directory holding {', '.join(TLS_FILES)}")
            missing = [name for name in TLS_FILES if not (Path(tls_dir) / name).exists()]
            if missing:
                raise SandboxError(f"{tls_dir} lacks {', '.join(missing)}, which the TLS configs need")
        self.tls_dir = Path(tls_dir).resolve() if settings.redis.tls and tls_dir is not None else None
        self.settings = settings
        self.workdir = Path(workdir).resolve()
        self.address = address
        self.placement = placement or local_placement(settings, address)
        self.topology: Topology = build_topology(settings, self.placement)
        self.host_prefix: HostPrefix = host_prefix or (lambda host: ())
        self.config = dict(config) if config is not None else {}
        self.wait_seconds = wait_seconds
        self._state = StateFile(self.workdir)
        self._password_file = PasswordFile(self.workdir, self.config)
        self._files = ProcessFiles(settings, self.topology, self.workdir, self.tls_dir, self._password_file)
        self._supervisor = ProcessSupervisor()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_workdir(cls, workdir: Path) -> LocalSandbox:
        """The sandbox recorded in `workdir` by an earlier `up` (for `status` and `down`)."""
        recorded = StateFile(Path(workdir)).deployment()
        if recorded is None:
            raise SandboxError(f"no sandbox in {workdir} (no {STATE_FILE}): start one with `sandbox up`")
        return cls(
            recorded.settings(),
            Path(workdir),
            recorded.address,
            recorded.placement,
            config=recorded.config,
            tls_dir=recorded.tls_dir,
        )

    def check_same_deployment(self) -> None:
        """Refuse to start a second, unrelated deployment in a workdir that holds one: another
        base port or topology would form a new cluster beside the old one's files."""
        recorded = self._state.deployment()
        if recorded is None:
            return
        held = recorded.settings().redis
        wanted = self.settings.redis
        if (held.base_port, held.topology) != (wanted.base_port, wanted.topology):
            raise SandboxError(
                f"{self.workdir} holds the {held.topology} sandbox of stack {recorded.stack} on ports "
                f"{held.base_port}-{held.base_port + held.node_count - 1}, and this `up` asks for a "
                f"{wanted.topology} on {wanted.base_port}-{wanted.base_port + wanted.node_count - 1}. Run "
                f"`sandbox down --stack {recorded.stack} --workdir {self.workdir}` first, or give this "
                "one its own --workdir"
            )

    # ------------------------------------------------------------------ files
    @property
    def passwords_file(self) -> Path:
        return self._password_file.path

    @property
    def state_file(self) -> Path:
        return self._state.path

    @property
    def passwords(self) -> Passwords:
        """The sandbox's passwords: generated on first use, kept in a 0600 file in the workdir."""
        return self._password_file.passwords()

    def keep_password(self, user: str, password: str) -> None:
        """After a rotation: the user's password in the password file, which every start renders
        into the nodes' ACL and auth files."""
        self._password_file.replace(user, password)

    def paths(self, process: Node | SentinelNode) -> Paths:
        return self._files.paths(process)

    # -------------------------------------------------------------- processes
    def _processes(self) -> list[Node | SentinelNode]:
        return [*self.topology.nodes, *self.topology.sentinels]

    def _by_port(self, port: int) -> Node | SentinelNode:
        for process in self._processes():
            if process.port == port:
                return process
        raise SandboxError(f"no process on port {port} in this sandbox")

    def records(self) -> dict[str, ProcessRecord]:
        return self._state.records()

    def _write_records(self, records: Mapping[str, ProcessRecord]) -> None:
        deployment = Deployment(self.settings.stack, self.config, self.address, self.placement, self.tls_dir)
        self._state.write(deployment, records)

    def running(self) -> dict[str, ProcessRecord]:
        """Recorded processes that are still the ones we started."""
        return {name: r for name, r in self.records().items() if self._supervisor.alive(r)}

    def retired_nodes(self) -> dict[str, ProcessRecord]:
        """Running nodes of an earlier, larger plan (a lowered redis.node_count)."""
        planned = {p.name for p in self._processes()}
        return {name: r for name, r in self.running().items() if not r.sentinel and name not in planned}

    def forget(self, name: str) -> None:
        """Stop a node that is no longer planned (if still running) and remove its files."""
        self.stop(names=[name])
        shutil.rmtree(self.workdir / name, ignore_errors=True)

    def start(self, names: Sequence[str] | None = None) -> tuple[str, ...]:
        """Start the named processes (default: every one not running) and wait until they answer."""
        server = require_binaries("redis-server", "redis-cli")["redis-server"]
        running = self.running()
        wanted = [p for p in self._processes() if (names is None or p.name in names) and p.name not in running]
        check_ports(wanted, self.address, cluster=self.topology.kind == "cluster")
        records = dict(self.records())
        for process in wanted:
            paths = self._files.write(process)
            argv = [*self.host_prefix(process.host), *self._files.server_argv(process, paths, server, self.wait_seconds)]
            console_log = Path(paths.conf_dir) / "console.log"
            records[process.name] = self._supervisor.spawn(process, argv, paths.data_dir, console_log)
        self._write_records(records)
        for process in wanted:
            paths = self.paths(process)
            logs = [Path(paths.conf_dir) / "console.log", Path(paths.log_file)]
            self._supervisor.wait_answers(process, records[process.name], self.wait_seconds, logs)
        return tuple(p.name for p in wanted)

    def stop(self, names: Sequence[str] | None = None, timeout: float = 20.0) -> DownResult:
        """Stop processes we started (SIGTERM, then SIGKILL): a clean shutdown flushes the AOF.
        Their records are dropped, so `start` can start them again."""
        records = self.records()
        chosen = {n: r for n, r in records.items() if names is None or n in names}
        stopped, not_ours = self._supervisor.stop(chosen, timeout)
        self._write_records({n: r for n, r in records.items() if n not in chosen})
        return DownResult(tuple(stopped), tuple(not_ours))

    # -------------------------------------------------------------- bootstrap
    def bootstrap(self) -> str:
        """Run the program's bootstrap script, exactly as it runs it but without `docker exec`:
        `sh -s` with the script on stdin and the admin password in REDISCLI_AUTH."""
        script = bootstrap_script(self.settings, self.topology, self.tls_dir, self.wait_seconds)
        (self.workdir / BOOTSTRAP_FILE).write_text(script)  # no secret in it: for reading after a failure
        first = self.topology.nodes[0]
        # The script bounds each of its own waits; this outer bound only catches a script that hangs.
        return run_bootstrap(script, self.host_prefix(first.host), self.passwords.admin, limit=self.wait_seconds * 8)

    # ------------------------------------------------------------- lifecycle
    def up(self) -> UpResult:
        """Start what is not running, bootstrap, and wait until the deployment has converged.

        Running it again on a running sandbox starts only what is missing (a scale-out adds the
        new nodes) and re-runs the bootstrap, which leaves an existing cluster alone."""
        self.check_same_deployment()
        retired = self.retired_nodes()
        if retired:
            # Stopping a node that owns slots would fail the cluster (cluster_state:fail).
            raise SandboxError(
                f"{', '.join(sorted(retired))} run(s) but the stack no longer plans them: drain them first "
                "(`cachelayer sandbox up` does, through cachelayer.ops.scale_in), or `cachelayer drain NODE`"
            )
        begin = time.monotonic()
        started = self.start()
        output = self.bootstrap()
        self.wait_converged(replicas=False)
        slots_ok = time.monotonic() - begin
        self.wait_converged()
        return UpResult(started, slots_ok, time.monotonic() - begin, output)

    def down(self, purge: bool = False) -> DownResult:
        """Stop every process this sandbox started and remove its node files (data included).

        The passwords stay in the workdir unless `purge`, so the next `up` gives connected
        applications the same credentials; `purge` also removes the workdir itself."""
        result = self.stop()
        if result.not_ours:
            # Their pids belong to someone else now; the records stay so nothing is lost silently.
            return result
        for process in self._processes():
            shutil.rmtree(self.workdir / process.name, ignore_errors=True)
        for extra in self.workdir.glob("redis-*"):  # nodes of an earlier, larger node_count
            if extra.is_dir():
                shutil.rmtree(extra, ignore_errors=True)
        for name in (STATE_FILE, BOOTSTRAP_FILE, *((PASSWORDS_FILE,) if purge else ())):
            (self.workdir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.workdir.rmdir()  # only if nothing is left in it (no passwords, nothing of anyone else's)
        return result

    # ---------------------------------------------------------- convergence
    def status(self) -> SandboxStatus:
        # No retry: a process that refuses the connection is down, which is what status reports
        # (redis-py's retries with backoff took about 2 s per stopped process).
        no_retry = functools.partial(self.admin_client, retry=Retry(NoBackoff(), 0))
        return sandbox_status(self.settings, self.topology, self.running(), no_retry)

    def wait_converged(self, timeout: float | None = None, replicas: bool = True) -> None:
        """Every node up; in a cluster every node sees all slots served; with `replicas`, also
        every master holding its linked replicas (the first full sync included)."""
        wait_converged(self.status, timeout or self.wait_seconds, replicas)

    # ----------------------------------------------------------------- clients
    def admin(self, node: Node | SentinelNode | int, **options: Any) -> redis.Redis:
        return self.client(node, USERS.admin, self.passwords.admin, **options)

    def client(
        self, node: Node | SentinelNode | int, username: str | None, password: str | None, **options: Any
    ) -> redis.Redis:
        """A client of one process (or of the process on a port) as any user (None, None: anonymous),
        over TLS when the stack is."""
        process = self._by_port(node) if isinstance(node, int) else node
        return process_client(process, username, password, self.tls_dir, **options)

    @contextlib.contextmanager
    def admin_client(self, node: Node | SentinelNode | int, **options: Any) -> Iterator[redis.Redis]:
        client = self.admin(node, **options)
        try:
            yield client
        finally:
            client.close()
