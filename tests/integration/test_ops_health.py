"""`cachelayer health` on real redis-server: healthy on a fresh deployment, and each check fails
on a deployment broken on purpose; the prod hosts' health-check.sh gives the same verdicts. Ports 7710-7715 (cluster), 7720-7725 + 27720-27722 (sentinel)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cachelayer.cli.app import main
from cachelayer.config.settings import load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import build_topology
from cachelayer.render.hosts import HEALTH_MODULE, health_module_source, health_plan, host_plans, render_health_check
from cachelayer.sandbox.local import LocalSandbox
from support.sandbox_processes import kill

from .conftest import cluster_nodes, wait_until

pytestmark = pytest.mark.integration


def health(sandbox: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["health", "--workdir", str(sandbox.workdir), "--json"])
    return code, json.loads(capsys.readouterr().out)


def failing(document: dict[str, Any]) -> dict[str, list[str]]:
    return {c["name"]: c["problems"] for c in document["checks"] if not c["ok"]}


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7710)
    sandbox.up()
    return sandbox


def test_fresh_cluster_is_healthy_and_json_has_the_documented_shape(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = health(cluster, capsys)
    assert code == 0, failing(document)
    assert document["ok"] is True and document["command"] == "health"
    assert document["target"]["source"].startswith("local sandbox")
    assert [n["name"] for n in document["nodes"]] == [f"redis-{p}" for p in range(7710, 7716)]
    assert {c["name"] for c in document["checks"]} >= {
        "reachable", "cluster_state", "slots", "node_flags", "open_slots", "masters", "replicas", "replica_lag",
        "placement", "memory", "persistence", "credentials",
    }
    assert all(set(c) == {"name", "description", "ok", "state", "problems"} for c in document["checks"])
    assert all(c["state"] == "ok" for c in document["checks"])


def test_a_rotation_between_its_phases_is_shown_and_one_stopped_halfway_is_a_problem(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = "#" + hashlib.sha256(b"a-new-app-password-0123456789").hexdigest()
    ports = range(7710, 7716)
    for port in ports:
        with cluster.admin_client(port) as admin:
            admin.execute_command("ACL", "SETUSER", "app", extra)
    try:
        code, document = health(cluster, capsys)
        assert code == 0, failing(document)  # a normal phase 1: healthy
        assert document["rotation"] == {"app": "two passwords"}
        assert all(n["passwords"]["app"] == 2 and n["passwords"]["admin"] == 1 for n in document["nodes"])
        credentials = next(c for c in document["checks"] if c["name"] == "credentials")
        assert credentials["ok"] and credentials["description"].startswith("rotation in progress, between its phases: app")
        assert extra[1:] not in json.dumps(document)  # counts, never hashes
        with cluster.admin_client(7712) as admin:
            admin.execute_command("ACL", "SETUSER", "app", "!" + extra[1:])
        code, document = health(cluster, capsys)
        assert code == 1 and document["rotation"] == {"app": "mixed"}
        assert failing(document).keys() == {"credentials"}
        assert "redis-7712=1" in failing(document)["credentials"][0] and "redis-7710=2" in failing(document)["credentials"][0]
    finally:
        for port in ports:
            # 7712 no longer holds it: Redis refuses to remove a password a user does not have.
            with cluster.admin_client(port) as admin, contextlib.suppress(redis.ResponseError):
                admin.execute_command("ACL", "SETUSER", "app", "!" + extra[1:])
    code, document = health(cluster, capsys)
    assert code == 0 and document["rotation"] == {}


def test_an_open_slot_is_a_problem(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = cluster_nodes(cluster, 7710)
    masters = {e: d for e, d in nodes.items() if "master" in d["flags"] and d["slots"]}
    (source, source_detail), (_, dest_detail) = sorted(masters.items())[:2]
    slot = int(source_detail["slots"][0][0])
    source_port = int(source.rsplit(":", 1)[1])
    with cluster.admin_client(source_port) as admin:
        admin.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dest_detail["node_id"])
    try:
        code, document = health(cluster, capsys)
        assert code == 1
        assert [p.split(" (")[0] for p in failing(document)["open_slots"]] == [f"slot {slot} is migrating on redis-{source_port}"]
    finally:
        with cluster.admin_client(source_port) as admin:
            admin.execute_command("CLUSTER SETSLOT", slot, "STABLE")
    assert health(cluster, capsys)[0] == 0


def test_memory_near_maxmemory_is_a_problem(cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with cluster.admin_client(7710) as admin:
        used = int(admin.info("memory")["used_memory"])
        original = str(admin.config_get("maxmemory")["maxmemory"])
        admin.config_set("maxmemory", str(int(used * 1.05)))
    try:
        code, document = health(cluster, capsys)
        assert code == 1
        assert failing(document).keys() == {"memory"}
        assert failing(document)["memory"][0].startswith("redis-7710 uses 9")
    finally:
        with cluster.admin_client(7710) as admin:
            admin.config_set("maxmemory", original)


def test_a_killed_replica_fails_reachable_and_replicas_then_pfail(
    cluster: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    replica = next(n for n in cluster.status().nodes if n.role == "replica")
    kill(cluster, replica.name, signal.SIGKILL)
    cluster.stop([replica.name])
    try:
        code, document = health(cluster, capsys)
        assert code == 1
        problems = failing(document)
        assert problems["reachable"][0].startswith(f"{replica.name} is down")
        assert any("has 0 linked replica(s)" in p for p in problems["replicas"])
        # After the node timeout the others flag it: PFAIL, then FAIL.
        flagged = wait_until(
            lambda: failing(health(cluster, capsys)[1]).get("node_flags"), 20, "the dead replica to be flagged"
        )
        assert flagged[0].startswith(f"{replica.endpoint} is flagged fail")
    finally:
        cluster.start(names=[replica.name])
        cluster.wait_converged(timeout=30)
    assert health(cluster, capsys)[0] == 0


def test_sentinel_topology_checks_quorum_agreement_and_a_stopped_sentinel(
    sandbox_factory: Callable[..., LocalSandbox], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(7720, topology="sentinel")
    sandbox.up()
    code, document = health(sandbox, capsys)
    assert code == 0, failing(document)
    assert {"sentinel_quorum", "sentinel_agreement", "sentinel_replicas"} <= {c["name"] for c in document["checks"]}
    assert len(document["sentinels"]) == 3
    assert same_verdict(sandbox, tmp_path, capsys) == {}  # the hosts' health-check.sh

    sandbox.stop(names=["redis-sentinel-27720", "redis-sentinel-27721"])

    # CKQUORUM is the remaining sentinel's view: it counts the others out once they have been
    # silent for down-after-milliseconds, group by group (each master's own timer), so poll until
    # every group has lost its quorum rather than stop at the first.
    def quorum_lost() -> dict[str, list[str]]:
        code, document = health(sandbox, capsys)
        assert code == 1
        found = failing(document)
        return found if len(found.get("sentinel_quorum", [])) == 3 else {}

    problems = wait_until(quorum_lost, 30, "the last sentinel to report NOQUORUM")
    assert [p.split(" (")[0] for p in problems["reachable"]] == [
        "redis-sentinel-27720 is down", "redis-sentinel-27721 is down"]
    # One sentinel of three cannot authorise a failover: CKQUORUM says so for every group.
    assert len(problems["sentinel_quorum"]) == 3 and all("CKQUORUM" in p for p in problems["sentinel_quorum"])
    assert same_verdict(sandbox, tmp_path, capsys).keys() == problems.keys()


# --- the prod hosts' health-check.sh: the same health.py, on Debian's python3-redis -------------
def host_health(
    sandbox: LocalSandbox, tmp_path: Path, *args: str, password: str | None = ""
) -> subprocess.CompletedProcess[str]:
    """The prod-rendered health-check.sh with the shipped health.py beside it, run with Debian's
    /usr/bin/python3 over this sandbox's health plan, as on a host whose processes are all local.
    `password`: "" the admin's, None no password file."""
    settings = load_settings(read_stack_config("prod"), "prod")
    script = tmp_path / "health-check.sh"
    script.write_text(render_health_check(settings, host_plans(settings, build_topology(settings))[0]))
    (tmp_path / posixpath.basename(HEALTH_MODULE)).write_text(health_module_source())
    plan = tmp_path / "health.json"
    plan.write_text(json.dumps(health_plan(sandbox.settings, sandbox.topology, "local")))
    password_file = tmp_path / "admin.pass"
    password_file.unlink(missing_ok=True)
    if password is not None:
        password_file.write_text((password or sandbox.passwords.admin) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    env.update(REDIS_HEALTH_PLAN=str(plan), REDIS_ADMIN_PASS_FILE=str(password_file))
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def same_verdict(sandbox: LocalSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """Runs both; asserts the host's check and `cachelayer health` agree check by check."""
    code, document = health(sandbox, capsys)
    on_host = host_health(sandbox, tmp_path, "--json")
    assert on_host.returncode == code, on_host.stderr
    host_document = json.loads(on_host.stdout)
    assert [(c["name"], c["ok"]) for c in host_document["checks"]] == [(c["name"], c["ok"]) for c in document["checks"]]
    # Problem texts carry live figures (lag, errno, who flags a node); their subjects must match.
    def subjects(checks: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k: [p.split(" (")[0].split(" by ")[0] for p in v] for k, v in checks.items()}

    assert subjects(failing(host_document)) == subjects(failing(document))
    return failing(host_document)


def test_the_hosts_health_check_runs_the_same_checks_on_debians_redis_py(
    cluster: LocalSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = host_health(cluster, tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert [line for line in lines if " up role=" in line] == [
        f"{n.name} up role={n.role}" for n in cluster.status().nodes]
    assert f"health of {cluster.settings.stack} (cluster) as seen from local: ok" in lines
    assert same_verdict(cluster, tmp_path, capsys) == {}

    # An open slot: found through the module's own CLUSTER NODES parser (redis-py 4.3 has none for it).
    nodes = cluster_nodes(cluster, 7710)
    (source, source_detail), (_, dest_detail) = sorted(
        (e, d) for e, d in nodes.items() if "master" in d["flags"] and d["slots"])[:2]
    slot, source_port = int(source_detail["slots"][0][0]), int(source.rsplit(":", 1)[1])
    with cluster.admin_client(source_port) as admin:
        admin.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dest_detail["node_id"])
    try:
        assert same_verdict(cluster, tmp_path, capsys).keys() == {"open_slots"}
    finally:
        with cluster.admin_client(source_port) as admin:
            admin.execute_command("CLUSTER SETSLOT", slot, "STABLE")

    replica = next(n for n in cluster.status().nodes if n.role == "replica")
    kill(cluster, replica.name, signal.SIGKILL)
    cluster.stop([replica.name])
    try:
        down = host_health(cluster, tmp_path)
        assert down.returncode == 1
        assert f"{replica.name} DOWN (" in down.stdout and "PROBLEMS FOUND" in down.stdout
        # Compared once the verdict stops moving (PFAIL turns into FAIL after the node timeout):
        # the two checks run a moment apart.
        wait_until(lambda: any(" is flagged fail by " in p for p in failing(health(cluster, capsys)[1]).get(
            "node_flags", [])), 20, "the dead replica to be flagged fail")
        assert {"reachable", "replicas", "node_flags"} <= same_verdict(cluster, tmp_path, capsys).keys()
    finally:
        cluster.start(names=[replica.name])
        cluster.wait_converged(timeout=30)
    assert host_health(cluster, tmp_path).returncode == 0


def test_the_hosts_health_check_without_the_password_could_not_check(cluster: LocalSandbox, tmp_path: Path) -> None:
    missing = host_health(cluster, tmp_path, password=None)
    assert missing.returncode == 2 and "cannot read the admin password file" in missing.stderr
    wrong = host_health(cluster, tmp_path, password="not-the-admin-password")
    assert wrong.returncode == 2, wrong.stdout
    assert "no node answered" in wrong.stderr
    assert "not-the-admin-password" not in wrong.stdout + wrong.stderr
