"""Cluster-wide backups: one checked RDB snapshot per shard (cluster) or group (sentinel), plus a
manifest.json that says what each file holds.

A backup is a directory (or an S3 prefix) named `<stack>-<UTC stamp>` holding `shard-<n>.rdb`
files and, written last, `manifest.json`: a backup without its manifest is partial and is never
listed, restored or counted by retention. Shards are snapshotted one after another, so the files
are not a single point in time across shards (the manifest says so too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import redis

from cachelayer.errors import CachelayerError
from cachelayer.ops.health import is_linked_replica
from cachelayer.ops.target import Endpoint, Target, parse_address

MANIFEST = "manifest.json"
FORMAT = "cachelayer-backup/1"
CONSISTENCY = (
    "Shards are snapshotted one after another, each at its own point in time: the backup is not a "
    "single point in time across shards. Each file is consistent on its own (one RDB of one shard)."
)
NAME_STAMP = "%Y%m%dT%H%M%S"  # then .mmm (milliseconds) and Z: two backups a second apart never share a name
NAME_TIME = re.compile(r"-(\d{8}T\d{6})(?:\.(\d{3}))?Z$")  # names without milliseconds: earlier releases
NAME = re.compile(r"^(?P<stack>.+)-\d{8}T\d{6}(?:\.\d{3})?Z$")  # <stack>-<stamp>: the stack is all before the stamp


class BackupError(CachelayerError):
    """A backup or restore cannot go on; the message says which file or node and why."""


# ------------------------------------------------------------------------ redis-check-rdb
@dataclass(frozen=True)
class RdbCheck:
    """What `redis-check-rdb` says about a file (it must exit 0 for the file to count)."""

    keys: int
    expires: int
    already_expired: int
    redis_version: str
    repl_id: str
    repl_offset: int


def _aux(output: str, name: str) -> str:
    found = re.search(rf"AUX FIELD {re.escape(name)} = '([^']*)'", output)
    return found.group(1) if found else ""


def _info_count(output: str, label: str) -> int:
    found = re.search(rf"\[info\] (\d+) {label}", output)
    return int(found.group(1)) if found else 0


def check_rdb(path: Path) -> RdbCheck:
    """Runs redis-check-rdb; a corrupt or truncated file raises BackupError with its verdict."""
    result = subprocess.run(["redis-check-rdb", str(path)], capture_output=True, text=True, check=False, timeout=3600)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        # Its last lines name the problem ("Unexpected EOF reading RDB file", "Wrong RDB checksum", ...).
        reason = " ".join(line.strip() for line in output.strip().splitlines()[-3:] if line.strip())
        raise BackupError(f"{path} is not a valid RDB file (redis-check-rdb: {reason[-400:]})")
    offset = _aux(output, "repl-offset")
    return RdbCheck(
        keys=_info_count(output, "keys read"),
        expires=_info_count(output, "expires"),
        already_expired=_info_count(output, "already expired"),
        redis_version=_aux(output, "redis-ver"),
        repl_id=_aux(output, "repl-id"),
        repl_offset=int(offset) if offset.lstrip("-").isdigit() else -1,
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class NodeRef:
    id: str
    address: str
    role: str


@dataclass(frozen=True)
class ShardPlan:
    """One shard or group: its nodes and the one to snapshot."""

    index: int
    group: str | None  # sentinel group name; None in a cluster
    slots: tuple[tuple[int, int], ...]  # cluster slot ranges; empty for a sentinel group
    master: NodeRef
    nodes: tuple[NodeRef, ...]
    source: NodeRef


def _pairs(flat: Sequence[Any] | dict[Any, Any]) -> dict[str, Any]:
    """CLUSTER SHARDS answers [name, value, ...] (redis-py parses some levels into dicts): a dict with str names."""
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _endpoint(target: Target, address: str) -> Endpoint:
    for endpoint in target.nodes:
        if endpoint.address == address:
            return endpoint
    host, port = parse_address(address)
    return Endpoint(f"redis-{port}", host, port)


def _link_up(target: Target, address: str) -> bool:
    try:
        with target.client(_endpoint(target, address)) as client:
            info = client.info("replication")
    except redis.RedisError:
        return False
    return is_linked_replica(info) and not info.get("master_sync_in_progress")


def cluster_plan(target: Target, from_masters: bool) -> list[ShardPlan]:
    """Shards from CLUSTER SHARDS (Redis 7): slots, node ids, roles, offsets, health."""
    shards: Any = None
    for endpoint in target.nodes:
        try:
            with target.client(endpoint) as client:
                shards = client.execute_command("CLUSTER SHARDS")
                break
        except redis.RedisError:
            continue
    if shards is None:
        raise BackupError(f"no node of {target.stack} answered CLUSTER SHARDS")
    plans: list[ShardPlan] = []
    for shard in shards:
        fields = _pairs(shard)
        flat_slots = [int(s) for s in fields["slots"]]
        slots = tuple(zip(flat_slots[::2], flat_slots[1::2], strict=True))
        if not slots:
            continue  # a master without slots holds no data
        nodes = [_pairs(n) for n in fields["nodes"]]
        refs: list[tuple[NodeRef, dict[str, Any]]] = []
        for node in nodes:
            port = node.get("port") or node.get("tls-port")
            address = f"{_text(node.get('ip') or node.get('endpoint'))}:{port}"
            refs.append((NodeRef(_text(node["id"]), address, _text(node["role"])), node))
        master = next((ref for ref, node in refs if ref.role == "master"), None)
        if master is None:
            raise BackupError(f"shard with slots {slots[0][0]}-{slots[-1][1]} has no master")
        source = master
        if not from_masters:
            healthy = [
                (int(node.get("replication-offset", 0)), ref)
                for ref, node in refs
                # Not "online" alone: Redis 7.0 reports a replica at offset 0 as "loading"; the
                # replica's own INFO (link up, not syncing) is what counts.
                if ref.role == "replica" and _text(node.get("health")) != "failed" and _link_up(target, ref.address)
            ]
            if not healthy:
                raise BackupError(
                    f"shard of {master.address} (slots {slots[0][0]}-{slots[-1][1]}) has no healthy replica to snapshot: "
                    "repair it, or pass --from-masters to snapshot the master (it forks)"
                )
            source = max(healthy, key=lambda pair: pair[0])[1]  # the most up-to-date replica
        plans.append(ShardPlan(0, None, slots, master, tuple(ref for ref, _ in refs), source))
    plans.sort(key=lambda plan: plan.slots[0][0])
    return [ShardPlan(i + 1, p.group, p.slots, p.master, p.nodes, p.source) for i, p in enumerate(plans)]


def sentinel_plan(target: Target, from_masters: bool) -> list[ShardPlan]:
    """Groups as the sentinels see them: master address and replicas (flags, link status)."""
    plans: list[ShardPlan] = []
    for index, group in enumerate(target.groups, start=1):
        master_address: str | None = None
        replicas: list[dict[str, Any]] = []
        for sentinel in target.sentinels:
            try:
                with target.client(sentinel) as client:
                    host, port = client.sentinel_get_master_addr_by_name(group)
                    master_address = f"{host}:{port}"
                    replicas = list(client.sentinel_slaves(group))
                    break
            except (redis.RedisError, TypeError):
                continue
        if master_address is None:
            raise BackupError(f"no sentinel of {target.stack} named the master of {group}")
        master = NodeRef("", master_address, "master")
        refs = [
            NodeRef("", f"{r['ip']}:{r['port']}", "replica")
            for r in replicas
        ]
        source = master
        if not from_masters:
            healthy = [
                (int(r.get("slave-repl-offset", 0)), NodeRef("", f"{r['ip']}:{r['port']}", "replica"))
                for r in replicas
                if r.get("is_slave") and not r.get("is_sdown") and not r.get("is_disconnected")
                and r.get("master-link-status") == "ok" and _link_up(target, f"{r['ip']}:{r['port']}")
            ]
            if not healthy:
                raise BackupError(
                    f"group {group} (master {master_address}) has no healthy replica to snapshot: repair it, "
                    "or pass --from-masters to snapshot the master (it forks)"
                )
            source = max(healthy, key=lambda pair: pair[0])[1]
        plans.append(ShardPlan(index, group, (), master, (master, *refs), source))
    return plans


# ----------------------------------------------------------------------------- snapshot
def snapshot(target: Target, endpoint: Endpoint, path: Path, timeout: float = 3600) -> None:
    """`redis-cli --rdb` (a fresh RDB over the replication protocol); the password in REDISCLI_AUTH."""
    argv = ["redis-cli", "-h", endpoint.host, "-p", str(endpoint.port), *target.cli_args(), "--rdb", str(path)]
    result = subprocess.run(argv, env=target.cli_env(), capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0 or not path.exists():
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BackupError(f"redis-cli --rdb on {endpoint.address} failed: {detail[0][-300:]}")


def _node_info(target: Target, endpoint: Endpoint) -> tuple[str, int, int, int]:
    """(redis_version, replication offset, keys in db0, used_memory_dataset) of the node, just
    before its snapshot."""
    with target.client(endpoint, timeout=10) as client:
        info = client.info()
    offset = info.get("slave_repl_offset") if info.get("role") == "slave" else info.get("master_repl_offset")
    keyspace = info.get("db0") or {}
    return (str(info.get("redis_version", "")), int(offset or 0), int(keyspace.get("keys", 0)),
            int(info.get("used_memory_dataset", 0)))


def backup_name(stack: str, when: datetime) -> str:
    return f"{stack}-{when.strftime(NAME_STAMP)}.{when.microsecond // 1000:03d}Z"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


ShardDone = Callable[[dict[str, Any]], None]


def take_backup(
    target: Target,
    directory: Path,
    from_masters: bool = False,
    on_shard: ShardDone | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Path:
    """Snapshots every shard into `directory/<name>` and returns that path. The files land in
    `<name>.partial` first; manifest.json is written last, then the directory is renamed."""
    started = now()
    name = backup_name(target.stack, started)
    final = directory / name
    partial = directory / f"{name}.partial"
    directory.mkdir(parents=True, exist_ok=True)
    if final.exists() or partial.exists():
        raise BackupError(f"{final} already exists (another backup started this very millisecond): not overwritten")
    partial.mkdir(mode=0o700)
    try:
        plans = cluster_plan(target, from_masters) if target.kind == "cluster" else sentinel_plan(target, from_masters)
        shards: list[dict[str, Any]] = []
        version = ""
        for plan in plans:
            endpoint = _endpoint(target, plan.source.address)
            version, offset, keys, dataset = _node_info(target, endpoint)
            file = partial / f"shard-{plan.index}.rdb"
            begin = time.monotonic()
            snapshot(target, endpoint, file)
            file.chmod(0o600)  # the data itself: readable by the operator only
            check = check_rdb(file)  # a file counts only once redis-check-rdb accepts it
            entry = {
                "index": plan.index,
                "group": plan.group,
                "slots": [list(r) for r in plan.slots],
                "master": asdict(plan.master),
                "source": asdict(plan.source),
                "nodes": [asdict(n) for n in plan.nodes],
                "replication_offset": offset,
                "rdb_repl_id": check.repl_id,
                "rdb_repl_offset": check.repl_offset,
                "keys": keys,  # INFO keyspace of the source just before the snapshot
                "rdb_keys": check.keys,  # what redis-check-rdb read from the file
                "rdb_expires": check.expires,
                "used_memory_dataset": dataset,  # what the restore's memory check counts on the target
                "file": file.name,
                "bytes": file.stat().st_size,
                "sha256": sha256_of(file),
                "seconds": round(time.monotonic() - begin, 3),
                "taken_at": _iso(now()),
            }
            shards.append(entry)
            if on_shard is not None:
                on_shard(entry)
        manifest = {
            "format": FORMAT,
            "name": name,
            "stack": target.stack,
            "topology": target.kind,
            "redis_version": version,
            "started_at": _iso(started),
            "finished_at": _iso(now()),
            "from_masters": from_masters,
            "consistency": CONSISTENCY,
            "shards": shards,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (partial / MANIFEST).chmod(0o600)
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def read_manifest(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{directory / MANIFEST} is not a {FORMAT} manifest")
    return manifest


# ---------------------------------------------------------------------------- storage
@dataclass(frozen=True)
class StoredBackup:
    name: str
    complete: bool  # has its manifest: only these are backups
    when: datetime | None  # from the name


def _when(name: str) -> datetime | None:
    found = NAME_TIME.search(name)
    if not found:
        return None
    when = datetime.strptime(found.group(1), NAME_STAMP).replace(tzinfo=UTC)
    return when + timedelta(milliseconds=int(found.group(2) or 0))


def _in_order(backups: list[StoredBackup]) -> list[StoredBackup]:
    """Oldest first, by the time in the name (not the name: .mmm and older names mix)."""
    return sorted(backups, key=lambda b: (b.when or datetime.min.replace(tzinfo=UTC), b.name))


class Store(Protocol):
    """Where backups are kept: a local directory or an S3 prefix."""

    def list(self) -> list[StoredBackup]: ...
    def put(self, local: Path) -> str: ...
    def fetch(self, name: str, into: Path) -> Path: ...
    def delete(self, name: str) -> None: ...
    def describe(self, name: str = "") -> str: ...
    def manifest(self, name: str) -> dict[str, Any]: ...


@dataclass
class LocalStore:
    root: Path

    def list(self) -> list[StoredBackup]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if entry.is_dir() and _when(entry.name.removesuffix(".partial")) is not None:
                complete = not entry.name.endswith(".partial") and (entry / MANIFEST).exists()
                found.append(StoredBackup(entry.name, complete, _when(entry.name.removesuffix(".partial"))))
        return _in_order(found)

    def put(self, local: Path) -> str:
        return local.name  # take_backup already wrote it here

    def fetch(self, name: str, into: Path) -> Path:
        return self.root / name

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name)

    def describe(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    def manifest(self, name: str) -> dict[str, Any]:
        return read_manifest(self.root / name)


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, "prefix/" or "")."""
    if not url.startswith("s3://"):
        raise BackupError(f"{url!r} is not s3://bucket/prefix")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise BackupError(f"{url!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@dataclass
class S3Store:
    """An S3-compatible bucket. Endpoint: `endpoint`, else boto3's own AWS_ENDPOINT_URL_S3 /
    AWS_ENDPOINT_URL; credentials: boto3's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    profile, instance role). Nothing of the credentials is printed."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    _client: Any = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, endpoint: str | None = None, region: str | None = None) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, endpoint or os.environ.get("CACHELAYER_S3_ENDPOINT") or None, region)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # only the S3 path needs it

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=self.region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
            )
        return self._client

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def list(self) -> list[StoredBackup]:
        names: dict[str, bool] = {}
        for obj in self._objects(self.prefix):
            name, _, rest = obj["Key"][len(self.prefix):].partition("/")
            if _when(name) is None:
                continue
            names[name] = names.get(name, False) or rest == MANIFEST
        return _in_order([StoredBackup(n, complete, _when(n)) for n, complete in names.items()])

    def put(self, local: Path) -> str:
        """Uploads the shard files, then the manifest: until the manifest is there the prefix is
        a partial upload, never listed as a backup."""
        if any(self._objects(f"{self.prefix}{local.name}/")):
            raise BackupError(f"{self.describe(local.name)} already exists: not overwritten")
        files = sorted(p for p in local.iterdir() if p.name != MANIFEST)
        for path in [*files, local / MANIFEST]:
            self.client.upload_file(str(path), self.bucket, f"{self.prefix}{local.name}/{path.name}")
        return local.name

    def fetch(self, name: str, into: Path) -> Path:
        directory = into / name
        directory.mkdir(parents=True, exist_ok=True)
        for obj in self._objects(f"{self.prefix}{name}/"):
            self.client.download_file(self.bucket, obj["Key"], str(directory / obj["Key"].rsplit("/", 1)[1]))
        return directory

    def delete(self, name: str) -> None:
        keys = [{"Key": obj["Key"]} for obj in self._objects(f"{self.prefix}{name}/")]
        # The manifest first: a half-deleted backup must look partial, not complete.
        keys.sort(key=lambda k: not k["Key"].endswith(f"/{MANIFEST}"))
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000]})

    def describe(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def manifest(self, name: str) -> dict[str, Any]:
        body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}/{MANIFEST}")["Body"].read()
        manifest: dict[str, Any] = json.loads(body)
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{self.describe(name)}/{MANIFEST} is not a {FORMAT} manifest")
        return manifest


def open_store(location: str, endpoint: str | None = None) -> Store:
    return S3Store.from_url(location, endpoint) if location.startswith("s3://") else LocalStore(Path(location))


def stack_of_name(name: str) -> str | None:
    """The stack a backup's name says it belongs to (`<stack>-<stamp>`, `.partial` while written)."""
    found = NAME.match(name.removesuffix(".partial"))
    return found.group("stack") if found else None


def stack_backups(store: Store, stack: str) -> list[StoredBackup]:
    """The stack's own backups, oldest first: its name in the backup's name AND, for a complete
    one, in its manifest. Stacks may share a folder or a prefix: nothing of another stack (a
    `prod-eu-...` beside `prod-...`, a renamed copy) is ever listed, picked or pruned for this one."""
    own = []
    for backup in store.list():
        if stack_of_name(backup.name) != stack:
            continue
        if backup.complete:
            try:
                if store.manifest(backup.name).get("stack") != stack:
                    continue
            except (BackupError, ValueError, OSError):
                continue  # an unreadable manifest: not a backup of anyone's to prune or pick
        own.append(backup)
    return own


def newest_complete(store: Store, stack: str) -> StoredBackup | None:
    complete = [b for b in stack_backups(store, stack) if b.complete]
    return complete[-1] if complete else None


def prune(store: Store, stack: str, keep_days: int | None, keep_copies: int | None,
          now: datetime | None = None) -> list[str]:
    """Deletes the stack's complete backups beyond `keep_copies` or older than `keep_days`; the
    newest complete backup is never deleted, partial ones are left alone (one may be uploading),
    and another stack's backups in the same place are never touched."""
    if keep_days is None and keep_copies is None:
        return []
    now = now or datetime.now(UTC)
    complete = [b for b in stack_backups(store, stack) if b.complete][::-1]  # newest first
    doomed = []
    for position, backup in enumerate(complete[1:], start=1):
        too_many = keep_copies is not None and position >= keep_copies
        too_old = keep_days is not None and backup.when is not None and now - backup.when > timedelta(days=keep_days)
        if too_many or too_old:
            doomed.append(backup.name)
    for name in doomed:
        store.delete(name)
    return doomed
