"""What only tests do to a LocalSandbox's processes: kill one (a failover drill), find one by name.

To reap a killed process so it can be started again, call `sandbox.stop([name])`: it waits for
the exit (a process already gone is simply forgotten) and drops the process's record."""

from __future__ import annotations

import os
import signal

from cachelayer.plan.topology import Node, SentinelNode
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.local import LocalSandbox


def kill(sandbox: LocalSandbox, name: str, signum: int = signal.SIGKILL) -> None:
    """Send a signal to one of the sandbox's running processes (kill -9 a master in a failover test)."""
    record = sandbox.running().get(name)
    if record is None:
        raise SandboxError(f"{name} is not running (or is no longer the process this sandbox started)")
    os.kill(record.pid, signum)


def process_named(sandbox: LocalSandbox, name: str) -> Node | SentinelNode:
    processes: list[Node | SentinelNode] = [*sandbox.topology.nodes, *sandbox.topology.sentinels]
    for process in processes:
        if process.name == name:
            return process
    raise SandboxError(f"no process named {name} in this sandbox")
