"""The sandbox CLI's refusals: missing redis-server, a port already taken, no sandbox to stop.

No Redis is started: PATH points at a directory we control."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachelayer.cli import main


@pytest.fixture
def fake_redis_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only stand-ins for redis-server and redis-cli that would fail if run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("redis-server", "redis-cli"):
        script = bin_dir / name
        script.write_text("#!/bin/sh\nexit 3\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def hold_port(candidates: range) -> socket.socket:
    """A listening socket on the first free port of `candidates` (ports that keep every
    derived bus port below 65536, so settings validation passes and the port check is reached)."""
    for port in candidates:
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", port))
        except OSError:
            holder.close()
            continue
        holder.listen()
        return holder
    pytest.fail(f"no free port in {candidates}")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with hold_port(range(7450, 7600)) as holder:
        yield holder.getsockname()[1]


@pytest.fixture
def taken_bus_port() -> Iterator[int]:
    with hold_port(range(17450, 17600)) as holder:
        yield holder.getsockname()[1]


def test_missing_redis_server_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing in it
    code = main(["sandbox", "up", "--stack", "dev", "--workdir", str(tmp_path / "sb"), "--base-port", "7400"])
    err = capsys.readouterr().err
    assert code == 1
    assert "redis-server" in err and "scripts/test.sh" in err, err


def test_taken_port_is_named_with_down_and_base_port(
    fake_redis_path: Path, taken_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sandbox", "up", "--stack", "dev", "--workdir", str(tmp_path / "sb"), "--base-port", str(taken_port)])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 1
    assert f"port {taken_port}" in err, err
    assert "sandbox down" in err and "redis.base_port" in err, err


def test_bus_port_taken_is_named_too(
    fake_redis_path: Path, taken_bus_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken_port = taken_bus_port
    base = taken_port - 10000 - 2  # node 2's cluster bus port is the taken one
    code = main(["sandbox", "up", "--stack", "dev", "--workdir", str(tmp_path / "sb"), "--base-port", str(base)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert f"port {taken_port} (cluster bus port of redis-{base + 2})" in err, err


def test_unknown_topology_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sandbox", "up", "--workdir", str(tmp_path / "sb"), "--topology", "ring"])
    assert code == 1
    assert "cluster or sentinel" in capsys.readouterr().err


def test_status_without_a_sandbox_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sandbox", "status", "--workdir", str(tmp_path / "none")])
    assert code == 1
    assert "sandbox up" in " ".join(capsys.readouterr().err.split())
