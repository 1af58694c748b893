"""`cachelayer drain` and `rebalance` keep every key and leave every slot served.
Ports 7770-7777 (an 8-node cluster: 4 masters)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cachelayer.cli.app import main
from cachelayer.sandbox.local import LocalSandbox

from .conftest import cluster_client, cluster_nodes

pytestmark = pytest.mark.integration


def test_drain_a_master_then_rebalance_keeps_every_key(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7770, node_count=8)
    sandbox.up()
    client = cluster_client(sandbox, "admin")
    keys = {f"key:{i}": str(i) for i in range(3000)}
    for key, value in keys.items():
        client.set(key, value)
    nodes = cluster_nodes(sandbox, 7770)
    drained = next(e for e, d in sorted(nodes.items()) if "master" in d["flags"] and d["slots"] and e != "127.0.0.1:7770")
    workdir = ["--workdir", str(sandbox.workdir), "--json", "--yes"]

    # An open slot is refused before anything moves.
    (source, detail), (_, other) = sorted((e, d) for e, d in nodes.items() if "master" in d["flags"])[:2]
    port = int(source.rsplit(":", 1)[1])
    with sandbox.admin_client(port) as admin:
        admin.execute_command("CLUSTER SETSLOT", detail["slots"][0][0], "MIGRATING", other["node_id"])
    assert main(["drain", drained, *workdir]) == 1
    assert "refusing: slot" in json.loads(capsys.readouterr().out)["error"]
    with sandbox.admin_client(port) as admin:
        admin.execute_command("CLUSTER SETSLOT", detail["slots"][0][0], "STABLE")

    code = main(["drain", drained, *workdir])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    after = cluster_nodes(sandbox, 7770)
    assert drained not in after, "every node forgot the drained node"
    assert sum(1 for d in after.values() if "master" in d["flags"] and d["slots"]) == 3
    client = cluster_client(sandbox, "admin")
    assert {k: client.get(k) for k in keys} == keys

    code = main(["rebalance", *workdir])
    assert code == 0, capsys.readouterr().out
    assert {k: client.get(k) for k in keys} == keys
    with sandbox.admin_client(7770) as admin:
        assert int(admin.execute_command("CLUSTER INFO")["cluster_slots_ok"]) == 16384
