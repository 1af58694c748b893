"""Restore a backup into any deployment, whatever its shape.

Each shard's RDB is loaded into a temporary standalone redis-server on a free loopback port (so
the target's version and number of masters do not matter), read with SCAN + DUMP + PEXPIRETIME
(one Lua call per batch), and written as RESTORE ... ABSTTL into one `redis-cli --pipe` per
target master, each key to the master of its slot. Keys already expired are skipped. Temporary servers and files go away whatever happens (an exception, Ctrl-C,
SIGTERM turned into KeyboardInterrupt by the CLI).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from cachelayer.ops.backup import (
    MANIFEST,
    BackupError,
    LocalStore,
    S3Store,
    check_rdb,
    newest_complete,
    read_manifest,
    sha256_of,
    stack_of_name,
)
from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.ops.target import Target

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
    checked: bool = False  # redis-check-rdb already accepted it while the backup was being read
    memory: int | None = None  # the source's used_memory_dataset when it was backed up, from the manifest


# ------------------------------------------------------------------------------ sources
def _from_manifest(directory: Path, stack: str) -> list[BackupFile]:
    """The files of a cluster-wide backup, once it is known to be a backup of `stack`, to name
    only files inside it, and (cluster) to cover every slot."""
    manifest = read_manifest(directory)
    if manifest.get("stack") != stack:
        raise BackupError(
            f"{directory.name} was taken of stack {manifest.get('stack')}, not {stack}: pass --from-stack "
            f"{manifest.get('stack')} to restore it anyway")
    files = []
    for shard in manifest["shards"]:
        name = str(shard["file"])
        if Path(name).name != name or name in ("", ".", ".."):
            raise BackupError(f"{directory / MANIFEST} names {name!r} for shard {shard['index']}: a backup's files "
                              "are in its own directory (a bare file name), nothing else is read")
        files.append(BackupFile(f"shard-{shard['index']}" + (f" ({shard['group']})" if shard.get("group") else ""),
                                directory / name, shard.get("group"), shard["sha256"], shard.get("rdb_keys"),
                                memory=shard.get("used_memory_dataset")))
    if manifest.get("topology") == "cluster" and manifest["shards"]:
        missing = uncovered_slots([tuple(r) for s in manifest["shards"] for r in s.get("slots", [])])
        if missing:
            raise BackupError(f"{directory / MANIFEST} covers no shard for slots {missing}: the backup is "
                              "incomplete, a restore would lose those keys")
    return files


def uncovered_slots(ranges: Sequence[Sequence[int]]) -> str:
    """The slots no range covers, as `a-b, c` ('' when all 16384 are)."""
    covered = bytearray(TOTAL_SLOTS)
    for first, last in ranges:
        covered[first : last + 1] = b"\x01" * (last - first + 1)
    gaps, slot = [], 0
    while slot < TOTAL_SLOTS:
        if covered[slot]:
            slot += 1
            continue
        end = slot
        while end + 1 < TOTAL_SLOTS and not covered[end + 1]:
            end += 1
        gaps.append(f"{slot}-{end}" if end > slot else str(slot))
        slot = end + 1
    return ", ".join(gaps)


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
    return [BackupFile(path.name, path, checked=True)
            for _, path in sorted(by_shard.values(), key=lambda pair: pair[1].name)]


def _no_backup_of(stack: str, where: str, names: Sequence[str]) -> BackupError:
    others = sorted({other for name in names if (other := stack_of_name(name)) and other != stack})
    held = f" (it holds backups of: {', '.join(others)}: pass --from-stack NAME to restore one)" if others else ""
    return BackupError(f"{where} holds no complete backup of stack {stack}{held}")


@contextmanager
def open_backup(location: str, endpoint: str | None = None, region: str | None = None, *,
                stack: str) -> Iterator[tuple[str, list[BackupFile]]]:
    """(description, files) of a backup of `stack`: a cluster-wide backup directory
    (manifest.json), a folder of them (the stack's newest complete one), an s3:// URL of either
    (downloaded to a scratch directory, removed after), a directory of the hosts'
    redis-<port>-<stamp>.rdb files, or one .rdb file. A backup whose manifest names another stack
    is refused: the caller passes that stack when the operator asked for it."""
    with ExitStack() as context:
        if location.startswith("s3://"):
            store = S3Store.from_url(location, endpoint, region)
            scratch = Path(tempfile.mkdtemp(prefix="cachelayer-download-"))
            context.callback(shutil.rmtree, scratch, True)
            listed = store.list()
            if listed:  # the URL is a folder of backups: the stack's newest complete one
                newest = newest_complete(store, stack)
                if newest is None:
                    raise _no_backup_of(stack, location, [b.name for b in listed if b.complete])
                directory = store.fetch(newest.name, scratch)
                yield store.describe(newest.name), _from_manifest(directory, stack)
                return
            name = store.prefix.rstrip("/").rsplit("/", 1)[-1]
            parent = S3Store(store.bucket, store.prefix[: -len(name) - 1], store.endpoint, store.region)
            if not any(b.name == name and b.complete for b in parent.list()):
                raise BackupError(f"{location} is not a complete backup (no manifest.json: a partial upload?)")
            yield location, _from_manifest(parent.fetch(name, scratch), stack)
            return
        path = Path(location)
        if path.is_file():
            yield str(path), [BackupFile(path.name, path)]
        elif (path / MANIFEST).exists():
            yield str(path), _from_manifest(path, stack)
        elif path.is_dir() and (hosts := sorted(path.glob("redis-*-*.rdb"))):
            yield f"{path} (node-local files)", _from_host_files(hosts)
        elif path.is_dir():
            local = LocalStore(path)
            newest = newest_complete(local, stack)
            if newest is None:
                raise _no_backup_of(stack, str(path), [b.name for b in local.list() if b.complete])
            yield local.describe(newest.name), _from_manifest(path / newest.name, stack)
        else:
            raise BackupError(f"{location} does not exist")


def check_files(files: Sequence[BackupFile]) -> None:
    """Every file is whole before anything is written. A manifest's file must match its sha256:
    the backup wrote that sum only after redis-check-rdb accepted these very bytes, so the same
    check is not run twice. Any other file goes through redis-check-rdb here."""
    for file in files:
        if not file.path.exists():
            raise BackupError(f"{file.label}: {file.path} is missing")
        if file.sha256:
            if sha256_of(file.path) != file.sha256:
                raise BackupError(
                    f"{file.label}: {file.path} does not match the sha256 in the manifest (damaged or incomplete)")
        elif not file.checked:
            check_rdb(file.path)


# ------------------------------------------------------------------- temporary servers
@dataclass
class TempServer:
    pid: int
    socket: Path  # its unix socket, in its 0700 directory: no TCP port, no other local user
    directory: Path
    client: redis.Redis


Announce = Callable[[str], None]
SOCKET = "redis.sock"


@contextmanager
def temp_server(rdb: Path, scratch: Path | None = None, announce: Announce | None = None,
                timeout: float = 600, stop: threading.Event | None = None) -> Iterator[TempServer]:
    """A standalone redis-server that loads `rdb` (never writes it: no save points), reachable
    only through a unix socket in its own 0700 directory (`--port 0`: no TCP listener, which any
    local user could read a prod shard from or inject keys into, as it has no password); stopped
    and its directory removed on the way out, whatever happened. `stop` set while it loads
    (another shard failed, Ctrl-C) ends the wait at once."""
    directory = Path(tempfile.mkdtemp(prefix="cachelayer-restore-", dir=scratch))  # mode 0700
    process: subprocess.Popen[bytes] | None = None
    try:
        (directory / "dump.rdb").symlink_to(rdb.resolve())
        socket = directory / SOCKET
        argv = ["redis-server", "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb", "--dir", str(directory),
                "--logfile", str(directory / "server.log"), "--maxmemory", "0"]  # fmt: skip
        # Its own session: a Ctrl-C at the terminal reaches us, and we stop it in order.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        if announce is not None:
            announce(f"temporary redis-server pid {process.pid} on {socket} reads {rdb.name}")
        client = redis.Redis(unix_socket_path=str(socket), socket_timeout=60)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise BackupError(f"stopped while loading {rdb.name}")
            try:
                if client.info("persistence").get("loading") == 0:
                    break
            except (redis.BusyLoadingError, redis.ConnectionError):
                pass
            time.sleep(0.02)
        if process.poll() is None:
            if time.monotonic() >= deadline:
                raise BackupError(f"the temporary server did not load {rdb} within {timeout} s")
            yield TempServer(process.pid, socket, directory, client)
            return
        log = (directory / "server.log").read_text(errors="replace") if (directory / "server.log").exists() else ""
        raise BackupError(f"a temporary redis-server could not load {rdb}: {log.strip()[-600:]}")
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
    return options | target.tls_options


class Router:
    """Which master a key goes to. Cluster: the slot's master (RedisCluster's slot map).
    Sentinel: the group of the same name as the source, else the slot's share of the groups.
    The map is read once into a table by slot: a restore asks for every key."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.cluster: RedisCluster | None = None
        self.groups: dict[str, redis.Redis] = {}
        if target.kind == "cluster":
            self.cluster = RedisCluster(startup_nodes=[ClusterNode(e.host, e.port) for e in target.nodes], **_options(target))
            nodes = self.cluster.nodes_manager
            self.by_slot = [self.cluster.get_redis_connection(nodes.get_node_from_slot(s)) for s in range(TOTAL_SLOTS)]
        else:
            for group in target.groups:
                self.groups[group] = redis.Redis(*self._group_master(group), **_options(target))
            names = list(self.groups)
            self.by_slot = [self.groups[names[s * len(names) // TOTAL_SLOTS]] for s in range(TOTAL_SLOTS)]

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
        if group in self.groups:
            return self.groups[group]
        return self.by_slot[key_slot(key)]

    def key_count(self) -> int:
        return sum(int(client.dbsize()) for client in self.masters())

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        for client in self.groups.values():
            client.close()


def address_of(client: redis.Redis) -> tuple[str, int]:
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs["host"]), int(kwargs["port"])


class MassInsert:
    """One `redis-cli --pipe` per target master: the mass-insertion path the Redis docs give
    (https://redis.io/docs/latest/develop/use/patterns/bulk-loading/). The RESTOREs arrive as
    RESP and go to its stdin; redis-cli, in C, sends them and reads the replies. It prints each
    error reply on stderr and `errors: E, replies: R` at the end; both go to unnamed files (a
    full stderr pipe would stall it)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.children: dict[int, tuple[tuple[str, int], subprocess.Popen[bytes], Any, Any]] = {}
        self.buffers: dict[int, bytearray] = {}

    def add(self, client: redis.Redis, commands: Sequence[bytes]) -> None:
        """Queues RESP-formatted RESTOREs for `client`'s master."""
        buffer = self.buffers.get(id(client))
        if buffer is None:
            buffer = self.buffers[id(client)] = bytearray()
            self._start(id(client), address_of(client))
        buffer += b"".join(commands)
        if len(buffer) > 1 << 18:
            self._flush(id(client))

    def _start(self, slot: int, address: tuple[str, int]) -> None:
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        argv = ["redis-cli", "-h", address[0], "-p", str(address[1]), *self.target.cli_args(),
                "--pipe", "--pipe-timeout", "600"]
        # Its own session, like the temporary servers: we stop it, in order, on an interrupt.
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, env=self.target.cli_env(),
                                 start_new_session=True)
        self.children[slot] = (address, child, out, err)

    def _flush(self, slot: int) -> None:
        child = self.children[slot][1]
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it exited early (no connection, a bad password): finish() says why
            child.stdin.write(self.buffers[slot])
        self.buffers[slot].clear()

    def finish(self) -> tuple[int, list[tuple[str, str]]]:
        """Waits for every redis-cli; (replies that were not errors, [(master, error reply)])."""
        ok, errors = 0, []
        for slot, (address, child, out, err) in self.children.items():
            self._flush(slot)
            assert child.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                child.stdin.close()
            child.wait()
            out.seek(0)
            err.seek(0)
            summary = re.search(rb"errors: (\d+), replies: (\d+)", out.read())
            lines = err.read().decode(errors="replace").splitlines()
            master = f"{address[0]}:{address[1]}"
            if summary is None:
                raise BackupError(f"redis-cli --pipe into {master} failed: {' '.join(lines)[-300:] or 'no summary'}")
            ok += int(summary.group(2)) - int(summary.group(1))
            errors += [(master, line) for line in lines if line]
        self.children.clear()
        return ok, errors

    def stop(self) -> None:
        for _, child, out, err in self.children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
            out.close()
            err.close()
        self.children.clear()


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
    """What the CLI's progress bar needs (one task per shard; shards run in parallel); the
    defaults do nothing."""

    def start(self, label: str, total: int) -> Any:
        return None

    def advance(self, task: Any, keys: int) -> None: ...


# One SCAN batch with each key's DUMP and PEXPIRETIME, in one round trip and one reply (parsed in
# C by hiredis), so the client adds little per key to the server's own reading work. Keys gone,
# or expiring before ARGV[3] (ms), are skipped and counted. The source is a standalone temporary
# server, so the script may touch keys it was not given.
# Reply: {next cursor, skipped, key, payload, absolute expiry ms (-1 = none), key, ...}.
READ_BATCH = """
local scanned = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local soon = tonumber(ARGV[3])
local out, n = {scanned[1], 0}, 2
for _, key in ipairs(scanned[2]) do
    local payload = redis.call('DUMP', key)
    local expires = redis.call('PEXPIRETIME', key)
    if payload and (expires < 0 or expires > soon) then
        out[n + 1], out[n + 2], out[n + 3] = key, payload, expires
        n = n + 3
    else
        out[2] = out[2] + 1
    end
end
return out
"""


@dataclass(frozen=True)
class Batch:
    scanned: int  # keys SCAN returned
    skipped: int  # gone or expiring before they could be written
    keys: list[bytes]
    commands: list[bytes]  # keys[i]'s RESTORE, as RESP


def _restore_commands(keys: Sequence[bytes], payloads: Sequence[bytes], expiries: Sequence[int],
                      replace: bool) -> list[bytes]:
    """RESTORE key 0|<absolute ms> payload [ABSTTL] [REPLACE], written as RESP."""
    tail, extra = (b"$7\r\nREPLACE\r\n", 1) if replace else (b"", 0)
    forever = b"*%d\r\n$7\r\nRESTORE\r\n$%%d\r\n%%s\r\n$1\r\n0\r\n$%%d\r\n%%s\r\n%s" % (4 + extra, tail)
    until = b"*%d\r\n$7\r\nRESTORE\r\n$%%d\r\n%%s\r\n$%%d\r\n%%s\r\n$%%d\r\n%%s\r\n$6\r\nABSTTL\r\n%s" % (
        5 + extra, tail)
    commands = []
    for key, payload, expires in zip(keys, payloads, expiries, strict=True):
        if expires < 0:
            commands.append(forever % (len(key), key, len(payload), payload))
        else:
            at = b"%d" % expires
            commands.append(until % (len(key), key, len(at), at, len(payload), payload))
    return commands


def read_batches(source: redis.Redis, batch: int, replace: bool) -> Iterator[Batch]:
    """The source's keys as RESTORE commands, SCAN batch by SCAN batch."""
    read = source.register_script(READ_BATCH)
    cursor: bytes | int = 0
    while True:
        soon = int(time.time() * 1000) + 50  # a key about to expire is not worth sending
        reply = read(args=[cursor, batch, soon])
        cursor, skipped, keys = reply[0], int(reply[1]), reply[2::3]
        if keys or skipped:
            yield Batch(len(keys) + skipped, skipped, keys, _restore_commands(keys, reply[3::3], reply[4::3], replace))
        if int(cursor) == 0:
            return


class Reservoir:
    """A uniform random sample of at most `size` keys of a stream (Algorithm R), chosen before
    the keys are written, so a caller can drop a choice first (skip-existing: a key the target
    already holds is not restored, and is meant to differ)."""

    def __init__(self, size: int) -> None:
        self.size, self.seen, self.keys = size, 0, list[bytes]()

    def choose(self, keys: Sequence[bytes]) -> list[bytes]:
        picks = []
        for key in keys:
            self.seen += 1
            if self.seen <= self.size or random.randrange(self.seen) < self.size:
                picks.append(key)
        return picks

    def keep(self, picks: Sequence[bytes]) -> None:
        for key in picks:
            if len(self.keys) < self.size:
                self.keys.append(key)
            else:
                self.keys[random.randrange(self.size)] = key


def _absent(router: Router, keys: Sequence[bytes], group: str | None) -> list[bytes]:
    """The keys the target does not hold: in skip-existing mode only those are restored, and so
    only those may join the --verify sample (the target's own keys are meant to differ)."""
    return [key for key in keys if not router.client_for(key, group).exists(key)]


def _write(router: Router, pipes: MassInsert, keys: Sequence[bytes], commands: Sequence[bytes],
           group: str | None) -> None:
    """Each key's RESTORE to the pipe of its master."""
    if not commands:
        return
    if group in router.groups:
        pipes.add(router.groups[group], commands)  # a sentinel group into the group of the same name
        return
    by_slot, by_master = router.by_slot, dict[int, tuple[redis.Redis, list[bytes]]]()
    for key, command in zip(keys, commands, strict=True):
        client = by_slot[key_slot(key)]
        chunk = by_master.get(id(client))
        if chunk is None:
            chunk = by_master[id(client)] = (client, [])
        chunk[1].append(command)
    for client, chunk_commands in by_master.values():
        pipes.add(client, chunk_commands)


def _account(pipes: MassInsert, mode: Mode, result: ShardResult) -> None:
    """The replies of a shard's RESTOREs: restored, existing (skip-existing), or an error."""
    result.restored, errors = pipes.finish()
    busy = [e for e in errors if e[1].startswith("BUSYKEY")]
    if mode == "skip-existing":
        result.existing += len(busy)
        errors = [e for e in errors if e not in busy]
    elif busy:
        raise BackupError(f"{result.label}: {len(busy)} key(s) already existed in the target (another writer, or "
                          "the backup holds one twice); nothing was overwritten: --mode replace overwrites them")
    if errors:
        master, first = errors[0]
        raise BackupError(f"{result.label}: {len(errors)} RESTORE(s) failed, the first on {master}: {first}")


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


def parallel_shards(files: Sequence[BackupFile], wanted: int = 4) -> int:
    """How many shards to restore at once: each holds its RDB in a temporary server's memory
    (about twice the file's size), so no more than fit in half the memory available now."""
    budget = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    sizes = sorted((f.path.stat().st_size for f in files), reverse=True)
    count = 1
    while count < min(wanted, len(sizes)) and 2 * sum(sizes[: count + 1]) <= budget:
        count += 1
    return count


@dataclass(frozen=True)
class _Job:
    """What every shard's restore shares."""

    router: Router
    target: Target
    mode: Mode
    verify: bool
    batch: int
    sample: int
    progress: Progress
    scratch: Path | None
    announce: Announce | None
    stop: threading.Event  # set when another shard failed or the user interrupted


def _restore_shard(file: BackupFile, job: _Job) -> ShardResult:
    """One shard: its temporary server, read batch by batch into its own redis-cli pipes."""
    result = ShardResult(file.label)
    started = time.monotonic()
    pipes = MassInsert(job.target)
    try:
        with temp_server(file.path, job.scratch, job.announce, stop=job.stop) as server:
            result.source_keys = int(server.client.dbsize())
            task = job.progress.start(file.label, result.source_keys)
            sampled = Reservoir(job.sample)  # for --verify
            for batch in read_batches(server.client, job.batch, job.mode == "replace"):
                if job.stop.is_set():
                    raise BackupError(f"{file.label}: stopped")
                result.expired += batch.skipped
                if job.verify:
                    picks = sampled.choose(batch.keys)
                    if job.mode == "skip-existing":
                        picks = _absent(job.router, picks, file.group)
                    sampled.keep(picks)
                _write(job.router, pipes, batch.keys, batch.commands, file.group)
                job.progress.advance(task, batch.scanned)
            _account(pipes, job.mode, result)
            if job.verify:
                _verify(server.client, job.router, sampled.keys, file.group, result)
    finally:
        pipes.stop()
    result.seconds = time.monotonic() - started
    return result


def local_redis_version() -> str:
    """The version of the redis-server the temporary servers run (`redis-server --version`)."""
    result = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False, timeout=30)
    found = re.search(r"v=(\d+\.\d+\.\d+)", result.stdout)
    if found is None:
        raise BackupError(f"redis-server --version said nothing usable: {(result.stdout + result.stderr).strip()[:200]}")
    return found.group(1)


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = [*(int(p) for p in re.findall(r"\d+", version)[:2]), 0, 0][:2]
    return major, minor


def memory_needed(files: Sequence[BackupFile]) -> int:
    """What the backup takes in memory, about: the source's dataset when the manifest says it, else
    the RDB's size (a floor: a value takes more room in memory than in the file)."""
    return sum(f.memory if f.memory is not None else f.path.stat().st_size for f in files)


def preflight(router: Router, files: Sequence[BackupFile], local_version: str) -> None:
    """Refuses, before anything is written, a restore that would lose data: a local redis-server
    newer than a target master (its DUMP payloads carry an RDB version the target rejects, so
    every RESTORE would fail mid-recovery), or a target whose masters' maxmemory has no room for
    the backup (an allkeys-lru target evicts keys, a noeviction one refuses them)."""
    needed, free, bounded = memory_needed(files), 0, True
    for client in router.masters():
        info = client.info()
        address = "{}:{}".format(*address_of(client))
        version = str(info.get("redis_version", ""))
        if _major_minor(local_version) > _major_minor(version):
            raise BackupError(
                f"the local redis-server {local_version} is newer than the target's {address} ({version}): every "
                f"RESTORE would fail (RDB format newer than the target reads); run the restore where redis-server "
                f"is {version} or older, e.g. on a host of the target")
        maxmemory = int(info.get("maxmemory", 0))
        if maxmemory == 0:
            bounded = False  # no limit on this master
        else:
            free += max(0, maxmemory - int(info.get("used_memory", 0)))
    if bounded and needed > free:
        policy = ""
        with contextlib.suppress(redis.RedisError):
            policy = f", maxmemory-policy {router.masters()[0].config_get('maxmemory-policy')['maxmemory-policy']}"
        raise BackupError(
            f"the backup needs about {needed} bytes of memory and the target's masters have {free} free under "
            f"maxmemory{policy}: keys would be evicted or refused; raise redis.maxmemory or add masters first")


def restore(
    files: Sequence[BackupFile],
    target: Target,
    mode: Mode = "fail-if-not-empty",
    verify: bool = True,
    source: str = "",
    batch: int = 1000,
    sample: int = 100,
    progress: Progress | None = None,
    scratch: Path | None = None,
    announce: Announce | None = None,
    parallel: int | None = None,
) -> RestoreResult:
    """Restores every file into `target`, `parallel` shards at once (default: parallel_shards);
    refuses a non-empty target in fail-if-not-empty."""
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
        preflight(router, files, local_redis_version())
        job = _Job(router, target, mode, verify, batch, sample, progress or Progress(), scratch, announce,
                   threading.Event())
        pool = ThreadPoolExecutor(max_workers=parallel or parallel_shards(files), thread_name_prefix="restore")
        try:
            futures = [pool.submit(_restore_shard, file, job) for file in files]
            results = [future.result() for future in futures]
        except BaseException:
            job.stop.set()  # the other shards stop at their next batch and clean up
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        after = router.key_count()
    finally:
        router.close()
    return RestoreResult(source, mode, results, before, after, time.monotonic() - begin)
