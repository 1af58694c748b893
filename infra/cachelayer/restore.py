"""Restore a backup into any deployment, whatever its shape.

Each shard's RDB is loaded into a temporary standalone redis-server on a free loopback port (so
the target's version and number of masters do not matter), read with SCAN + DUMP + PEXPIRETIME,
and written with RESTORE ... ABSTTL, pipelined per target master after grouping the keys by
slot. Keys already expired are skipped. Temporary servers and files go away whatever happens
(an exception, Ctrl-C, SIGTERM turned into KeyboardInterrupt by the CLI).
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from .backup import MANIFEST, BackupError, S3Store, check_rdb, newest_complete, open_store, read_manifest, sha256_of
from .health import TOTAL_SLOTS
from .target import Target

Mode = Literal["fail-if-not-empty", "skip-existing", "replace"]
MODES: tuple[Mode, ...] = ("fail-if-not-empty", "skip-existing", "replace")
HOST_FILE = re.compile(r"^redis-(\d+)-(\d{8}T\d{6}Z)\.rdb$")  # the prod hosts' 02:00 timer


@dataclass(frozen=True)
class BackupFile:
    """One RDB to restore, with what is known of it beforehand."""

    label: str
    path: Path
    group: str | None = None  # sentinel group it came from
    sha256: str | None = None  # from the manifest
    keys: int | None = None  # redis-check-rdb's count, from the manifest


# ------------------------------------------------------------------------------ sources
def _from_manifest(directory: Path) -> list[BackupFile]:
    manifest = read_manifest(directory)
    return [
        BackupFile(f"shard-{s['index']}" + (f" ({s['group']})" if s.get("group") else ""), directory / s["file"],
                   s.get("group"), s["sha256"], s.get("rdb_keys"))
        for s in manifest["shards"]
    ]


def _from_host_files(paths: Sequence[Path]) -> list[BackupFile]:
    """The hosts' node-local files: the newest per port. A master and its replica on one host
    hold the same shard: files with the same replication id count once (the newest offset)."""
    newest: dict[str, Path] = {}
    for path in sorted(paths, key=lambda p: p.name):
        found = HOST_FILE.match(path.name)
        newest[found.group(1) if found else path.name] = path
    by_shard: dict[str, tuple[int, Path]] = {}
    for path in newest.values():
        check = check_rdb(path)
        key = check.repl_id or str(path)
        if key not in by_shard or check.repl_offset > by_shard[key][0]:
            by_shard[key] = (check.repl_offset, path)
    return [BackupFile(path.name, path) for _, path in sorted(by_shard.values(), key=lambda pair: pair[1].name)]


@contextmanager
def open_backup(location: str, endpoint: str | None = None) -> Iterator[tuple[str, list[BackupFile]]]:
    """(description, files) of a backup: a cluster-wide backup directory (manifest.json), a
    directory of them (the newest complete one), an s3:// URL of either (downloaded to a scratch
    directory, removed after), a directory of the hosts' redis-<port>-<stamp>.rdb files, or one
    .rdb file."""
    with ExitStack() as stack:
        if location.startswith("s3://"):
            store = S3Store.from_url(location, endpoint)
            scratch = Path(tempfile.mkdtemp(prefix="cachelayer-download-"))
            stack.callback(shutil.rmtree, scratch, True)
            names = {b.name: b for b in store.list()}
            if names:  # the URL is a folder of backups: the newest complete one
                newest = newest_complete(store)
                if newest is None:
                    raise BackupError(f"{location} holds only partial backups (no manifest.json): nothing to restore")
                directory = store.fetch(newest.name, scratch)
                yield store.describe(newest.name), _from_manifest(directory)
                return
            name = store.prefix.rstrip("/").rsplit("/", 1)[-1]
            parent = S3Store(store.bucket, store.prefix[: -len(name) - 1], store.endpoint, store.region)
            if not any(b.name == name and b.complete for b in parent.list()):
                raise BackupError(f"{location} is not a complete backup (no manifest.json: a partial upload?)")
            yield location, _from_manifest(parent.fetch(name, scratch))
            return
        path = Path(location)
        if path.is_file():
            yield str(path), [BackupFile(path.name, path)]
        elif (path / MANIFEST).exists():
            yield str(path), _from_manifest(path)
        elif path.is_dir() and (hosts := sorted(path.glob("redis-*-*.rdb"))):
            yield f"{path} (node-local files)", _from_host_files(hosts)
        elif path.is_dir():
            local = open_store(str(path))
            newest = newest_complete(local)
            if newest is None:
                raise BackupError(f"{path} holds no backup: no manifest.json, no redis-<port>-<stamp>.rdb file")
            yield local.describe(newest.name), _from_manifest(path / newest.name)
        else:
            raise BackupError(f"{location} does not exist")


def check_files(files: Sequence[BackupFile]) -> None:
    """Every file is whole before anything is written: sha256 (manifest) and redis-check-rdb."""
    for file in files:
        if not file.path.exists():
            raise BackupError(f"{file.label}: {file.path} is missing")
        if file.sha256 and sha256_of(file.path) != file.sha256:
            raise BackupError(f"{file.label}: {file.path} does not match the sha256 in the manifest (damaged or incomplete)")
        check_rdb(file.path)


# ------------------------------------------------------------------- temporary servers
def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class TempServer:
    pid: int
    port: int
    directory: Path
    client: redis.Redis


Announce = Callable[[str], None]


@contextmanager
def temp_server(rdb: Path, scratch: Path | None = None, announce: Announce | None = None,
                timeout: float = 600) -> Iterator[TempServer]:
    """A standalone redis-server that loads `rdb` (never writes it: no save points), on a free
    loopback port; stopped and its directory removed on the way out, whatever happened."""
    directory = Path(tempfile.mkdtemp(prefix="cachelayer-restore-", dir=scratch))
    process: subprocess.Popen[bytes] | None = None
    try:
        (directory / "dump.rdb").symlink_to(rdb.resolve())
        for _attempt in range(5):  # the free port may be taken between the probe and the bind
            port = free_loopback_port()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dbfilename", "dump.rdb", "--dir", str(directory), "--logfile", str(directory / "server.log"),
                    "--maxmemory", "0"]  # fmt: skip
            # Its own session: a Ctrl-C at the terminal reaches us, and we stop it in order.
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            if announce is not None:
                announce(f"temporary redis-server pid {process.pid} on 127.0.0.1:{port} reads {rdb.name}")
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    if client.info("persistence").get("loading") == 0:
                        break
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                time.sleep(0.02)
            if process.poll() is None:
                if time.monotonic() >= deadline:
                    raise BackupError(f"the temporary server did not load {rdb} within {timeout} s")
                yield TempServer(process.pid, port, directory, client)
                return
            log = (directory / "server.log").read_text(errors="replace") if (directory / "server.log").exists() else ""
            if "Address already in use" not in log:
                raise BackupError(f"a temporary redis-server could not load {rdb}: {log.strip()[-600:]}")
        raise BackupError("found no free loopback port for a temporary redis-server")
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------------------ targets
def _options(target: Target) -> dict[str, Any]:
    options: dict[str, Any] = {"username": target.admin_user, "password": target.admin_password,
                               "socket_timeout": 60, "socket_connect_timeout": 5}
    if target.tls_ca:
        options |= {"ssl": True, "ssl_ca_certs": target.tls_ca}
    return options


class Router:
    """Which master client a key goes to. Cluster: the slot's master (RedisCluster's slot map).
    Sentinel: the group of the same name as the source, else the slot's share of the groups."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.cluster: RedisCluster | None = None
        self.groups: dict[str, redis.Redis] = {}
        if target.kind == "cluster":
            self.cluster = RedisCluster(startup_nodes=[ClusterNode(e.host, e.port) for e in target.nodes], **_options(target))
        else:
            for group in target.groups:
                self.groups[group] = redis.Redis(*self._group_master(group), **_options(target))

    def _group_master(self, group: str) -> tuple[str, int]:
        for sentinel in self.target.sentinels:
            try:
                with self.target.client(sentinel) as client:
                    host, port = client.sentinel_get_master_addr_by_name(group)
                    return str(host), int(port)
            except (redis.RedisError, TypeError):
                continue
        raise BackupError(f"no sentinel of {self.target.stack} named the master of {group}")

    def masters(self) -> list[redis.Redis]:
        if self.cluster is not None:
            return [self.cluster.get_redis_connection(n) for n in self.cluster.get_primaries()]
        return list(self.groups.values())

    def client_for(self, key: bytes, group: str | None) -> redis.Redis:
        if self.cluster is not None:
            node = self.cluster.nodes_manager.get_node_from_slot(key_slot(key))
            return self.cluster.get_redis_connection(node)
        if group in self.groups:
            return self.groups[group]
        names = list(self.groups)
        return self.groups[names[key_slot(key) * len(names) // TOTAL_SLOTS]]

    def key_count(self) -> int:
        return sum(int(client.dbsize()) for client in self.masters())

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        for client in self.groups.values():
            client.close()


# ------------------------------------------------------------------------------ restore
@dataclass
class ShardResult:
    label: str
    source_keys: int = 0  # in the temporary server once loaded (keys expired at load are gone)
    restored: int = 0
    existing: int = 0  # skipped (skip-existing) because the target has the key
    expired: int = 0  # expired between loading and RESTORE
    seconds: float = 0.0
    sampled: int = 0
    mismatches: list[str] = field(default_factory=list)
    verified: bool | None = None  # None: not asked

    @property
    def counts_match(self) -> bool:
        return self.source_keys - self.expired == self.restored + self.existing


@dataclass
class RestoreResult:
    source: str
    mode: str
    shards: list[ShardResult]
    target_keys_before: int
    target_keys_after: int
    seconds: float

    @property
    def restored(self) -> int:
        return sum(s.restored for s in self.shards)

    @property
    def keys_per_second(self) -> float:
        return self.restored / self.seconds if self.seconds else 0.0

    @property
    def verified(self) -> bool | None:
        checks = [s.verified for s in self.shards]
        return None if any(c is None for c in checks) else all(checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "mode": self.mode, "restored": self.restored, "seconds": round(self.seconds, 3),
            "keys_per_second": round(self.keys_per_second), "target_keys_before": self.target_keys_before,
            "target_keys_after": self.target_keys_after, "verified": self.verified,
            "shards": [asdict(s) | {"counts_match": s.counts_match} for s in self.shards],
        }


class Progress:
    """What the CLI's progress bar needs; the defaults do nothing."""

    def start(self, label: str, total: int) -> None: ...
    def advance(self, keys: int) -> None: ...


# DUMP and PEXPIRETIME of a whole SCAN batch in one round trip and one reply (parsed in C by
# hiredis): per-key client overhead, not the servers, is what limits a restore. '' = gone.
READ_BATCH = """
local out = {}
for i, key in ipairs(KEYS) do
    out[2 * i - 1] = redis.call('DUMP', key) or ''
    out[2 * i] = redis.call('PEXPIRETIME', key)
end
return out
"""


def _read_batches(source: redis.Redis, batch: int) -> Iterator[list[tuple[bytes, bytes | None, int]]]:
    """(key, DUMP payload or None when gone, absolute expiry in ms or -1) per key, SCAN batch by batch."""
    read = source.register_script(READ_BATCH)
    cursor = 0
    while True:
        cursor, keys = source.scan(cursor, count=batch)
        if keys:
            answers = read(keys=keys)
            yield [(key if isinstance(key, bytes) else key.encode(), answers[2 * i] or None, int(answers[2 * i + 1]))
                   for i, key in enumerate(keys)]
        if cursor == 0:
            return


def _write(router: Router, items: Sequence[tuple[bytes, bytes, int]], group: str | None, mode: Mode,
           result: ShardResult) -> list[bytes]:
    """RESTORE the items, one pipeline per target master (keys grouped by slot owner): every
    master's commands are sent before any reply is read, so the masters work in parallel.
    Returns the keys restored (in skip-existing mode, the target's own keys are not)."""
    restored: list[bytes] = []
    by_client: dict[int, tuple[redis.Redis, list[tuple[bytes, bytes, int]]]] = {}
    for item in items:
        client = router.client_for(item[0], group)
        by_client.setdefault(id(client), (client, []))[1].append(item)
    sent = []
    try:
        for client, chunk in by_client.values():
            connection = client.connection_pool.get_connection()
            sent.append((client, connection, chunk))
            commands = []
            for key, payload, expires in chunk:
                args: list[Any] = ["RESTORE", key, max(expires, 0), payload]
                if expires > 0:
                    args.append("ABSTTL")  # the same absolute expiry as in the backup
                if mode == "replace":
                    args.append("REPLACE")
                commands.append(args)
            connection.send_packed_command(connection.pack_commands(commands))
        for _, connection, chunk in sent:
            for key, _, _ in chunk:
                try:
                    connection.read_response()
                    result.restored += 1
                    restored.append(key)
                except redis.ResponseError as answer:
                    if str(answer).startswith("BUSYKEY") and mode == "skip-existing":
                        result.existing += 1
                    elif str(answer).startswith("BUSYKEY"):
                        raise BackupError(f"{key!r} already exists in the target (another writer, or the backup "
                                          "holds it twice)") from None
                    else:
                        raise BackupError(f"RESTORE {key!r} failed: {answer}") from None
    except BaseException:
        for _, connection, _ in sent:
            connection.disconnect()  # unread replies: the connection cannot be reused
        raise
    finally:
        for client, connection, _ in sent:
            client.connection_pool.release(connection)
    return restored


def _content(client: redis.Redis, key: bytes) -> tuple[Any, ...]:
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    reads: dict[str, Callable[[], Any]] = {
        "string": lambda: client.get(key),
        "hash": lambda: sorted(client.hgetall(key).items()),
        "list": lambda: client.lrange(key, 0, -1),
        "set": lambda: sorted(client.smembers(key)),
        "zset": lambda: client.zrange(key, 0, -1, withscores=True),
        "stream": lambda: client.xrange(key),
    }
    return kind, reads.get(kind, lambda: None)(), client.execute_command("PEXPIRETIME", key)


def _verify(source: redis.Redis, router: Router, sample: Sequence[bytes], group: str | None,
            result: ShardResult) -> None:
    """The sampled keys compare equal by DUMP payload in the source and the target."""
    now_ms = time.time() * 1000
    for key in sample:
        expected = source.dump(key)
        if expected is None:
            continue  # expired since
        target = router.client_for(key, group)
        actual = target.dump(key)
        result.sampled += 1
        if actual == expected:
            continue
        expiry = int(source.execute_command("PEXPIRETIME", key))
        if actual is None and 0 < expiry <= now_ms + 1000:
            continue  # expired in the target meanwhile
        # A hashtable-encoded set or hash may serialise its members in another order: same content.
        if actual is None or _content(source, key) != _content(target, key):
            result.mismatches.append(repr(key)[:120])
    result.verified = result.counts_match and not result.mismatches


def restore(
    files: Sequence[BackupFile],
    target: Target,
    mode: Mode = "fail-if-not-empty",
    verify: bool = False,
    source: str = "",
    batch: int = 1000,
    sample: int = 100,
    progress: Progress | None = None,
    scratch: Path | None = None,
    announce: Announce | None = None,
) -> RestoreResult:
    """Restores every file into `target`; refuses a non-empty target in fail-if-not-empty."""
    progress = progress or Progress()
    check_files(files)
    begin = time.monotonic()
    router = Router(target)
    try:
        before = router.key_count()
        if before and mode == "fail-if-not-empty":
            raise BackupError(
                f"the target {target.stack} holds {before} keys: pass --mode skip-existing (keep them) or "
                "--mode replace (overwrite keys the backup also has)"
            )
        results = []
        for file in files:
            result = ShardResult(file.label)
            started = time.monotonic()
            with temp_server(file.path, scratch, announce) as server:
                result.source_keys = int(server.client.dbsize())
                progress.start(file.label, result.source_keys)
                kept: list[bytes] = []  # reservoir sample for --verify
                seen = 0
                for rows in _read_batches(server.client, batch):
                    now_ms = time.time() * 1000 + 50  # a key about to expire is not worth sending
                    live = [(k, p, e) for k, p, e in rows if p is not None and (e < 0 or e > now_ms)]
                    result.expired += len(rows) - len(live)
                    restored = _write(router, live, file.group, mode, result)
                    progress.advance(len(rows))
                    # Sample what was restored: a key skip-existing left as the target had it is
                    # meant to differ from the backup.
                    for key in restored:
                        seen += 1
                        if len(kept) < sample:
                            kept.append(key)
                        elif (slot := random.randrange(seen)) < sample:
                            kept[slot] = key
                if verify:
                    _verify(server.client, router, kept, file.group, result)
            result.seconds = time.monotonic() - started
            results.append(result)
        after = router.key_count()
    finally:
        router.close()
    return RestoreResult(source, mode, results, before, after, time.monotonic() - begin)
