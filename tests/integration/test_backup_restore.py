"""`cachelayer backup` / `restore` / `restore-drill` on real redis-server processes.

Ports: source cluster 7900-7905, a 4-master target 7910-7917, a second region's cluster
7920-7925, sentinel target 7930-7935 +
27930-27932, the drill's sandbox 7940-7945, a TLS cluster 7990-7995; temporary servers take
free loopback ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from cachelayer.cli.app import main
from cachelayer.ops import backup as backup_module
from cachelayer.ops.backup import sha256_of
from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from support.repo import REPO_ROOT
from support.tls_certificates import make_test_certificates

pytestmark = pytest.mark.integration

BINARY = bytes(range(256)) * 3  # every byte value, NUL and invalid UTF-8 included


def admin_cluster(sandbox: LocalSandbox) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode(n.address, n.port) for n in sandbox.topology.nodes],
                        username="admin", password=sandbox.passwords.admin, socket_timeout=10)


def one_key_per_slot() -> list[bytes]:
    keys: dict[int, bytes] = {}
    i = 0
    while len(keys) < TOTAL_SLOTS:
        key = f"slot:{i}".encode()
        keys.setdefault(key_slot(key), key)
        i += 1
    return list(keys.values())


def fill(client: RedisCluster) -> dict[str, Any]:
    """A key in every slot, one of each type, TTLs, binary values; returns what to expect."""
    pipe = client.pipeline()
    for key in one_key_per_slot():
        pipe.set(key, key[::-1])
    pipe.execute()
    client.hset("t:hash", mapping={"a": "1", "b": BINARY})
    client.rpush("t:list", "x", "y", BINARY)
    client.sadd("t:set", "p", "q", "r")
    client.zadd("t:zset", {"low": 1.5, "high": 99})
    client.xadd("t:stream", {"field": "value"}, id="1-1")
    client.xadd("t:stream", {"field": BINARY}, id="2-1")
    client.set(BINARY, BINARY)  # a binary key too
    client.set("t:ttl", "lives", ex=3600)
    client.set("t:short", "dies", px=300)  # expired by the time it is restored
    return {"ttl_key": b"t:ttl", "total": TOTAL_SLOTS + 8}


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    # --json never prompts: a restore, or a backup that prunes on the command line, says --yes.
    confirmed = ["--yes"] if argv[0] in ("restore", "backup") else []
    code = main([*argv, "--json", *confirmed])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def source(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7900)
    sandbox.up()
    fill(admin_cluster(sandbox))
    sandbox.wait_converged()
    return sandbox


@pytest.fixture(scope="module")
def taken(source: LocalSandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One backup of the source (t:short may or may not be in it yet)."""
    directory = tmp_path_factory.mktemp("backups")
    code = main(["backup", "--workdir", str(source.workdir), "--to", str(directory)])
    assert code == 0
    (path,) = directory.iterdir()
    return path


@pytest.fixture(scope="module")
def four_masters(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(7910, node_count=8, replicas_per_master=1)
    sandbox.up()
    return sandbox


def test_backup_takes_one_checked_file_per_shard_from_replicas(source: LocalSandbox, taken: Path) -> None:
    manifest = json.loads((taken / "manifest.json").read_text())
    assert manifest["topology"] == "cluster" and manifest["redis_version"].startswith("7.")
    assert "not a single point in time" in manifest["consistency"]
    shards = manifest["shards"]
    assert len(shards) == 3
    covered = sorted(slot for s in shards for a, b in s["slots"] for slot in range(a, b + 1))
    assert covered == list(range(TOTAL_SLOTS))
    roles = {n.endpoint: n.role for n in source.status().nodes}
    for shard in shards:
        file = taken / shard["file"]
        assert shard["source"]["role"] == "replica" and roles[shard["source"]["address"]] == "replica"
        assert shard["master"]["address"] != shard["source"]["address"] and len(shard["nodes"]) == 2
        assert sha256_of(file) == shard["sha256"] and file.stat().st_size == shard["bytes"]
        assert shard["keys"] == shard["rdb_keys"] > 5000 and shard["rdb_repl_offset"] > 0
        assert len(shard["master"]["id"]) == 40
        assert oct(file.stat().st_mode & 0o777) == "0o600"
    assert sum(s["rdb_keys"] for s in shards) in (TOTAL_SLOTS + 7, TOTAL_SLOTS + 8)  # t:short may be gone


def test_restore_into_four_masters_keeps_types_ttls_and_bytes(
    source: LocalSandbox, taken: Path, four_masters: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    time.sleep(0.4)  # t:short has expired: it must not come back
    code, result = run_json(["restore", str(taken), "--workdir", str(four_masters.workdir), "--verify"], capsys)
    assert code == 0, result
    assert result["verified"] is True and all(s["counts_match"] for s in result["shards"])
    src, dst = admin_cluster(source), admin_cluster(four_masters)
    assert len([n for n in four_masters.status().nodes if n.role == "master" and n.slots]) == 4
    assert result["target_keys_after"] == result["restored"] == TOTAL_SLOTS + 7
    assert dst.exists("t:short") == 0
    for key in [*one_key_per_slot()[::97], b"t:list", b"t:zset", b"t:stream", BINARY]:
        assert dst.dump(key) == src.dump(key), key
    # Hashtable-encoded sets and hashes serialise in their table's order: compare the content.
    assert dst.smembers("t:set") == src.smembers("t:set") == {b"p", b"q", b"r"}
    assert dst.hgetall("t:hash") == src.hgetall("t:hash") == {b"a": b"1", b"b": BINARY}
    assert dst.get(BINARY) == BINARY and dst.hget("t:hash", "b") == BINARY
    stream = dst.xrange("t:stream")
    assert stream is not None and stream[1][1] == {b"field": BINARY}
    # The absolute expiry is the source's, to the millisecond.
    assert dst.execute_command("PEXPIRETIME", "t:ttl") == src.execute_command("PEXPIRETIME", "t:ttl") > 0
    assert dst.ttl("t:hash") == -1


def test_non_empty_target_is_refused_unless_a_mode_says(
    taken: Path, four_masters: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = ["--workdir", str(four_masters.workdir)]
    code, _ = run_json(["restore", str(taken), *workdir, "--mode", "replace"], capsys)  # holds the backup, run alone too
    assert code == 0
    code, refused = run_json(["restore", str(taken), *workdir], capsys)
    assert code == 1 and "holds" in refused["error"] and "--mode" in refused["error"]
    dst = admin_cluster(four_masters)
    dst.set("t:set", "changed")  # now a string: skip-existing keeps it, replace puts the set back
    dst.set("extra", "mine")
    # Every key sampled: the keys skip-existing kept as the target had them (t:set) must not
    # count as mismatches, whichever the sample would have picked.
    code, skipped = run_json(
        ["restore", str(taken), *workdir, "--mode", "skip-existing", "--verify", "--sample", "100000"], capsys
    )
    assert code == 0 and skipped["restored"] == 0 and sum(s["existing"] for s in skipped["shards"]) == TOTAL_SLOTS + 7
    assert dst.get("t:set") == b"changed"
    code, replaced = run_json(["restore", str(taken), *workdir, "--mode", "replace", "--verify"], capsys)
    assert code == 0 and replaced["verified"] is True
    assert dst.smembers("t:set") == {b"p", b"q", b"r"} and dst.get("extra") == b"mine"


def test_verify_notices_a_different_target(
    taken: Path, four_masters: LocalSandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--verify is not a rubber stamp: a RESTORE that silently stores other bytes is caught."""
    from cachelayer.ops import restore as restore_module

    written: list[tuple[Any, bytes]] = []
    write, account = restore_module._write, restore_module._account

    def recording(router: Any, pipes: Any, keys: Any, commands: Any, group: Any) -> None:
        written.extend((router.client_for(key, group), key) for key in keys)
        write(router, pipes, keys, commands, group)

    def corrupting(pipes: Any, mode: Any, result: Any) -> None:
        account(pipes, mode, result)  # the shard's RESTOREs are all answered: overwrite them
        for client, key in written:
            client.set(key, b"not what was backed up")
        written.clear()

    monkeypatch.setattr(restore_module, "_write", recording)
    monkeypatch.setattr(restore_module, "_account", corrupting)
    code, result = run_json(["restore", str(taken), "--workdir", str(four_masters.workdir), "--mode", "replace",
                             "--verify", "--sample", "20"], capsys)
    assert code == 1 and result["verified"] is False
    assert all(len(s["mismatches"]) == s["sampled"] > 0 for s in result["shards"])


def test_corrupt_rdb_is_refused_by_backup_and_by_restore(
    source: LocalSandbox, taken: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # restore: a truncated shard file (its manifest sha256 no longer matches)...
    damaged = tmp_path / "damaged"
    shutil.copytree(taken, damaged)
    shard = damaged / "shard-2.rdb"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    code, refused = run_json(["restore", str(damaged), "--workdir", str(source.workdir), "--mode", "replace"], capsys)
    assert code == 1 and "shard-2" in refused["error"] and "sha256" in refused["error"]
    # ... and, without a manifest to compare with, redis-check-rdb's verdict.
    code, refused = run_json(["restore", str(shard), "--workdir", str(source.workdir), "--mode", "replace"], capsys)
    assert code == 1 and "is not a valid RDB file (redis-check-rdb:" in refused["error"]

    # backup: a snapshot that arrives truncated does not count, and leaves nothing behind.
    real = backup_module.snapshot

    def truncated(target: Any, endpoint: Any, path: Path, timeout: float = 3600) -> None:
        real(target, endpoint, path, timeout)
        path.write_bytes(path.read_bytes()[:-40])

    monkeypatch.setattr(backup_module, "snapshot", truncated)
    out = tmp_path / "out"
    code, failed = run_json(["backup", "--workdir", str(source.workdir), "--to", str(out)], capsys)
    assert code == 1 and "is not a valid RDB file" in failed["error"]
    assert list(out.iterdir()) == []


def test_interrupted_restore_leaves_no_temporary_process(
    taken: Path, four_masters: LocalSandbox, tmp_path: Path
) -> None:
    # Ctrl-C as at a terminal: a test run started in the background (nohup ... &) inherits
    # SIGINT ignored, and Python then never raises KeyboardInterrupt.
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"import sys; sys.path.insert(0, {str(REPO_ROOT / 'infra')!r}); from cachelayer.cli.app import main; "
            f"sys.exit(main(['restore', {str(taken)!r}, '--workdir', {str(four_masters.workdir)!r}, "
            "'--mode', 'replace', '--batch', '1', '--yes']))")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL,
                             env={**os.environ, "TMPDIR": str(scratch), "COLUMNS": "200"})

    def temp_server_pid() -> int | None:
        """The temporary redis-server: it chdirs into its --dir, a cachelayer-restore-* in scratch."""
        for directory in scratch.glob("cachelayer-restore-*"):
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit() and proc.name != str(child.pid):
                    with contextlib.suppress(OSError):
                        if os.readlink(proc / "cwd") == str(directory):
                            return int(proc.name)
        return None

    # Catch the restore while a temporary server runs, and freeze it there, so the interrupt
    # lands mid-restore however fast the restore is.
    pid = None
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        if temp_server_pid() is None:
            time.sleep(0.002)
            continue
        child.send_signal(signal.SIGSTOP)
        pid = temp_server_pid()  # again, frozen: the one found may have just finished its shard
        if pid is not None:
            break
        child.send_signal(signal.SIGCONT)
    assert pid is not None, "never caught the restore with a temporary server running"
    child.send_signal(signal.SIGINT)  # pending until it runs again
    child.send_signal(signal.SIGCONT)
    assert child.wait(30) != 0, "the restore was still running when interrupted"
    assert not Path(f"/proc/{pid}").exists(), "the temporary redis-server outlived the interrupted restore"
    for proc in Path("/proc").iterdir():  # nor a redis-cli --pipe into the target
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            assert not (argv[0].endswith(b"redis-cli") and b"--pipe" in argv and b"--user" in argv
                        and any(a.startswith(b"791") for a in argv)), f"redis-cli --pipe pid {proc.name} outlived it"
    assert list(scratch.iterdir()) == []


def test_restore_into_sentinel_topology_then_back_up_its_groups(
    taken: Path, sandbox_factory: Callable[..., LocalSandbox], four_masters: LocalSandbox, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = sandbox_factory(7930, topology="sentinel")
    sandbox.up()
    code, result = run_json(["restore", str(taken), "--workdir", str(sandbox.workdir), "--verify"], capsys)
    assert code == 0 and result["verified"] is True, result
    masters = [m for m in sandbox.topology.masters]
    counts = []
    for master in masters:
        with sandbox.admin_client(master.port) as client:
            counts.append(int(client.dbsize()))
    # A cluster backup spreads over the groups by slot share: every group got about a third.
    assert sum(counts) == TOTAL_SLOTS + 7 and min(counts) > TOTAL_SLOTS // 4
    sandbox.wait_converged()

    # A backup of the sentinel topology: one file per group, from its replica; back into a cluster.
    code, backup = run_json(["backup", "--workdir", str(sandbox.workdir), "--to", str(tmp_path)], capsys)
    assert code == 0, backup
    shards = backup["manifest"]["shards"]
    assert backup["manifest"]["topology"] == "sentinel"
    assert [s["group"] for s in shards] == [m.group for m in masters]
    assert all(s["source"]["role"] == "replica" for s in shards) and [s["rdb_keys"] for s in shards] == counts
    code, restored = run_json(["restore", backup["location"], "--workdir", str(four_masters.workdir),
                               "--mode", "replace", "--verify"], capsys)
    assert code == 0 and restored["verified"] is True and restored["restored"] == TOTAL_SLOTS + 7, restored
    sandbox.down()


def test_restore_reads_the_hosts_node_local_files(
    source: LocalSandbox, four_masters: LocalSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prod hosts' 02:00 files (redis-<port>-<stamp>.rdb of every node, master and replica
    alike): the newest per port, one per shard (same replication id), restored like a backup."""
    env = {**os.environ, "REDISCLI_AUTH": source.passwords.admin}
    for stamp in ("20250101T020000Z", "20250102T020000Z"):
        for node in source.topology.nodes:
            file = tmp_path / f"redis-{node.port}-{stamp}.rdb"
            subprocess.run(["redis-cli", "--user", "admin", "-p", str(node.port), "--rdb", str(file)],
                           env=env, check=True, capture_output=True)
    older = tmp_path / f"redis-{source.topology.nodes[0].port}-20250101T020000Z.rdb"
    older.write_bytes(b"not an RDB: an older file is never read")
    code, restored = run_json(["restore", str(tmp_path), "--workdir", str(four_masters.workdir),
                               "--mode", "replace", "--verify"], capsys)
    assert code == 0 and restored["verified"] is True, restored
    assert restored["source"] == f"{tmp_path} (node-local files)"
    assert len(restored["shards"]) == 3 and all(s["label"].endswith("20250102T020000Z.rdb") for s in restored["shards"])
    assert restored["restored"] == TOTAL_SLOTS + 7


def copy_as(backup: Path, folder: Path, name: str, stack: str) -> Path:
    """A copy of `backup` named `name` whose manifest says it was taken of `stack`."""
    copy = folder / name
    shutil.copytree(backup, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"name": name, "stack": stack}))
    return copy


def test_a_backup_prunes_and_a_folder_restores_only_the_stacks_own_backups(
    source: LocalSandbox, taken: Path, four_masters: LocalSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23 item 1, reproduced: dev and prod share a folder; a backup with keep 1 deleted
    prod's backups, and a restore of the folder took the newest of any stack."""
    stack = json.loads((taken / "manifest.json").read_text())["stack"]
    shared = tmp_path / "shared"
    shared.mkdir()
    older_own = copy_as(taken, shared, f"{stack}-20250101T020000.000Z", stack)
    prod = [copy_as(taken, shared, f"prod-2099010{day}T020000.000Z", "prod") for day in (1, 2)]  # newer names
    code, backup = run_json(["backup", "--workdir", str(source.workdir), "--to", str(shared), "--keep", "1"], capsys)
    assert code == 0, backup
    assert backup["pruned"] == [older_own.name]
    assert all((p / "manifest.json").exists() for p in prod)

    workdir = ["--workdir", str(four_masters.workdir)]
    code, restored = run_json(["restore", str(shared), *workdir, "--mode", "replace"], capsys)
    assert code == 0 and restored["source"] == backup["location"], restored  # not prod's, newer by name

    before = admin_cluster(four_masters).dbsize()
    code, refused = run_json(["restore", str(prod[1]), *workdir, "--mode", "replace"], capsys)
    assert code == 1 and f"was taken of stack prod, not {stack}: pass --from-stack prod" in refused["error"]
    assert admin_cluster(four_masters).dbsize() == before
    code, restored = run_json(["restore", str(shared), *workdir, "--mode", "replace", "--from-stack", "prod"], capsys)
    assert code == 0 and restored["source"] == str(prod[1]) and restored["verified"] is True, restored


def test_two_regions_back_up_into_one_folder_and_each_ones_retention_leaves_the_others_alone(
    source: LocalSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two stacks named like prod and prod-us (one name the other's prefix), each its own real
    cluster, back up into one folder with --keep 1: each prunes its own older backup only, and a
    restore of the folder into the second region takes that region's newest (docs/regions.md)."""
    settings, config = sandbox_settings({"redis": {"base_port": 7920}}, f"{source.settings.stack}-us", topology="cluster")
    region = LocalSandbox(settings, tmp_path / "region-us", config=config)
    try:
        region.up()
        admin_cluster(region).set("region:us", "only in the second region")
        shared = tmp_path / "shared"
        taken: dict[str, list[str]] = {}
        for sandbox in (source, region, source, region):
            argv = ["backup", "--workdir", str(sandbox.workdir), "--to", str(shared), "--keep", "1"]
            code, result = run_json(argv, capsys)
            assert code == 0, result
            mine = taken.setdefault(sandbox.settings.stack, [])
            # Each run prunes exactly its own previous backup, never the other region's.
            assert result["pruned"] == mine[-1:], result
            mine.append(Path(result["location"]).name)
            others = [name for stack, names in taken.items() if stack != sandbox.settings.stack for name in names[-1:]]
            assert all((shared / name / "manifest.json").exists() for name in others)
        assert sorted(p.name for p in shared.iterdir()) == sorted(names[-1] for names in taken.values())

        code, restored = run_json(["restore", str(shared), "--workdir", str(region.workdir), "--mode", "replace"], capsys)
        assert code == 0 and restored["source"] == str(shared / taken[region.settings.stack][-1]), restored
        assert restored["restored"] == 1, "the second region's own key, not the first region's"
    finally:
        region.down()


def test_restore_verifies_by_default_and_refuses_a_newer_local_redis_or_a_target_without_room(
    taken: Path, four_masters: LocalSandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23 item 12: a restore reports success only when nothing is lost."""
    from cachelayer.ops import restore as restore_module

    workdir = ["--workdir", str(four_masters.workdir)]
    cluster = admin_cluster(four_masters)
    masters = [cluster.get_redis_connection(m) for m in cluster.get_primaries()]
    for master in masters:
        master.flushall()

    real_version = restore_module.local_redis_version
    monkeypatch.setattr(restore_module, "local_redis_version", lambda: "99.0.0")
    code, refused = run_json(["restore", str(taken), *workdir], capsys)
    assert code == 1 and "the local redis-server 99.0.0 is newer than the target's" in refused["error"], refused
    assert cluster.dbsize() == 0  # refused before anything was written
    monkeypatch.setattr(restore_module, "local_redis_version", real_version)

    limits = [str(master.config_get("maxmemory")["maxmemory"]) for master in masters]
    try:
        for master in masters:  # an allkeys-lru target with 100 kB free per master: it would evict
            master.config_set("maxmemory", int(master.info("memory")["used_memory"]) + 100_000)
            master.config_set("maxmemory-policy", "allkeys-lru")
        code, refused = run_json(["restore", str(taken), *workdir], capsys)
        assert code == 1 and "keys would be evicted or refused" in refused["error"], refused
        assert "allkeys-lru" in refused["error"] and cluster.dbsize() == 0
    finally:
        for master, limit in zip(masters, limits, strict=True):
            master.config_set("maxmemory", limit)

    code, restored = run_json(["restore", str(taken), *workdir], capsys)
    assert code == 0 and restored["verified"] is True and all(s["sampled"] > 0 for s in restored["shards"])
    code, unverified = run_json(["restore", str(taken), *workdir, "--mode", "replace", "--no-verify"], capsys)
    assert code == 0 and unverified["verified"] is None


def test_restore_drill_reads_back_the_newest_stored_backup_and_cleans_up(
    source: LocalSandbox, taken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = sorted(p.name for p in taken.parent.iterdir())
    code, drill = run_json(["restore-drill", "--workdir", str(source.workdir), "--backups", str(taken.parent),
                            "--base-port", "7940"], capsys)
    assert code == 0, drill
    figures = drill["figures"]
    assert figures["backup"] == str(taken) and 0 <= figures["backup_age_seconds"] < 3600
    assert sorted(p.name for p in taken.parent.iterdir()) == stored  # read back, no snapshot of its own
    assert figures["verified"] is True and figures["restored_keys"] == figures["backup_keys"] - figures["expired"]
    assert figures["restored_keys"] >= TOTAL_SLOTS and figures["keys_per_second"] > 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=7940, socket_connect_timeout=1).ping()  # the throwaway sandbox is gone


def test_backup_and_restore_over_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The prod stack runs TLS: redis-cli --rdb (backup) and redis-cli --pipe (restore) with the CA."""
    certificates = make_test_certificates(tmp_path / "tls")
    settings, config = sandbox_settings({"redis": {"base_port": 7990, "tls": True}}, "test", topology="cluster",
                                        tls_dir=certificates)
    sandbox = LocalSandbox(settings, tmp_path / "sandbox", config=config, tls_dir=certificates)
    try:
        sandbox.up()
        client = RedisCluster(startup_nodes=[ClusterNode(n.address, n.port) for n in sandbox.topology.nodes],
                              username="admin", password=sandbox.passwords.admin, ssl=True,
                              ssl_ca_certs=str(certificates / "ca.crt"))
        for i in range(2000):
            client.hset(f"tls:{i}", mapping={"n": i, "b": BINARY})
        workdir = ["--workdir", str(sandbox.workdir)]
        code, backup = run_json(["backup", *workdir, "--to", str(tmp_path / "backups")], capsys)
        assert code == 0, backup
        assert sum(s["rdb_keys"] for s in backup["manifest"]["shards"]) == 2000
        for master in client.get_primaries():
            client.get_redis_connection(master).flushall()
        code, restored = run_json(["restore", backup["location"], *workdir, "--verify", "--sample", "500"], capsys)
        assert code == 0 and restored["verified"] is True and restored["restored"] == 2000, restored
        assert client.hget("tls:1999", "b") == BINARY
    finally:
        sandbox.down()
