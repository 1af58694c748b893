"""The sandbox's process supervisor stops a process it did not start itself (another
`cachelayer` run started it) only once the process is really gone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cachelayer.ports import free_loopback_port, port_is_free
from cachelayer.sandbox import processes
from cachelayer.sandbox.processes import ProcessSupervisor, process_start_time
from cachelayer.sandbox.state import ProcessRecord

# Holds a listening port for a while, then exits: a process in the middle of dying, whose
# sockets are still open.
HOLD_THEN_EXIT = """
import socket, sys, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
print("listening", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_killed_process_that_still_holds_its_port_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between SIGKILL and the end of its exit a process has no command line any more (the
    kernel frees its memory first) but still holds its sockets: `stop` must not report it gone
    then, or the `start` that follows finds its port taken."""
    port = free_loopback_port()
    dying = subprocess.Popen([sys.executable, "-c", HOLD_THEN_EXIT, str(port), "1.5"], stdout=subprocess.PIPE)
    try:
        assert dying.stdout is not None and dying.stdout.readline().strip() == b"listening"
        start_time = process_start_time(dying.pid)
        assert start_time is not None
        record = ProcessRecord("redis-test", dying.pid, start_time, "127.0.0.1", port, sentinel=False)
        # What /proc shows of a process in its exit: the same start time, no command line.
        monkeypatch.setattr(processes, "process_cmdline", lambda pid: "")

        supervisor = ProcessSupervisor()  # not the object that started it, like a later CLI run
        _, not_ours = supervisor.stop({record.name: record}, timeout=10)

        assert not_ours == [], "a dying process of ours was taken for a stranger"
        assert port_is_free("127.0.0.1", port), "stop returned while the process still held its port"
        assert dying.poll() is not None or process_start_time(dying.pid) is None
    finally:
        dying.kill()
        dying.wait()


def test_a_stranger_on_a_recorded_pid_is_left_alone() -> None:
    """A pid reused by another process (another start time) is named, never signalled."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start_time = process_start_time(stranger.pid)
        assert start_time is not None
        record = ProcessRecord("redis-test", stranger.pid, start_time - 1, "127.0.0.1", 1, sentinel=False)
        stopped, not_ours = ProcessSupervisor().stop({record.name: record}, timeout=5)
        assert (stopped, not_ours) == ([], ["redis-test"])
        assert stranger.poll() is None, "the stranger was signalled"
    finally:
        stranger.kill()
        stranger.wait()


