"""The sandbox's processes: start them, tell whether a recorded pid is still ours, stop them.

Before it signals a pid it checks that /proc/<pid> is still that redis-server (same start time,
our port in its title), so it never kills a process it did not start, even after a reboot
recycled the pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cachelayer.plan.topology import Node, SentinelNode
from cachelayer.ports import port_is_free
from cachelayer.sandbox.errors import PortInUseError, RedisNotInstalledError, SandboxError
from cachelayer.sandbox.state import ProcessRecord

INSTALL_HINT = (
    "run the README's test command `scripts/test.sh`, which installs it (scripts/setup.sh), "
    "or `apt-get install redis-server redis-tools`"
)

# Maps a placement host name to the argv prefix that runs a command on that host. Loopback
# needs none; the network-namespace tests pass `ip netns exec <ns>`.
HostPrefix = Callable[[str], Sequence[str]]


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


def still_exiting(record: ProcessRecord) -> bool:
    """The process we started, dying: its title is gone (the kernel drops a process's memory,
    and so its /proc cmdline, before it closes its sockets), but it is not a zombie yet, so its
    ports may still be bound."""
    return process_start_time(record.pid) == record.start_time and not process_cmdline(record.pid)


def require_binaries(*names: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name)
        if path is None:
            raise RedisNotInstalledError(f"`{name}` was not found on PATH: {INSTALL_HINT}")
        found[name] = path
    return found


def check_ports(processes: Sequence[Node | SentinelNode], address: str, cluster: bool) -> None:
    """Refuse to start a process whose client (or cluster bus) port on `address` is taken."""
    for process in processes:
        if process.address != address:
            continue  # on another (namespaced) host: its ports are its own
        ports = [(process.port, "client" if isinstance(process, Node) else "sentinel")]
        if isinstance(process, Node) and cluster:
            ports.append((process.bus_port, "cluster bus"))
        for port, what in ports:
            if not port_is_free(process.address, port):
                raise PortInUseError(port, process.address, f"{what} port of {process.name}")


def start_detached(
    argv: Sequence[str], cwd: str | Path, console_log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a long-lived process of the sandbox, and its start time (-1 if it died at once):
    with the start time, a later pid check cannot mistake a stranger that reused the pid."""
    with console_log.open("ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal that ran `up` does not stop it
            # Sentinel rewrites its config (passwords inside) and Redis writes RDB/AOF files
            # with the process umask: keep them private, as the units' UMask=0077 does.
            umask=0o077,
        )
    start_time = None
    for _ in range(100):
        start_time = process_start_time(child.pid)
        if start_time is not None:
            break
        time.sleep(0.01)
    return child, start_time if start_time is not None else -1


class ProcessSupervisor:
    """Starts and stops the sandbox's processes; remembers the children this object started, so
    it can reap them and tell a start script that has not yet exec'ed redis-server from a stranger."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, process: Node | SentinelNode, argv: Sequence[str], cwd: str, console_log: Path) -> ProcessRecord:
        child, start_time = start_detached(argv, cwd, console_log)
        self._children[child.pid] = child
        sentinel = isinstance(process, SentinelNode)
        return ProcessRecord(process.name, child.pid, start_time, process.address, process.port, sentinel)

    def alive(self, record: ProcessRecord) -> bool:
        child = self._children.get(record.pid)
        if child is not None and child.poll() is not None:
            return False  # reaped: our own child has exited
        return is_our_process(record)

    def _exec_pending(self, record: ProcessRecord) -> bool:
        """With a host prefix (`ip netns exec`) the pid shows the prefix until it execs redis-server."""
        child = self._children.get(record.pid)
        return child is not None and child.poll() is None and process_start_time(record.pid) is not None

    def wait_answers(
        self, process: Node | SentinelNode, record: ProcessRecord, seconds: int, logs: Sequence[Path]
    ) -> None:
        """Wait until the process accepts connections; if it exits first, say so with its `logs`' ends."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive(record) and not self._exec_pending(record):
                tail = "".join(log.read_text(errors="replace")[-1500:] for log in logs if log.exists())
                raise SandboxError(f"{process.name} exited during start-up; its log ends with:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection((process.address, process.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise SandboxError(f"{process.name} did not accept connections on {process.endpoint} within {seconds} s")

    def stop(self, records: Mapping[str, ProcessRecord], timeout: float) -> tuple[list[str], list[str]]:
        """SIGTERM, then SIGKILL after `timeout`: a clean shutdown flushes the AOF. Returns the
        names stopped and those whose recorded pid is now some other process (left alone)."""
        stopped: list[str] = []
        not_ours: list[str] = []
        exiting: list[str] = []
        for name, record in records.items():
            # A start script still waiting for the sentinels is ours too (it would exec later).
            if not self.alive(record) and not self._exec_pending(record):
                if still_exiting(record):
                    exiting.append(name)  # killed a moment ago: its ports are free only once it is gone
                elif process_start_time(record.pid) is not None:
                    not_ours.append(name)
                continue
            os.kill(record.pid, signal.SIGTERM)
            stopped.append(name)
        for name in stopped + exiting:
            self._wait_exit(records[name], timeout)
        return stopped, not_ours

    def _wait_exit(self, record: ProcessRecord, timeout: float) -> None:
        child = self._children.pop(record.pid, None)
        deadline = time.monotonic() + timeout
        resend = time.monotonic() + 1
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    return
            elif not is_our_process(record) and not still_exiting(record):
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
