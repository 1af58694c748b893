"""HAProxy for the local sandbox in Sentinel topology: Debian's `haproxy` on loopback, from the
configuration the hosts get (render/load_balancer.py), with the sandbox's password.

The configuration (the monitor password inside) is a 0600 file in the workdir. The process is
recorded (pid, start time) in `<workdir>/load_balancer.json`, and only a pid that is still that
haproxy is ever signalled, as for the sandbox's other processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cachelayer.ports import port_is_free
from cachelayer.render.load_balancer import (
    HAPROXY_BINARY,
    SAVE_SERVER_STATE_PY,
    LoadBalancerEndpoint,
    load_balancer_endpoints,
    load_balancer_groups,
    render_haproxy_config,
)
from cachelayer.render.nodes import Passwords
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.local import LocalSandbox
from cachelayer.sandbox.processes import process_cmdline, process_start_time, start_detached

STATE_FILE = "load_balancer.json"
CONFIG_FILE = "haproxy.cfg"
ADMIN_SOCKET = "admin.sock"
SERVER_STATE_FILE = "server-state"
INSTALL_HINT = "run scripts/setup.sh (it installs it), or `apt-get install haproxy`"


@dataclass(frozen=True)
class LoadBalancerProcess:
    pid: int
    start_time: int
    # Older processes a reload left finishing their connections (pid, start time).
    draining: list[list[int]] = field(default_factory=list)

    def draining_processes(self) -> list[LoadBalancerProcess]:
        return [LoadBalancerProcess(pid, start_time) for pid, start_time in self.draining]


class SandboxLoadBalancer:
    """One haproxy in front of a running sentinel-topology LocalSandbox."""

    def __init__(self, sandbox: LocalSandbox) -> None:
        self.sandbox = sandbox
        self.address = "127.0.0.1"
        self.dir = sandbox.workdir / "load-balancer"
        self._children: list[subprocess.Popen[bytes]] = []

    @property
    def wanted(self) -> bool:
        """The sandbox runs one when the stack's topology uses it (load_balancer.enabled)."""
        return self.sandbox.settings.load_balancer_enabled

    @property
    def state_file(self) -> Path:
        return self.sandbox.workdir / STATE_FILE

    @property
    def config_file(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def admin_socket(self) -> Path:
        return self.dir / ADMIN_SOCKET

    @property
    def server_state_file(self) -> Path:
        return self.dir / SERVER_STATE_FILE

    @property
    def endpoints(self) -> list[LoadBalancerEndpoint]:
        return load_balancer_endpoints(self.sandbox.settings, self.sandbox.topology, self.address)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.sandbox.settings.load_balancer.exporter_port}/metrics"

    def ports(self) -> list[int]:
        groups = load_balancer_groups(self.sandbox.settings, self.sandbox.topology)
        return [*(g.write_port for g in groups), *(g.read_port for g in groups), self.sandbox.settings.load_balancer.exporter_port]

    # ------------------------------------------------------------------ lifecycle
    def up(self, wait_seconds: float = 30) -> None:
        """Write the configuration, check it with `haproxy -c`, start haproxy (unless running)
        and wait until every group's write side has its master up."""
        binary = self._binary()
        if self.running() is not None:
            return
        for port in self.ports():
            if not port_is_free(self.address, port):
                raise SandboxError(
                    f"load balancer port {port} is in use: set load_balancer.write_base_port, read_base_port "
                    "or exporter_port in the stack file"
                )
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A state file left from another run must not seed this start.
        self.server_state_file.unlink(missing_ok=True)
        self._write_config(binary, self.sandbox.passwords)
        self._start(binary, [], wait_seconds)

    def reload(self, passwords: Passwords, wait_seconds: float = 30) -> None:
        """The configuration again from `passwords` (a `monitor` rotation: the checks log in with
        the new password), and a graceful reload: a new process takes the listening sockets over
        (`-x`, nothing refused meanwhile) and the servers' states the old one knew (server-state-file,
        so no write reaches a replica while its checks would catch up); `-sf` lets the old one
        finish the connections it holds and exit (management guide, "-sf", "-x"). Returns once
        every group's write side has its master up."""
        binary = self._binary()
        old = self.running()
        if old is None:
            raise SandboxError("haproxy is not running: run `cachelayer sandbox up` (it starts it)")
        self._write_config(binary, passwords)
        self._save_server_state()
        try:
            self._start(binary, ["-x", str(self.admin_socket), "-sf", str(old.pid)], wait_seconds, draining=[old])
        except SandboxError:
            # -sf signals the old process only once the new one has started: if the new one
            # failed, the old one still serves; keep it recorded as the running one.
            if self._alive(old) and self.running() is None:
                self._write_state(old)
            raise

    def down(self) -> bool:
        """Stop the haproxy this sandbox started (if running; and any old one a reload left
        finishing its connections); remove its files."""
        record = self.record()
        running = self.running()
        for process in [*(record.draining_processes() if record else []), *([running] if running else [])]:
            if not self._alive(process):
                continue
            os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self._alive(process) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(process):
                os.kill(process.pid, signal.SIGKILL)
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        self._children = []
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return running is not None

    def _binary(self) -> str:
        binary = shutil.which(HAPROXY_BINARY)
        if binary is None:
            raise SandboxError(f"`{HAPROXY_BINARY}` was not found on PATH: {INSTALL_HINT}")
        return binary

    def _write_config(self, binary: str, passwords: Passwords) -> None:
        """The 0600 configuration (it holds the monitor password), checked by `haproxy -c`
        before any process reads it."""
        tls_ca = str(self.sandbox.tls_dir / "ca.crt") if self.sandbox.tls_dir else None
        text = render_haproxy_config(
            self.sandbox.settings, self.sandbox.topology, passwords, self.address, ca_file=tls_ca,
            admin_socket=str(self.admin_socket), server_state_file=str(self.server_state_file),
        )
        tmp = self.config_file.with_suffix(".new")
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        checked = subprocess.run([binary, "-c", "-q", "-f", str(tmp)], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise SandboxError(f"haproxy refused its configuration: {checked.stdout}{checked.stderr}".strip())
        tmp.replace(self.config_file)

    def _save_server_state(self) -> None:
        """`show servers state` of the running haproxy into the state file the next one loads
        (the same script the hosts run before their reload)."""
        saved = subprocess.run(
            [sys.executable, "-c", SAVE_SERVER_STATE_PY, str(self.admin_socket), str(self.server_state_file),
             str(self.config_file)],
            capture_output=True, text=True, check=False, timeout=30,
        )
        if saved.returncode != 0 or not self.server_state_file.exists():
            raise SandboxError(
                f"haproxy did not give its server states on {self.admin_socket} (a haproxy started by an older "
                "cachelayer has no admin socket): restart it with `cachelayer sandbox down` and `sandbox up`, then "
                f"re-run the command {saved.stderr}".strip()
            )

    def _start(self, binary: str, extra: list[str], wait_seconds: float,
               draining: list[LoadBalancerProcess] | None = None) -> None:
        # -db: stay in the foreground (the sandbox supervises it), no master-worker.
        argv = [binary, "-db", "-f", str(self.config_file), *extra]
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        child, start_time = start_detached(argv, self.dir, self.dir / "haproxy.log", environment)
        self._children.append(child)
        previous = self.record()
        still_draining = [p for p in (previous.draining_processes() if previous else []) if self._alive(p)]
        self._write_state(LoadBalancerProcess(
            child.pid, start_time, [[p.pid, p.start_time] for p in [*still_draining, *(draining or [])]]
        ))
        self.wait_masters_up(wait_seconds)

    # ------------------------------------------------------------------ process
    def record(self) -> LoadBalancerProcess | None:
        if not self.state_file.exists():
            return None
        return LoadBalancerProcess(**json.loads(self.state_file.read_text()))

    def running(self) -> LoadBalancerProcess | None:
        record = self.record()
        return record if record is not None and self._alive(record) else None

    def _alive(self, record: LoadBalancerProcess) -> bool:
        for child in self._children:
            if child.pid == record.pid and child.poll() is not None:
                return False
        if process_start_time(record.pid) != record.start_time:
            return False
        return os.path.basename(process_cmdline(record.pid).split(" ", 1)[0]) == HAPROXY_BINARY

    def _write_state(self, record: LoadBalancerProcess) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.__dict__))
        tmp.replace(self.state_file)

    # ------------------------------------------------------------------ state
    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def servers_up(self) -> dict[str, list[str]]:
        """Proxy -> the servers HAProxy has UP (from its exporter's haproxy_server_status)."""
        up: dict[str, list[str]] = {}
        for line in self.metrics().splitlines():
            if line.startswith("haproxy_server_status{") and 'state="UP"' in line and line.endswith(" 1"):
                labels = dict(
                    part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
                )
                up.setdefault(labels["proxy"].strip('"'), []).append(labels["server"].strip('"'))
        return up

    def wait_masters_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        groups = [g.name for g in load_balancer_groups(self.sandbox.settings, self.sandbox.topology)]
        missing = groups
        while time.monotonic() < deadline:
            record = self.record()
            if record is None or not self._alive(record):
                log = self.dir / "haproxy.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise SandboxError(f"haproxy exited during start-up; its log ends with:\n{tail}")
            with contextlib.suppress(OSError, ValueError):
                up = self.servers_up()
                # HAProxy starts with every server UP until `fall` checks fail: settled when each
                # group has one master on the write side and no node UP on both sides.
                missing = [
                    g for g in groups
                    if len(up.get(f"{g}-write", [])) != 1 or set(up.get(f"{g}-write", [])) & set(up.get(f"{g}-read", []))
                ]
                if not missing:
                    return
            time.sleep(0.1)
        raise SandboxError(f"haproxy has not exactly one master up for {', '.join(missing)} after {timeout} s")

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
            (self.address, self.sandbox.settings.load_balancer.exporter_port), timeout=0.5
        ):
            return True
        return False
