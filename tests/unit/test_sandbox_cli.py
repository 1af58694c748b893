"""The sandbox CLI's refusals: missing redis-server, a port already taken, no sandbox to stop.

No Redis is started: PATH points at a directory we control."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from cachelayer.cli.app import main
from cachelayer.cli.sandbox import status_table
from cachelayer.ops.health import NodeStatus, SentinelStatus
from cachelayer.sandbox.convergence import SandboxStatus


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
    assert code == 64  # ExitCode.USAGE, as click's own checks
    assert "cluster or sentinel" in capsys.readouterr().err


def test_status_without_a_sandbox_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sandbox", "status", "--workdir", str(tmp_path / "none")])
    assert code == 1
    assert "sandbox up" in " ".join(capsys.readouterr().err.split())


def test_workdir_help_shows_its_default(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for command in ("up", "status", "down"):
        assert main(["sandbox", command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "Where the sandbox's files, logs and PIDs live (default: .sandbox/STACK)." in out, (command, out)


def test_status_table_keeps_full_process_names_at_80_columns() -> None:
    names = [f"redis-{port}" for port in range(7000, 7006)] + [f"redis-sentinel-{p}" for p in (26379, 26380, 26381)]
    nodes = tuple(
        NodeStatus(name, f"127.0.0.1:{7000 + i}", True, 4000000 + i, "master" if i < 3 else "replica", None, 123456,
                   "1.23M", "-", "up" if i >= 3 else "-", "127.0.0.1:7000" if i >= 3 else "-")
        for i, name in enumerate(names[:6])
    )
    sentinels = tuple(
        SentinelStatus(name, f"127.0.0.1:{port}", True, 4100000, {f"redis-master-{g}": f"127.0.0.1:{7000 + g}" for g in (1, 2, 3)})
        for name, port in zip(names[6:], (26379, 26380, 26381), strict=True)
    )
    report = SandboxStatus("sentinel", nodes, sentinels, planned_masters=3, replicas_per_master=1)
    console = Console(width=80, record=True)
    console.print(status_table(report))
    text = console.export_text()
    for name in names:
        assert f" {name} " in text, f"{name} is cut at 80 columns:\n{text}"


def test_problems_name_a_master_short_of_replicas_and_a_broken_link() -> None:
    def node(name: str, role: str, link: str = "-", master: str = "-", up: bool = True) -> NodeStatus:
        return NodeStatus(name, f"127.0.0.1:{name[-4:]}", up, 1, role, 5461 if role == "master" else 0, 0, "1M", "ok", link, master)

    healthy = (
        node("redis-7000", "master"), node("redis-7001", "master"), node("redis-7002", "master"),
        node("redis-7003", "replica", "up", "127.0.0.1:7000"), node("redis-7004", "replica", "up", "127.0.0.1:7001"),
        node("redis-7005", "replica", "up", "127.0.0.1:7002"),
    )
    assert SandboxStatus("cluster", healthy, (), 3, 1).problems() == []
    doubled = (*healthy[:5], node("redis-7005", "replica", "up", "127.0.0.1:7001"))
    assert SandboxStatus("cluster", doubled, (), 3, 1).problems() == [
        "redis-7002 has 0 linked replica(s), the stack asks for 1"
    ]
    assert SandboxStatus("cluster", doubled, (), 3, 1).problems(replicas=False) == []
    broken = (*healthy[:5], node("redis-7005", "replica", "down", "127.0.0.1:7002"))
    assert SandboxStatus("cluster", broken, (), 3, 1).problems() == [
        "redis-7005's link to its master 127.0.0.1:7002 is down",
        "redis-7002 has 0 linked replica(s), the stack asks for 1",
    ]
    assert SandboxStatus("cluster", healthy, (), 3, 2).problems() == [
        f"redis-700{i} has 1 linked replica(s), the stack asks for 2" for i in range(3)
    ]


def test_a_masked_password_shows_none_of_its_characters() -> None:
    from cachelayer.cli.sandbox import _mask

    password = "Zq9xK2mWv7TnB4"
    shown = _mask(password)
    assert f"{len(password)} chars" in shown
    assert not any(password[i:i + 3] in shown for i in range(len(password) - 2)), shown  # not even a prefix
