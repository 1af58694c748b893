"""Backup storage rules without a server: S3 URLs, retention, partial backups, the check of
RDB files with the real redis-check-rdb, the restore's --verify sample and its parallelism."""

from __future__ import annotations

import contextlib
import json
import os
import random
import stat
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from cachelayer.config.backup import BackupSettings
from cachelayer.config.settings import load_settings
from cachelayer.errors import SettingsError
from cachelayer.ops.backup import (
    FORMAT,
    MANIFEST,
    BackupError,
    LocalStore,
    StoredBackup,
    backup_name,
    check_rdb,
    newest_complete,
    parse_s3_url,
    prune,
    stack_backups,
    take_backup,
)
from cachelayer.ops.restore import (
    READ_BATCH,
    BackupFile,
    Reservoir,
    open_backup,
    parallel_shards,
    read_batches,
    temp_server,
)
from cachelayer.ops.target import Endpoint, Target
from cachelayer.ports import free_loopback_port

NOW = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)


def make(root: Path, name: str, complete: bool = True, stack: str | None = None) -> None:
    """A stored backup; its manifest names `stack` (default: the stack its name says)."""
    (root / name).mkdir(parents=True)
    (root / name / "shard-1.rdb").write_bytes(b"x")
    if complete:
        manifest = {"format": FORMAT, "name": name, "stack": stack or name.rsplit("-", 1)[0], "shards": []}
        (root / name / MANIFEST).write_text(json.dumps(manifest))


def test_s3_urls() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(BackupError):
        parse_s3_url("/local/dir")


def test_retention_keeps_the_newest_complete_backup_and_ignores_partial_ones(tmp_path: Path) -> None:
    for day in (1, 2, 3, 4):
        make(tmp_path, f"prod-202506{day:02d}T020000Z")
    make(tmp_path, "prod-20250609T020000Z", complete=False)  # an interrupted run
    store = LocalStore(tmp_path)
    assert [b.name for b in store.list() if b.complete] == [f"prod-202506{d:02d}T020000Z" for d in (1, 2, 3, 4)]
    assert prune(store, "prod", keep_days=None, keep_copies=2, now=NOW) == ["prod-20250602T020000Z", "prod-20250601T020000Z"]
    # Every complete backup is older than 1 day: still the newest stays.
    assert prune(store, "prod", keep_days=1, keep_copies=None, now=NOW) == ["prod-20250603T020000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod-20250604T020000Z", "prod-20250609T020000Z"]
    assert prune(store, "prod", None, None, now=NOW) == []


def test_a_dev_backup_with_keep_1_never_deletes_prod_backups_in_the_same_folder(tmp_path: Path) -> None:
    # Reproduces issue 23 item 1: dev and prod share the default .backups/.
    make(tmp_path, "prod-20250601T020000.000Z")
    make(tmp_path, "prod-20250602T020000.000Z")
    make(tmp_path, "prod-eu-20250603T020000.000Z")  # another stack whose name starts like prod's
    make(tmp_path, "dev-20250604T020000.000Z")
    make(tmp_path, "dev-20250605T020000.000Z")
    make(tmp_path, "dev-20250606T020000.000Z", stack="prod")  # named dev, but its manifest says prod
    store = LocalStore(tmp_path)
    assert prune(store, "dev", keep_days=0, keep_copies=1, now=NOW) == ["dev-20250604T020000.000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dev-20250605T020000.000Z", "dev-20250606T020000.000Z", "prod-20250601T020000.000Z",
        "prod-20250602T020000.000Z", "prod-eu-20250603T020000.000Z"]
    assert [b.name for b in stack_backups(store, "prod")] == ["prod-20250601T020000.000Z", "prod-20250602T020000.000Z"]
    assert newest_complete(store, "prod") == StoredBackup("prod-20250602T020000.000Z", True, NOW - timedelta(days=8))
    assert newest_complete(store, "dev") == StoredBackup("dev-20250605T020000.000Z", True, NOW - timedelta(days=5))
    assert newest_complete(store, "staging") is None


def test_a_folder_restores_the_newest_backup_of_the_stack_asked_for(tmp_path: Path) -> None:
    make(tmp_path, "prod-20250601T020000.000Z")
    make(tmp_path, "dev-20250602T020000.000Z")  # newer, but another stack's
    with open_backup(str(tmp_path), stack="prod") as (source, files):
        assert source == str(tmp_path / "prod-20250601T020000.000Z")
        assert files == []
    with (pytest.raises(BackupError, match=r"no complete backup of stack staging .*backups of: dev, prod"),
          open_backup(str(tmp_path), stack="staging")):
        pass


def test_a_backup_of_another_stack_is_refused_unless_asked_for(tmp_path: Path) -> None:
    make(tmp_path, "prod-20250601T020000.000Z")
    make(tmp_path, "renamed-20250602T020000.000Z", stack="prod")
    for name in ("prod-20250601T020000.000Z", "renamed-20250602T020000.000Z"):
        with (pytest.raises(BackupError, match=r"was taken of stack prod, not dev: pass --from-stack prod") as refused,
              open_backup(str(tmp_path / name), stack="dev")):
            pass
        assert "\n" not in str(refused.value)
        with open_backup(str(tmp_path / name), stack="prod") as (source, _files):
            assert source == str(tmp_path / name)


def test_backups_a_millisecond_apart_get_their_own_names_in_time_order(tmp_path: Path) -> None:
    first = backup_name("prod", NOW)
    second = backup_name("prod", NOW + timedelta(milliseconds=1))
    assert first == "prod-20250610T020000.000Z" and second == "prod-20250610T020000.001Z"
    make(tmp_path, second)
    make(tmp_path, first)
    make(tmp_path, "prod-20250610T020000Z")  # the name an earlier release gave, the same second
    make(tmp_path, "prod-20250609T235959.999Z")
    assert [b.name for b in LocalStore(tmp_path).list()] == [
        "prod-20250609T235959.999Z", first, "prod-20250610T020000Z", second]
    assert newest_complete(LocalStore(tmp_path), "prod") == StoredBackup(second, True, NOW + timedelta(milliseconds=1))


def test_a_backup_never_overwrites_one_of_the_same_name(tmp_path: Path) -> None:
    make(tmp_path, backup_name("dev", NOW))
    target = Target("dev", "test", "cluster", (Endpoint("redis-1", "127.0.0.1", 1),))
    with pytest.raises(BackupError, match="already exists"):
        take_backup(target, tmp_path, now=lambda: NOW)
    assert (tmp_path / backup_name("dev", NOW) / MANIFEST).exists()


def test_a_truncated_rdb_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"REDIS0010\xfa\x09redis-ver")
    with pytest.raises(BackupError, match="not a valid RDB file"):
        check_rdb(bad)


def test_the_verify_sample_is_uniform_and_keeps_only_what_the_caller_kept() -> None:
    random.seed(7)
    counts = Counter[bytes]()
    for _ in range(2000):
        reservoir = Reservoir(10)
        keys = [b"k%d" % i for i in range(100)]
        for start in range(0, 100, 25):  # batch by batch, as the restore reads them
            reservoir.keep(reservoir.choose(keys[start:start + 25]))
        assert len(reservoir.keys) == 10 == len(set(reservoir.keys))
        counts.update(reservoir.keys)
    # Every key has a 10% chance: 200 of 2000 runs, give or take.
    assert len(counts) == 100 and min(counts.values()) > 120 and max(counts.values()) < 290

    # skip-existing drops the picks of keys the target already holds: they never join the sample.
    reservoir = Reservoir(5)
    picks = reservoir.choose([b"a", b"b", b"c"])
    reservoir.keep([key for key in picks if key != b"b"])
    assert reservoir.keys == [b"a", b"c"]
    for _ in range(20):
        reservoir.keep(reservoir.choose([b"d", b"e", b"f", b"g"]))
    assert b"b" not in reservoir.keys and len(reservoir.keys) == 5


def test_shards_restored_at_once_fit_in_half_the_free_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = []
    for index in range(5):
        path = tmp_path / f"shard-{index}.rdb"
        path.write_bytes(b"x" * 1000)
        files.append(BackupFile(f"shard-{index}", path))
    pages = {"SC_PAGE_SIZE": 1000}
    monkeypatch.setattr(os, "sysconf", lambda name: pages.get(name, 0) if name != "SC_AVPHYS_PAGES" else pages["free"])
    pages["free"] = 1000  # 1 MB free: half of it holds 250 shards of 2 x 1 kB
    assert parallel_shards(files) == 4 and parallel_shards(files[:2]) == 2
    pages["free"] = 6  # 3 kB of budget: one shard (2 kB in memory) fits, two do not
    assert parallel_shards(files) == 1


@pytest.mark.parametrize(
    ("backup", "key", "fix"),
    [
        ({"secret_access_key": "abc"}, "backup.secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ({"destination": "s3://x/p", "aws_access_key_id": "AKIA"}, "backup.aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        ({"destination": "s3://Bad_Bucket/p"}, "backup.destination", "lowercase letters"),
        ({"destination": "s3://ab"}, "backup.destination", "3-63"),
        ({"destination": "gs://bucket/p"}, "backup.destination", "s3://bucket/prefix"),
        ({"destination": " "}, "backup.destination", "a directory"),
        ({"destination": "s3://bucket/p", "s3_endpoint": "minio:9000"}, "backup.s3_endpoint", "https://"),
        ({"destination": "/srv/backups", "s3_endpoint": "https://minio:9000"}, "backup.s3_endpoint", "s3://"),
        ({"destination": "s3://bucket/p", "s3_region": "Europe West"}, "backup.s3_region", "eu-west-1"),
        ({"keep": 0}, "backup.keep", "1 or more"),
        ({"keep_days": -3}, "backup.keep_days", "0 or more"),
        ({"destinaton": "/srv/backups"}, "backup.destinaton", "did you mean 'destination'"),
        ({"keep": True}, "backup.keep", "whole number"),
    ],
)
def test_bad_backup_settings_name_the_key_and_the_fix(backup: dict[str, Any], key: str, fix: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"backup": backup}, "dev")
    assert raised.value.key == key and fix in str(raised.value)


def test_backup_settings_are_loaded_and_credentials_stay_out() -> None:
    settings = load_settings({"backup": {"destination": "s3://learning-cache/prod", "s3_endpoint": "https://minio:9000",
                                         "s3_region": "eu-west-1", "keep_days": 14, "keep": 30}}, "prod-like")
    assert settings.backup == BackupSettings("s3://learning-cache/prod", "https://minio:9000", "eu-west-1", 14, 30)
    assert settings.backup.is_s3 and not load_settings({}, "dev").backup.is_s3


def saved_rdb(directory: Path, fill: Any) -> Path:
    """`directory`/dump.rdb as a real redis-server saves it after `fill(client)`."""
    port = free_loopback_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        fill(client)
        client.save()
    finally:
        server.terminate()
        server.wait(10)
    return directory / "dump.rdb"


@pytest.mark.integration
@pytest.mark.parametrize("replace", [False, True])
def test_each_restore_read_from_a_temporary_server_is_encoded_as_redis_py_does(tmp_path: Path, replace: bool) -> None:
    """The RESTORE commands built from what the Lua script reads: byte for byte what a client
    library sends, binary keys, absolute expiries and REPLACE included; expired keys skipped."""
    binary = b"bin\r\n\x00\xff{tag}"

    def fill(client: redis.Redis) -> None:
        client.set(binary, b"\x00\r\n" * 50)
        client.hset("hash", mapping={"a": "1"})
        client.set("ttl", "v", ex=3600)
        client.set("short", "v", px=400)

    rdb = saved_rdb(tmp_path, fill)
    time.sleep(0.5)  # "short" has expired by now
    with temp_server(rdb, tmp_path) as server:
        payloads = {key: server.client.dump(key) for key in (binary, b"hash", b"ttl")}
        expiry = server.client.execute_command("PEXPIRETIME", "ttl")
        (batch,) = list(read_batches(server.client, 1000, replace))
        # A key expiring before the script's deadline (ARGV[3]) is skipped and counted, not sent.
        later = server.client.register_script(READ_BATCH)(args=[0, 1000, expiry + 1])
        assert later[1] == 1 and sorted(later[2::3]) == sorted([binary, b"hash"])
    tail = ("REPLACE",) if replace else ()
    packer = redis.connection.Connection()
    expected = {
        binary: packer.pack_command("RESTORE", binary, 0, payloads[binary], *tail),
        b"hash": packer.pack_command("RESTORE", "hash", 0, payloads[b"hash"], *tail),
        b"ttl": packer.pack_command("RESTORE", "ttl", expiry, payloads[b"ttl"], "ABSTTL", *tail),
    }
    assert dict(zip(batch.keys, batch.commands, strict=True)) == {k: b"".join(v) for k, v in expected.items()}
    assert expiry > time.time() * 1000 + 3_000_000
    # "short" expired in the file: the server dropped it while loading, or the script skipped it.
    assert batch.scanned - batch.skipped == 3 and b"short" not in batch.keys


def listening_tcp_inodes() -> set[str]:
    """Socket inodes in LISTEN state (0A) over TCP, IPv4 and IPv6, in this network namespace."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    inodes.add(fields[9])
    return inodes


@pytest.mark.integration
def test_a_temporary_server_listens_only_on_a_unix_socket_in_a_private_directory(tmp_path: Path) -> None:
    """Issue 23 item 13: the temporary servers have no password, so no TCP port any local user
    could reach; the socket and its directory are the operator's alone."""
    saved_rdb(tmp_path, lambda client: client.set("k", "v"))
    with temp_server(tmp_path / "dump.rdb", tmp_path) as server:
        assert server.client.get("k") == b"v"
        assert server.client.config_get("port") == {"port": "0"}
        assert stat.S_ISSOCK(server.socket.stat().st_mode) and stat.S_IMODE(server.socket.stat().st_mode) == 0o700
        assert stat.S_IMODE(server.directory.stat().st_mode) == 0o700 and server.socket.parent == server.directory
        fds = Path(f"/proc/{server.pid}/fd")
        sockets = {os.readlink(fd)[8:-1] for fd in fds.iterdir() if os.readlink(fd).startswith("socket:[")}
        assert sockets and not sockets & listening_tcp_inodes()


@pytest.mark.integration
def test_a_stop_while_a_temporary_server_loads_ends_the_wait_and_the_server(tmp_path: Path) -> None:
    """Ctrl-C, or another shard's failure, must not wait for a large RDB to finish loading."""
    saved_rdb(tmp_path, lambda client: client.set("k", "v"))
    stop = threading.Event()
    stop.set()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(BackupError, match=r"stopped while loading dump\.rdb"), temp_server(
        tmp_path / "dump.rdb", scratch, timeout=600, stop=stop
    ):
        pytest.fail("the restore went on after the stop")
    assert list(scratch.iterdir()) == []  # its directory is gone, and with it the process (cwd)


def prod_target(backup: dict[str, Any] | None) -> Target:
    """The shipped prod stack's settings (hosts target), its backup section replaced; no node is ever reached."""
    from cachelayer.config.stack_file import read_stack_config

    config = read_stack_config("prod")
    if backup is None:
        config.pop("backup", None)
    else:
        config["backup"] = backup
    return Target("prod", "test", "cluster", (Endpoint("redis-1", "127.0.0.1", 1),),
                  settings=load_settings(config, "prod"))


@pytest.mark.parametrize("backup", [None, {"destination": ".backups"}, {"destination": "backups/prod"}])
def test_the_backup_of_a_hosts_stack_is_refused_without_an_off_host_destination(
    backup: dict[str, Any] | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23 item 2: the scheduled prod backup wrote into the runner's checkout, thrown away after the job."""
    from cachelayer.cli import backup as backup_cli
    from cachelayer.cli.app import main
    from cachelayer.config.backup import OFF_HOST_FIX

    monkeypatch.setattr(backup_cli, "target_of", lambda *args: prod_target(backup))
    taken: list[Any] = []
    monkeypatch.setattr(backup_cli, "_backup_to", lambda *args: taken.append(args))
    assert main(["backup", "--stack", "prod", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert OFF_HOST_FIX in error and "--to" in error and "\n" not in error
    assert taken == []  # refused before any snapshot


def test_an_off_host_destination_or_an_explicit_to_lets_the_backup_of_a_hosts_stack_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cachelayer.cli import backup as backup_cli
    from cachelayer.cli.app import main

    taken: list[str] = []

    def backup_to(target: Any, location: str, *args: Any) -> Any:
        taken.append(location)
        raise BackupError("stopped here: the destination was accepted")

    monkeypatch.setattr(backup_cli, "_backup_to", backup_to)
    for backup, argv in (({"destination": "s3://learn-cache-backups/prod"}, []), (None, ["--to", str(tmp_path)])):
        monkeypatch.setattr(backup_cli, "target_of", lambda *args, b=backup: prod_target(b))
        assert main(["backup", "--stack", "prod", *argv]) == 1
    assert taken == ["s3://learn-cache-backups/prod", str(tmp_path)]


def manifest_backup(root: Path, shards: list[dict[str, Any]]) -> Path:
    name = "prod-20250601T020000.000Z"
    make(root, name)
    manifest = {"format": FORMAT, "name": name, "stack": "prod", "topology": "cluster", "shards": shards}
    (root / name / MANIFEST).write_text(json.dumps(manifest))
    return root / name


def shard(index: int, file: str, slots: list[list[int]]) -> dict[str, Any]:
    return {"index": index, "group": None, "file": file, "sha256": "0" * 64, "slots": slots}


@pytest.mark.parametrize("file", ["/etc/shadow", "../other/shard-1.rdb", "sub/shard-1.rdb"])
def test_a_manifest_naming_a_file_outside_its_backup_is_refused(tmp_path: Path, file: str) -> None:
    backup = manifest_backup(tmp_path, [shard(1, file, [[0, 16383]])])
    with pytest.raises(BackupError, match="a backup's files are in its own directory"), \
            open_backup(str(backup), stack="prod"):
        pass


def test_a_cluster_backup_missing_a_shard_is_refused_naming_the_slots(tmp_path: Path) -> None:
    backup = manifest_backup(tmp_path, [shard(1, "shard-1.rdb", [[0, 5460]]), shard(3, "shard-3.rdb", [[10923, 16382]])])
    with pytest.raises(BackupError, match=r"covers no shard for slots 5461-10922, 16383"), \
            open_backup(str(backup), stack="prod"):
        pass
