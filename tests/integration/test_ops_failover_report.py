"""`cachelayer failover` moves roles and reports timings; `report --json` has its shape.
Ports 7750-7755 (cluster), 7760-7765 + 27760-27762 (sentinel)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from cachelayer.cli.app import main
from cachelayer.ops.report import UNKNOWN_USER
from cachelayer.sandbox.local import LocalSandbox

from .conftest import cluster_client, refused_logins

pytestmark = pytest.mark.integration


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    confirmed = ["--yes"] if argv[0] == "failover" else []  # --json never prompts: a change says --yes
    code = main([*argv, "--json", *confirmed])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7750)
    sandbox.up()
    return sandbox


def test_graceful_cluster_failover_swaps_roles_and_reports_timings(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    replica = next(n for n in cluster.status().nodes if n.role == "replica")
    workdir = ["--workdir", str(cluster.workdir)]
    code, plan = run(["failover", replica.name, *workdir, "--dry-run"], capsys)
    assert code == 0 and plan["dry_run"] is True
    assert next(n for n in cluster.status().nodes if n.name == replica.name).role == "replica", "dry run changed nothing"

    code, result = run(["failover", replica.name, *workdir], capsys)
    assert code == 0, result
    assert result["new_master"] == replica.endpoint and result["old_master"] == replica.master
    assert result["switch_seconds"] > 0  # measured, not bounded: figures come from benchmarks/ops_benchmark.py
    assert result["probe"]["ops"] > 10 and set(result["probe"]) == {"ops", "errors", "error_kinds", "longest_gap_seconds"}
    roles = {n.endpoint: n.role for n in cluster.status().nodes}
    assert roles[replica.endpoint] == "master" and roles[replica.master] == "replica"

    # A master is refused: there is nothing to promote.
    code, refused = run(["failover", replica.name, *workdir], capsys)
    assert code == 1 and "is a master" in refused["error"]


def test_report_json_shape_and_biggest_keys(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    client = cluster_client(cluster, "admin")
    client.set("big", "x" * 50_000)
    for i in range(50):
        client.set(f"small:{i}", i)
        client.get(f"small:{i}")
    client.get("missing")
    code, document = run(["report", "--workdir", str(cluster.workdir), "--top", "3"], capsys)
    assert code == 0
    nodes = document["nodes"]
    assert len(nodes) == 6 and all(n["up"] for n in nodes)
    assert {"fragmentation_ratio", "memory_doctor", "latency_doctor", "latency_latest", "slowlog", "hit_ratio",
            "evicted_keys", "connected_clients", "rejected_connections", "biggest_keys"} <= set(nodes[0])
    biggest = max((k for n in nodes for k in n["biggest_keys"]), key=lambda k: k["bytes"])
    assert biggest["key"] == "big" and biggest["bytes"] > 50_000
    assert all(len(n["biggest_keys"]) <= 3 for n in nodes)
    assert sum(n["keyspace_misses"] for n in nodes) >= 1


def test_report_never_shows_a_session_id(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A session id is a bearer token: not in the biggest keys, not in the slowlog, in neither
    output, whether the application hashes its entry keys or not (sessions are never hashed)."""
    from platform_cache.keys import Keys

    client = cluster_client(cluster, "admin")
    token = "s3ss10n-t0ken-7f3a9c"
    session_key = Keys("lms", hash_keys=True).session(token)
    configured = str(client.config_get("slowlog-log-slower-than", target_nodes=client.get_random_node())["slowlog-log-slower-than"])
    for node in client.get_nodes():
        client.config_set("slowlog-log-slower-than", 0, target_nodes=node)
    try:
        client.set(session_key, "y" * 200_000)  # the biggest key of its shard, and in the slowlog
        code, document = run(["report", "--workdir", str(cluster.workdir), "--top", "3"], capsys)
        assert code == 0
        assert token not in json.dumps(document)
        shown = [k["key"] for n in document["nodes"] for k in n["biggest_keys"]]
        assert "~session:lms:<redacted>" in shown, shown
        assert any("~session:lms:<redacted>" in e["command"] for n in document["nodes"] for e in n["slowlog"])
        text_code = main(["report", "--workdir", str(cluster.workdir), "--top", "3"])
        assert text_code == 0 and token not in capsys.readouterr().out
    finally:
        for node in client.get_nodes():
            client.config_set("slowlog-log-slower-than", configured, target_nodes=node)
        client.delete(session_key)


def test_report_shows_refused_access_without_a_password_or_session_id(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """ACL LOG in the report: a wrong password, a password typed where the user name goes, a
    command refused to `app`, a session key refused to a key-restricted user."""
    from platform_cache.keys import Keys

    node = cluster.topology.nodes[0]
    typed_as_user = "Pa55word-typed-as-the-user"
    token = "s3ss10n-t0ken-acl-91b2"
    app = cluster.client(node, "app", cluster.passwords.app)
    try:
        refused_logins(node.address, node.port, [("app", "a-wrong-guess"), (typed_as_user, "app")])
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command("FLUSHALL")
        with cluster.admin_client(node) as admin:
            admin.acl_setuser("reader", enabled=True, passwords=["+reader-pw-0123456789"], keys=["public:*"], commands=["+get"])
        reader = cluster.client(node, "reader", "reader-pw-0123456789")
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.get(Keys("lms").session(token))
        reader.close()

        code, document = run(["report", "--workdir", str(cluster.workdir), "--acl-log", "20"], capsys)
        assert code == 0
        dumped = json.dumps(document)
        for secret in (typed_as_user, token, cluster.passwords.app, "a-wrong-guess", "reader-pw-0123456789"):
            assert secret not in dumped, secret
        entries = next(n for n in document["nodes"] if n["endpoint"] == node.endpoint)["acl_log"]
        seen = {(e["reason"], e["user"], e["object"]) for e in entries}
        assert ("auth", "app", "AUTH") in seen, entries
        assert ("auth", UNKNOWN_USER, "AUTH") in seen, entries
        assert ("command", "app", "flushall") in seen, entries
        assert ("key", UNKNOWN_USER, "~session:lms:<redacted>") in seen, entries
        assert all(e["client"].startswith("127.0.0.1:") and not e["expected"] for e in entries), entries
        text_code = main(["report", "--workdir", str(cluster.workdir), "--acl-log", "20"])
        text = capsys.readouterr().out
        assert text_code == 0 and "flushall" in text and typed_as_user not in text and token not in text
    finally:
        app.close()
        with cluster.admin_client(node) as admin:
            admin.acl_deluser("reader")
            admin.acl_log_reset()


def test_sentinel_failover_announces_a_new_master(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7760, topology="sentinel")
    sandbox.up()
    # The first sentinel is down: the others (still a quorum and a majority) are asked instead.
    sandbox.stop(names=[sandbox.topology.sentinels[0].name])
    code, result = run(["failover", "redis-master-2", "--workdir", str(sandbox.workdir)], capsys)
    assert code == 0, result
    assert result["old_master"] == "127.0.0.1:7761" and result["new_master"] == "127.0.0.1:7764"
    assert result["switch_seconds"] > 0 and result["probe"]["ops"] > 0
    with sandbox.admin_client(7764) as admin:
        assert admin.info("replication")["role"] == "master"
