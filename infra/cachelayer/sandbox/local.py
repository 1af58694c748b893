"""A local sandbox: the stack's Redis as plain `redis-server` processes, no Docker, no Pulumi.

It renders the very files the Pulumi program uploads (render.py), starts one process per node
(and per sentinel) from them, and runs the same bootstrap script the program runs, with the same
`sh -s` and REDISCLI_AUTH, only without the `docker exec` wrapper. The integration tests and the
benchmark drive this class directly, with their own working directory, ports and placement.

Every process it starts is recorded in `state.json` (pid, start time, port); before it signals a
pid it checks that /proc/<pid> is still that redis-server, so it never kills a process it did not
start, even after a reboot recycled the pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from cachelayer.config.settings import PASSWORD_KEYS, Settings, load_settings
from cachelayer.errors import CachelayerError, SettingsError
from cachelayer.ops.health import TOTAL_SLOTS as TOTAL_SLOTS  # re-exported: the tests and the benchmark use it
from cachelayer.ops.health import (
    NodeFacts,
    NodeStatus,
    SentinelStatus,
    basic_problems,
    node_facts,
    sentinel_facts,
    tls_client_options,
)
from cachelayer.paths import project_root
from cachelayer.plan.topology import Node, Placement, SentinelNode, Topology, build_topology, local_placement
from cachelayer.ports import port_is_free
from cachelayer.render.nodes import (
    USERS,
    Passwords,
    Paths,
    render_auth_conf,
    render_bootstrap_script,
    render_node_start_script,
    render_redis_conf,
    render_sentinel_conf,
    render_users_acl,
    sandbox_paths,
)

STATE_FILE = "state.json"
PASSWORDS_FILE = "passwords.json"
BOOTSTRAP_FILE = "bootstrap.sh"
# What a TLS sandbox needs in its tls_dir: the names the rendered configs expect.
TLS_FILES = ("ca.crt", "redis.crt", "redis.key")
INSTALL_HINT = (
    "run the README's test command `scripts/test.sh`, which installs it (scripts/setup.sh), "
    "or `apt-get install redis-server redis-tools`"
)

# Maps a placement host name to the argv prefix that runs a command on that host. Loopback
# needs none; the network-namespace tests pass `ip netns exec <ns>`.
HostPrefix = Callable[[str], Sequence[str]]


def default_workdir(stack: str) -> Path:
    return project_root() / ".sandbox" / stack


class SandboxError(CachelayerError):
    """The sandbox cannot do what was asked; the message says why and what to do."""


class RedisNotInstalledError(SandboxError):
    pass


class PortInUseError(SandboxError):
    def __init__(self, port: int, address: str, what: str) -> None:
        self.port = port
        super().__init__(
            f"port {port} ({what}) on {address} is already in use. If it is an earlier sandbox, run "
            "`sandbox down --stack <stack>`; otherwise choose other ports with "
            "`--base-port` (the stack key redis.base_port)"
        )


@dataclass(frozen=True)
class ProcessRecord:
    """What `down` needs to recognise a process it started."""

    name: str
    pid: int
    start_time: int  # /proc/<pid>/stat field 22: tells a recycled pid apart
    address: str
    port: int
    sentinel: bool


@dataclass(frozen=True)
class SandboxStatus:
    topology: str
    nodes: tuple[NodeStatus, ...]
    sentinels: tuple[SentinelStatus, ...]
    planned_masters: int
    replicas_per_master: int

    def problems(self, replicas: bool = True) -> list[str]:
        """What keeps the deployment from being what the stack asks for, one line each.

        With `replicas`, also every replica linked and every master holding
        `replicas_per_master` linked replicas: a master short of one is not healthy.
        The checks live in health.py, shared with `cachelayer health`."""
        return basic_problems(
            self.topology, self.nodes, self.sentinels, self.planned_masters, self.replicas_per_master, replicas
        )

    def healthy(self, replicas: bool = True) -> bool:
        return not self.problems(replicas)


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


def process_start_time(pid: int) -> int | None:
    """The start time of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_our_process(record: ProcessRecord) -> bool:
    """Still the redis-server we started: same start time, and its title names our port.

    redis-server rewrites its title to `redis-server <address>:<port> [cluster]`, so the port
    is what identifies it."""
    if process_start_time(record.pid) != record.start_time:
        return False
    cmdline = process_cmdline(record.pid)
    first = cmdline.split(" ", 1)[0]
    return os.path.basename(first).startswith("redis-server") and f":{record.port}" in cmdline


def generate_passwords() -> Passwords:
    return Passwords(*(secrets.token_urlsafe(24) for _ in dataclasses.fields(Passwords)))


def require_binaries(*names: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name)
        if path is None:
            raise RedisNotInstalledError(f"`{name}` was not found on PATH: {INSTALL_HINT}")
        found[name] = path
    return found


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
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_workdir(cls, workdir: Path) -> LocalSandbox:
        """The sandbox recorded in `workdir` by an earlier `up` (for `status` and `down`)."""
        state = cls._read_state_file(Path(workdir))
        if state is None:
            raise SandboxError(f"no sandbox in {workdir} (no {STATE_FILE}): start one with `sandbox up`")
        settings = load_settings(state["config"], state["stack"])
        placement = Placement(
            tuple((h, a) for h, a in state["placement"]["nodes"]),
            tuple((h, a) for h, a in state["placement"]["sentinels"]),
        )
        tls_dir = Path(state["tls_dir"]) if state.get("tls_dir") else None
        return cls(settings, Path(workdir), state["address"], placement, config=state["config"], tls_dir=tls_dir)

    def check_same_deployment(self) -> None:
        """Refuse to start a second, unrelated deployment in a workdir that holds one: another
        base port or topology would form a new cluster beside the old one's files."""
        state = self._read_state_file(self.workdir)
        if state is None:
            return
        recorded = load_settings(state["config"], state["stack"]).redis
        wanted = self.settings.redis
        if (recorded.base_port, recorded.topology) != (wanted.base_port, wanted.topology):
            raise SandboxError(
                f"{self.workdir} holds the {recorded.topology} sandbox of stack {state['stack']} on ports "
                f"{recorded.base_port}-{recorded.base_port + recorded.node_count - 1}, and this `up` asks for a "
                f"{wanted.topology} on {wanted.base_port}-{wanted.base_port + wanted.node_count - 1}. Run "
                f"`sandbox down --stack {state['stack']} --workdir {self.workdir}` first, or give this "
                "one its own --workdir"
            )

    # ------------------------------------------------------------------ files
    @property
    def passwords_file(self) -> Path:
        return self.workdir / PASSWORDS_FILE

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    def paths(self, process: Node | SentinelNode) -> Paths:
        return sandbox_paths(self.workdir, process.name, bind=process.address)

    @property
    def passwords(self) -> Passwords:
        """The sandbox's passwords: generated on first use, kept in a 0600 file in the workdir.

        A file written before a user existed (the `monitor` user came later) gets that user's
        password added, so the other users keep theirs."""
        names = [f.name for f in dataclasses.fields(Passwords)]
        kept: dict[str, str] = {}
        if self.passwords_file.exists():
            kept = json.loads(self.passwords_file.read_text())
            if all(kept.get(name) for name in names):
                return Passwords(*(kept[name] for name in names))
        generated = generate_passwords()
        given = {key.removesuffix("_password"): self.config.get(key) for key in PASSWORD_KEYS}
        passwords = Passwords(*(kept.get(n) or given.get(n) or getattr(generated, n) for n in names))
        self._make_workdir()
        # A fresh file, 0600 at creation (O_EXCL), renamed over the old one: never readable by others.
        tmp = self.passwords_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(dataclasses.asdict(passwords), file)
        tmp.replace(self.passwords_file)
        return passwords

    def _make_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def _read_state_file(workdir: Path) -> dict[str, Any] | None:
        path = workdir / STATE_FILE
        if not path.exists():
            return None
        state: dict[str, Any] = json.loads(path.read_text())
        return state

    def records(self) -> dict[str, ProcessRecord]:
        state = self._read_state_file(self.workdir)
        if state is None:
            return {}
        return {name: ProcessRecord(**record) for name, record in state.get("processes", {}).items()}

    def _write_state(self, records: Mapping[str, ProcessRecord]) -> None:
        state = {
            "stack": self.settings.stack,
            "config": self.config,
            "address": self.address,
            "placement": {"nodes": list(self.placement.nodes), "sentinels": list(self.placement.sentinels)},
            "tls_dir": str(self.tls_dir) if self.tls_dir else None,
            "processes": {name: record.__dict__ for name, record in records.items()},
        }
        self._make_workdir()
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _write_node_files(self, node: Node) -> Paths:
        """The files the Pulumi program uploads to the node's container, rendered the same way."""
        paths = self._make_dirs(node)
        passwords = self.passwords
        Path(paths.conf_file).write_text(render_redis_conf(self.settings, self.topology, node, paths))
        self._write_secret(Path(paths.acl_file), render_users_acl(self.settings, passwords))
        self._write_secret(Path(paths.auth_file), render_auth_conf(node.name, passwords))
        return paths

    def _write_sentinel_files(self, sentinel: SentinelNode) -> Paths:
        paths = self._make_dirs(sentinel)
        # Sentinel rewrites its config as it learns: written once, like the program's upload.
        if not Path(paths.conf_file).exists():
            self._write_secret(
                Path(paths.conf_file), render_sentinel_conf(self.settings, self.topology, sentinel, paths, self.passwords)
            )
        return paths

    def _make_dirs(self, process: Node | SentinelNode) -> Paths:
        # One by one: mkdir(parents=True) would create the parents with the default mode.
        paths = self.paths(process)
        self._make_workdir()
        for directory in (paths.conf_dir, paths.data_dir):
            Path(directory).mkdir(exist_ok=True, mode=0o700)
        if self.tls_dir is not None:
            # Where the rendered config looks for them, as the hosts' /etc/redis/tls.
            target = Path(paths.tls_ca_file).parent
            target.mkdir(exist_ok=True, mode=0o700)
            for name in TLS_FILES:
                self._write_secret(target / name, (self.tls_dir / name).read_text())
        return paths

    @staticmethod
    def _write_secret(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)

    # -------------------------------------------------------------- processes
    def _processes(self) -> list[Node | SentinelNode]:
        return [*self.topology.nodes, *self.topology.sentinels]

    def process(self, name: str) -> Node | SentinelNode:
        for process in self._processes():
            if process.name == name:
                return process
        raise SandboxError(f"no process named {name} in this sandbox")

    def _by_port(self, port: int) -> Node | SentinelNode:
        for process in self._processes():
            if process.port == port:
                return process
        raise SandboxError(f"no process on port {port} in this sandbox")

    def retired_nodes(self) -> dict[str, ProcessRecord]:
        """Running nodes of an earlier, larger plan (a lowered redis.node_count)."""
        planned = {p.name for p in self._processes()}
        return {name: r for name, r in self.running().items() if not r.sentinel and name not in planned}

    def forget(self, name: str) -> None:
        """Stop a node that is no longer planned (if still running) and remove its files."""
        self.stop(names=[name])
        shutil.rmtree(self.workdir / name, ignore_errors=True)

    def running(self) -> dict[str, ProcessRecord]:
        """Recorded processes that are still the ones we started."""
        return {name: r for name, r in self.records().items() if self._alive(r)}

    def _alive(self, record: ProcessRecord) -> bool:
        child = self._children.get(record.pid)
        if child is not None and child.poll() is not None:
            return False  # reaped: our own child has exited
        return is_our_process(record)

    def _check_ports(self, processes: Sequence[Node | SentinelNode]) -> None:
        for process in processes:
            if process.address != self.address:
                continue  # on another (namespaced) host: its ports are its own
            ports = [(process.port, "client" if isinstance(process, Node) else "sentinel")]
            if isinstance(process, Node) and self.topology.kind == "cluster":
                ports.append((process.bus_port, "cluster bus"))
            for port, what in ports:
                if not port_is_free(process.address, port):
                    raise PortInUseError(port, process.address, f"{what} port of {process.name}")

    def start(self, names: Sequence[str] | None = None) -> tuple[str, ...]:
        """Start the named processes (default: every one not running) and wait until they answer."""
        binaries = require_binaries("redis-server", "redis-cli")
        running = self.running()
        wanted = [p for p in self._processes() if (names is None or p.name in names) and p.name not in running]
        self._check_ports(wanted)
        records = dict(self.records())
        for process in wanted:
            records[process.name] = self._spawn(process, binaries["redis-server"])
        self._write_state(records)
        for process in wanted:
            self._wait_answers(process, records[process.name])
        return tuple(p.name for p in wanted)

    def _spawn(self, process: Node | SentinelNode, server: str) -> ProcessRecord:
        is_sentinel = isinstance(process, SentinelNode)
        paths = self._write_sentinel_files(process) if is_sentinel else self._write_node_files(process)  # type: ignore[arg-type]
        # The argv the containers run (`redis-server <conf> [--sentinel]`): no secret on it.
        argv = [server, paths.conf_file, *(["--sentinel"] if is_sentinel else [])]
        if isinstance(process, Node) and self.topology.kind == "sentinel":
            # As on the hosts: the start script asks the sentinels for the role, then execs
            # redis-server, so the pid we record ends up being redis-server's.
            script = render_node_start_script(
                self.settings, self.topology, process, paths, [server], wait_seconds=max(1, self.wait_seconds // 2)
            )
            Path(paths.start_script).write_text(script)
            argv = ["sh", paths.start_script]
        argv = [*self.host_prefix(process.host), *argv]
        console_log = Path(paths.conf_dir) / "console.log"
        with console_log.open("ab") as log:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=paths.data_dir,
                start_new_session=True,  # a Ctrl-C in the terminal that ran `up` does not stop it
                # Sentinel rewrites its config (passwords inside) and Redis writes RDB/AOF files
                # with the process umask: keep them private, as the units' UMask=0077 does.
                umask=0o077,
            )
        self._children[child.pid] = child
        start_time = None
        for _ in range(100):
            start_time = process_start_time(child.pid)
            if start_time is not None:
                break
            time.sleep(0.01)
        return ProcessRecord(process.name, child.pid, start_time or -1, process.address, process.port, is_sentinel)

    def _wait_answers(self, process: Node | SentinelNode, record: ProcessRecord) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            if not self._alive(record) and not self._exec_pending(record):
                log = Path(self.paths(process).conf_dir) / "console.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                server_log = Path(self.paths(process).log_file)
                if server_log.exists():
                    tail += server_log.read_text(errors="replace")[-1500:]
                raise SandboxError(f"{process.name} exited during start-up; its log ends with:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection((process.address, process.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise SandboxError(f"{process.name} did not accept connections on {process.endpoint} within {self.wait_seconds} s")

    def _exec_pending(self, record: ProcessRecord) -> bool:
        """With a host prefix (`ip netns exec`) the pid shows the prefix until it execs redis-server."""
        child = self._children.get(record.pid)
        return child is not None and child.poll() is None and process_start_time(record.pid) is not None

    def signal(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send a signal to one of our processes (kill -9 a master in a failover test)."""
        record = self.records().get(name)
        if record is None or not self._alive(record):
            raise SandboxError(f"{name} is not running (or is no longer the process this sandbox started)")
        os.kill(record.pid, signum)

    def stop(self, names: Sequence[str] | None = None, timeout: float = 20.0) -> DownResult:
        """Stop processes we started (SIGTERM, then SIGKILL): a clean shutdown flushes the AOF."""
        records = self.records()
        chosen = {n: r for n, r in records.items() if names is None or n in names}
        stopped: list[str] = []
        not_ours: list[str] = []
        for name, record in chosen.items():
            # A start script still waiting for the sentinels is ours too (it would exec later).
            if not self._alive(record) and not self._exec_pending(record):
                if process_start_time(record.pid) is not None and not is_our_process(record):
                    not_ours.append(name)
                continue
            os.kill(record.pid, signal.SIGTERM)
            stopped.append(name)
        for name in stopped:
            self._wait_exit(chosen[name], timeout)
        remaining = {n: r for n, r in records.items() if n not in chosen}
        self._write_state(remaining)
        return DownResult(tuple(stopped), tuple(not_ours))

    def _wait_exit(self, record: ProcessRecord, timeout: float) -> None:
        child = self._children.pop(record.pid, None)
        deadline = time.monotonic() + timeout
        resend = time.monotonic() + 1
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    return
            elif not is_our_process(record):
                return
            if time.monotonic() >= resend and is_our_process(record):
                # redis-server drops a SIGTERM it cannot act on yet ("Writing initial AOF, can't
                # exit": a replica just after its full sync), and does not try again by itself.
                os.kill(record.pid, signal.SIGTERM)
                resend = time.monotonic() + 1
            time.sleep(0.05)
        if is_our_process(record):
            os.kill(record.pid, signal.SIGKILL)
        if child is not None:
            child.wait(timeout=5)

    def reap(self, name: str, timeout: float = 10.0) -> None:
        """Wait for a signalled process to exit and forget it, so it can be started again."""
        record = self.records().get(name)
        if record is None:
            return
        self._wait_exit(record, timeout)
        records = self.records()
        records.pop(name, None)
        self._write_state(records)

    # -------------------------------------------------------------- bootstrap
    def bootstrap_script(self) -> str:
        tls_dir = str(self.tls_dir) if self.tls_dir else ""
        return render_bootstrap_script(self.settings, self.topology, tls_dir, wait_seconds=self.wait_seconds)

    def bootstrap(self) -> str:
        """Run the program's bootstrap script, exactly as it runs it but without `docker exec`:
        `sh -s` with the script on stdin and the admin password in REDISCLI_AUTH."""
        script = self.bootstrap_script()
        (self.workdir / BOOTSTRAP_FILE).write_text(script)  # no secret in it: for reading after a failure
        first = self.topology.nodes[0]
        # The script bounds each of its own waits; this outer bound only catches a script that hangs.
        limit = self.wait_seconds * 8
        try:
            result = subprocess.run(
                [*self.host_prefix(first.host), "sh", "-s"],
                input=script,
                text=True,
                capture_output=True,
                env={**os.environ, "REDISCLI_AUTH": self.passwords.admin},
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            output = _text(expired.stdout) + _text(expired.stderr)
            raise SandboxError(
                f"the bootstrap script did not finish within {limit} s; its output so far:\n{output[-3000:]}"
            ) from None
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise SandboxError(f"the bootstrap script failed (exit {result.returncode}):\n{output[-3000:]}")
        return output

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

    def wait_converged(self, timeout: float | None = None, replicas: bool = True) -> None:
        """Every node up; in a cluster every node sees all slots served; with `replicas`, also
        every master holding its linked replicas (the first full sync included)."""
        deadline = time.monotonic() + (timeout or self.wait_seconds)
        problems: list[str] = []
        while time.monotonic() < deadline:
            problems = self.status().problems(replicas)
            if not problems:
                return
            time.sleep(0.2)
        raise SandboxError(
            f"the sandbox did not converge within {timeout or self.wait_seconds} s:\n  " + "\n  ".join(problems)
        )

    # ----------------------------------------------------------------- clients
    def admin(self, node: Node | SentinelNode | int, **options: Any) -> redis.Redis:
        return self.client(node, USERS.admin, self.passwords.admin, **options)

    def client(
        self, node: Node | SentinelNode | int, username: str | None, password: str | None, **options: Any
    ) -> redis.Redis:
        """A client of one process as any user (None, None: anonymous), over TLS when the stack is."""
        process = self._by_port(node) if isinstance(node, int) else node
        if self.tls_dir is not None:
            options = tls_client_options(str(self.tls_dir / "ca.crt")) | options
        return redis.Redis(
            host=process.address,
            port=process.port,
            username=username,
            password=password,
            decode_responses=True,
            socket_timeout=options.pop("socket_timeout", 2),
            socket_connect_timeout=options.pop("socket_connect_timeout", 2),
            **options,
        )

    @contextlib.contextmanager
    def admin_client(self, node: Node | SentinelNode | int) -> Iterator[redis.Redis]:
        client = self.admin(node)
        try:
            yield client
        finally:
            client.close()

    # ------------------------------------------------------------------ status
    def status(self) -> SandboxStatus:
        records = self.running()
        nodes = tuple(self._node_status(node, records.get(node.name)) for node in self.topology.nodes)
        sentinels = tuple(self._sentinel_status(s, records.get(s.name)) for s in self.topology.sentinels)
        return SandboxStatus(
            self.topology.kind, nodes, sentinels, len(self.topology.masters), self.settings.redis.replicas_per_master
        )

    def _node_status(self, node: Node, record: ProcessRecord | None) -> NodeStatus:
        return self.node_facts(node, record).status

    def node_facts(self, node: Node, record: ProcessRecord | None = None) -> NodeFacts:
        with self.admin_client(node) as client:
            return node_facts(node.name, node.endpoint, client, self.topology.kind == "cluster", record.pid if record else None)

    def _sentinel_status(self, sentinel: SentinelNode, record: ProcessRecord | None) -> SentinelStatus:
        groups = [m.group for m in self.topology.masters]
        with self.admin_client(sentinel) as client:
            facts = sentinel_facts(sentinel.name, sentinel.endpoint, client, groups, record.pid if record else None, detail=False)
        return facts.status


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")
