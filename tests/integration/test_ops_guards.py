"""The operator guards on real redis-server processes (docs/operations.md#guards): a forced
failover needs the replica named and its master flagged failed; a drain refuses a master's
last replica and a move past maxmemory, and checks health after; a change asks first; a
scale-out stopped halfway is finished by the next run. Ports 7800-7805, 7810-7815, 7820-7827."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachelayer.cli.app import main
from cachelayer.cli.common import Runtime
from cachelayer.errors import CachelayerError
from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from support.sandbox_processes import kill

from .conftest import cluster_client, cluster_nodes, wait_until

pytestmark = pytest.mark.integration


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def roles(sandbox: LocalSandbox) -> dict[str, str]:
    return {n.name: n.role for n in sandbox.status().nodes if n.up}


def test_forced_failover_needs_the_replica_and_its_master_flagged_failed(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7800, cluster_node_timeout=2000)
    sandbox.up()
    workdir = ["--workdir", str(sandbox.workdir)]
    # The replicas must not promote themselves: the operator's --force is what is under test.
    for node in sandbox.topology.nodes:
        with sandbox.admin_client(node.port) as admin:
            admin.config_set("cluster-replica-no-failover", "yes")
    status = sandbox.status().nodes
    replicas = sorted((n for n in status if n.role == "replica"), key=lambda n: n.master)
    healthy, doomed = replicas[0], replicas[-1]  # the last master in port order dies
    dead_master = next(n for n in status if n.endpoint == doomed.master)

    kill(sandbox, dead_master.name)
    wait_until(lambda: "fail" in cluster_nodes(sandbox, int(doomed.endpoint.rsplit(":", 1)[1]))[doomed.master]["flags"],
               30, f"{doomed.name} to flag its master {doomed.master} fail")

    # The runbook's old command: no node named. It used to promote the first linked replica,
    # which belongs to a healthy shard.
    code, refused = run(["failover", "--force", "--yes", *workdir], capsys)
    assert code == 64 and "--force needs the replica to promote" in refused["error"]
    assert roles(sandbox)[healthy.name] == "replica"

    # A healthy master is not flagged failed: --force on its replica is refused.
    code, refused = run(["failover", healthy.name, "--force", "--yes", *workdir], capsys)
    assert code == 1 and "is not flagged fail or fail?" in refused["error"], refused
    assert roles(sandbox)[healthy.name] == "replica"

    # --json never prompts: without --yes nothing happens.
    code, refused = run(["failover", doomed.name, "--force", *workdir], capsys)
    assert code == 64 and "without --yes" in refused["error"]
    assert roles(sandbox)[doomed.name] == "replica"

    code, result = run(["failover", doomed.name, "--force", "--yes", *workdir], capsys)
    assert code == 0, result
    assert result["mode"] == "force" and result["old_master"] == dead_master.endpoint
    assert roles(sandbox)[doomed.name] == "master"
    with sandbox.admin_client(int(healthy.endpoint.rsplit(":", 1)[1])) as admin:
        wait_until(lambda: int(admin.execute_command("CLUSTER INFO")["cluster_slots_ok"]) == TOTAL_SLOTS,
                   15, "every slot served again")
        # The probe's key expires by itself: nothing is left behind in the keyspace.
    client = cluster_client(sandbox, "admin")
    assert 0 < client.ttl("cachelayer:failover-probe") <= 60


def test_drain_refuses_a_last_replica_and_a_move_past_maxmemory_and_checks_health_after(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7810)
    sandbox.up()
    workdir = ["--workdir", str(sandbox.workdir)]
    client = cluster_client(sandbox, "admin")
    for i in range(3000):
        client.set(f"key:{i}", "x" * 1000)
    status = sandbox.status().nodes
    masters = sorted((n for n in status if n.role == "master"), key=lambda n: n.endpoint)
    replica = next(n for n in status if n.role == "replica")

    # A drain asks first: a wrong answer at the prompt (the sandbox is named as the target's
    # origin, so a sandbox called prod is not mistaken for prod) changes nothing.
    answered = Runtime(interactive=lambda: True, ask=lambda question: "prod")
    code = main(["drain", masters[0].name, *workdir], answered)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "not confirmed ('prod' is not 'test'): nothing changed" in err
    assert "local sandbox" in err and "not a deployed stack" in err
    assert roles(sandbox)[masters[0].name] == "master"

    # The other masters cannot take the drained master's third of the data under their maxmemory.
    limits: dict[str, str] = {}
    for master in masters[1:]:
        with sandbox.admin_client(int(master.endpoint.rsplit(":", 1)[1])) as admin:
            limits[master.endpoint] = str(admin.config_get("maxmemory")["maxmemory"])
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 200_000)
    code, refused = run(["drain", masters[0].name, "--yes", *workdir], capsys)
    assert code == 1 and "above its maxmemory" in refused["error"], refused
    assert len(cluster_nodes(sandbox, 7810)) == 6, "nothing moved"
    for master in masters[1:]:
        with sandbox.admin_client(int(master.endpoint.rsplit(":", 1)[1])) as admin:
            admin.config_set("maxmemory", limits[master.endpoint])

    # Each master has one replica: draining it leaves that shard without a copy.
    code, refused = run(["drain", replica.name, "--yes", *workdir], capsys)
    assert code == 1 and "is the last replica of its master" in refused["error"], refused
    assert replica.endpoint in cluster_nodes(sandbox, 7810)

    # Forced: done, forgotten, and the health after says the shard is short of a replica.
    code, result = run(["drain", replica.name, "--yes", "--force", *workdir], capsys)
    assert code == 1 and result["ok"] is False, result
    assert replica.endpoint not in cluster_nodes(sandbox, 7810)
    short = next(c for c in result["health_after"] if c["name"] == "replicas")
    assert short["state"] == "problem" and any("0 linked replica(s)" in p for p in short["problems"]), short


def test_a_scale_out_stopped_halfway_is_finished_by_the_next_run(
    sandbox_factory: Callable[..., LocalSandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = sandbox_factory(7820)
    sandbox.up()
    client = cluster_client(sandbox)
    values = {f"scale:{i}": str(i) for i in range(500)}
    for key, value in values.items():
        client.set(key, value)

    # The first run of the 8-node plan adds the nodes, then its rebalance fails (as when a
    # deployment's bound killed it): redis-cli refuses to rebalance.
    real = shutil.which("redis-cli")
    assert real is not None
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "redis-cli").write_text(
        f'#!/bin/sh\ncase " $* " in *" rebalance "*) echo "stopped" >&2; exit 1;; esac\nexec {real} "$@"\n')
    (shim / "redis-cli").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    settings, config = sandbox_settings({"redis": {"base_port": 7820, "node_count": 8}}, "test")
    bigger = LocalSandbox(settings, sandbox.workdir, config=config)
    with pytest.raises(CachelayerError):
        bigger.up()
    monkeypatch.undo()
    nodes = cluster_nodes(bigger, 7820)

    def own_view(endpoint: str) -> dict[str, Any]:
        """What the node says of itself: 7820's view of a new node may lag behind its role."""
        return next(d for d in cluster_nodes(bigger, int(endpoint.rsplit(":", 1)[1])).values() if "myself" in d["flags"])

    empty = [e for e, d in nodes.items() if "master" in d["flags"] and not d["slots"] and "master" in own_view(e)["flags"]]
    assert len(nodes) == 8 and empty, f"the halfway state: a master without slots: {nodes}"

    # Stopped in the middle of a slot too: one slot open on both sides.
    (source, detail), = [(e, d) for e, d in nodes.items() if "master" in d["flags"] and d["slots"]][:1]
    slot = int(detail["slots"][0][0])
    with bigger.admin_client(int(empty[0].rsplit(":", 1)[1])) as admin:
        admin.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", detail["node_id"])
    with bigger.admin_client(int(source.rsplit(":", 1)[1])) as admin:
        admin.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", nodes[empty[0]]["node_id"])

    bigger.up()  # the re-run
    nodes = cluster_nodes(bigger, 7820)
    masters = [d for d in nodes.values() if "master" in d["flags"]]
    assert len(masters) == 4 and all(d["slots"] for d in masters), f"a master serves no slot: {nodes}"
    assert all(not d["migrations"] for d in nodes.values()), "no slot left open"
    with bigger.admin_client(7820) as admin:
        assert int(admin.execute_command("CLUSTER INFO")["cluster_slots_ok"]) == TOTAL_SLOTS
    client = cluster_client(bigger)
    assert {k: client.get(k) for k in values} == values
