"""The sandbox as an operator lives with it: health that notices a master short of replicas,
a second `up` that would start an unrelated deployment, `down` that keeps the passwords, and
files that stay private after Sentinel rewrites its config, a stop while a node writes its first AOF.
Ports 7160-7186 (sentinels 27176-27178)."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cachelayer.cli.app import main
from cachelayer.render.nodes import PASSWORD_USERS, password_hash
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings

from .conftest import cluster_nodes, wait_until

pytestmark = pytest.mark.integration


def test_a_master_short_of_replicas_is_unhealthy_in_status_and_up(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7160)
    sandbox.up()
    assert sandbox.status().problems() == []

    # Move one master's replica to another master: every node is up and every slot served,
    # but one shard has no copy left.
    nodes = cluster_nodes(sandbox, 7160)
    masters = sorted((e, d["node_id"]) for e, d in nodes.items() if "master" in d["flags"])
    (bare_endpoint, bare_id), (_, other_id) = masters[0], masters[1]
    (moved,) = [e for e, d in nodes.items() if d["master_id"] == bare_id]
    with sandbox.admin_client(int(moved.rsplit(":", 1)[1])) as admin:
        admin.execute_command("CLUSTER REPLICATE", other_id)
    bare = sandbox.topology.node(int(bare_endpoint.rsplit(":", 1)[1]))

    problems = wait_until(
        lambda: [p for p in sandbox.status().problems() if p.startswith(f"{bare.name} has 0 linked replica")],
        20,
        f"status to report {bare.name} without a replica",
    )
    assert problems == [f"{bare.name} has 0 linked replica(s), the stack asks for 1"]
    assert sandbox.status().problems(replicas=False) == [], "slots are all served: only the replica is missing"

    code = main(["sandbox", "status", "--workdir", str(sandbox.workdir)])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert f"problem: {bare.name} has 0 linked replica(s)" in out, out

    with pytest.raises(SandboxError, match=f"{bare.name} has 0 linked replica"):
        sandbox.wait_converged(timeout=2)


def test_up_with_other_ports_in_the_same_workdir_is_refused(
    sandbox_factory: Callable[..., LocalSandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(7170, workdir=tmp_path / "sb")
    sandbox.start(names=["redis-7170"])
    settings, config = sandbox_settings({"redis": {"base_port": 7180}}, "test")
    other = LocalSandbox(settings, sandbox.workdir, config=config)
    try:
        with pytest.raises(SandboxError) as refused:
            other.up()
        message = str(refused.value)
        assert "ports 7170-7175" in message and "7180-7185" in message and "sandbox down" in message, message
        assert other.running() == {"redis-7170": sandbox.records()["redis-7170"]}, "nothing else was started"
    finally:
        sandbox.down()


def test_down_keeps_the_passwords_unless_purged(
    sandbox_factory: Callable[..., LocalSandbox], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "sb"
    sandbox = sandbox_factory(7170, workdir=workdir)
    sandbox.start(names=["redis-7170"])
    passwords = sandbox.passwords

    assert main(["sandbox", "down", "--workdir", str(workdir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "kept the passwords" in out and "removed" in out, out
    assert not (workdir / "redis-7170").exists(), "the node's data is removed"
    assert LocalSandbox(sandbox.settings, workdir, config=sandbox.config).passwords == passwords

    again = LocalSandbox(sandbox.settings, workdir, config=sandbox.config)
    again.start(names=["redis-7170"])
    with again.admin_client(7170) as admin:
        assert admin.ping(), "the next start accepts the same admin password"
    assert main(["sandbox", "down", "--workdir", str(workdir), "--purge", "--yes"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"removed {workdir}" in out, out
    assert not workdir.exists()


def test_no_file_of_a_sentinel_sandbox_is_readable_by_others(sandbox_factory: Callable[..., LocalSandbox]) -> None:
    sandbox = sandbox_factory(7176, topology="sentinel", sentinel={"ports": [27176, 27177, 27178]})
    sandbox.up()
    sentinel = sandbox.topology.sentinels[0]
    conf = Path(sandbox.paths(sentinel).conf_file)
    # Sentinel rewrites its file at start (its own id, the replicas it found).
    wait_until(lambda: "sentinel myid" in conf.read_text(), 10, "sentinel to rewrite its config")
    passwords = [sandbox.passwords.presented(user) for user in PASSWORD_USERS]
    secrets = [*passwords, *(password_hash(p) for p in passwords)]
    private = [
        path
        for path in sandbox.workdir.rglob("*")
        if path.is_file() and ("data" in path.parts or any(s in path.read_text(errors="replace") for s in secrets))
    ]
    assert conf in private and any(p.name == "passwords.json" for p in private), private
    exposed = [str(p.relative_to(sandbox.workdir)) for p in private if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)]
    assert exposed == [], f"secrets or data readable by group or others: {exposed}"


def test_a_node_stopped_while_writing_its_first_aof_still_exits_cleanly(
    sandbox_factory: Callable[..., LocalSandbox],
) -> None:
    """Redis drops a SIGTERM while it writes its initial AOF ("Writing initial AOF, can't exit", as
    a replica does right after a full sync) and never tries again: `stop` must repeat it rather than
    wait for its timeout and SIGKILL the node (the prod unit's ExecStop does the same)."""
    sandbox = sandbox_factory(7186)  # only its first node runs: 7186 (bus 17186)
    sandbox.start(names=["redis-7186"])
    node = sandbox.topology.node(7186)
    with sandbox.admin_client(node) as admin:
        admin.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)  # a one-node cluster takes writes
        wait_until(lambda: admin.cluster("info")["cluster_state"] == "ok", 10, "the one-node cluster")
        pipe = admin.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"{{k}}{i}", "v")
        pipe.execute()
        admin.config_set("rdb-key-save-delay", 2000)  # 2 ms a key: the first AOF takes ~2 s
        admin.config_set("appendonly", "no")
        admin.config_set("appendonly", "yes")  # starts the initial AOF rewrite
        assert admin.info("persistence")["aof_rewrite_in_progress"] == 1
    log = Path(sandbox.paths(node).log_file)
    sandbox.stop(names=[node.name])
    tail = log.read_text(errors="replace")
    assert "Writing initial AOF, can't exit." in tail, tail[-2000:]
    assert "Redis is now ready to exit, bye bye..." in tail.split("Writing initial AOF, can't exit.")[-1], tail[-2000:]
