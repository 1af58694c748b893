"""The cache's logic, shared by the sync and asyncio clients. Pure: no I/O here.

Every operation is a *plan*: a generator that yields effects (a batch of single-key commands,
a sleep, a call of the loader, an INFO of every master) and receives their results. The sync
client (client.py) and the asyncio client (aio.py) are thin executors that perform the effects;
an error performing one is thrown back into the plan, which applies the failure policy.

Tags: an entry carries, for each of its tags, the tag's version at write time. A tag's version
is a key `~tag:<tag>` holding a unique value (codec.new_version), created with SET NX when
missing. Invalidating a tag DELETES its version key (O(1) per tag, no scan, no member set to
prune, no multi-slot command). A read compares the versions stored in the entry with the
current ones: any difference, or a missing version key, makes the entry a miss. Eviction of a
version key under allkeys-lru is therefore an invalidation, never a resurrection: the key is
recreated with a fresh value that no old entry carries (INCR would restart at 1 and could
repeat a value an old entry carries).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from .codec import (
    CorruptEntryError,
    Entry,
    JsonSerializer,
    Serializer,
    decode_entry,
    encode_payload,
    header_size,
    new_version,
    pack_entry,
)
from .config import CacheConfig
from .errors import (
    CacheUnavailableError,
    SessionUnavailableError,
    ValueTooLargeError,
    is_credential_refusal,
    is_unavailable,
)
from .keys import Keys

T = TypeVar("T")
log = logging.getLogger("platform_cache")


def _credentials_fix(user: str | None) -> str:
    return (
        f"wrong password for user {user!r} (or the user is disabled): check REDIS_USER / REDIS_PASSWORD, "
        "or the user and password of the stack's connection output"
    )


# ------------------------------------------------------------------------------------- effects
NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class Command(NamedTuple):  # NamedTuples: built on every call, cheaper than dataclasses
    args: tuple[Any, ...]
    options: Mapping[str, Any] = NO_OPTIONS  # redis-py reply-parsing options (SET ... GET)


class Batch(NamedTuple):
    """Single-key commands; the executor groups them by slot (cluster) or shard (sentinel) and
    pipelines them, so a batch never sends a multi-slot command (no CROSSSLOT). `replica`: reads
    that a replica may answer (only ever set on batches of GETs the read policy allows)."""

    commands: tuple[Command, ...]
    replica: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Load:
    """Run the application's loader; the plan receives its value (or its exception)."""


@dataclass(frozen=True)
class ServerInfo:
    """INFO of every master; the plan receives a list of dicts."""


Effect = Batch | Sleep | Load | ServerInfo
Plan = Generator[Effect, Any, T]


def cmd(*args: Any, **options: Any) -> Command:
    return Command(args, options or NO_OPTIONS)


# --------------------------------------------------------------------------------------- stats
COUNTERS = ("hits", "misses", "sets", "deletes", "invalidations", "errors", "early_refreshes", "loads")


class Stats:
    """Client-side counters per namespace (thread-safe; the asyncio client shares the code)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, namespace: str, counter: str, n: int = 1) -> None:
        with self._lock:
            counts = self._counts.get(namespace)
            if counts is None:
                counts = self._counts[namespace] = dict.fromkeys(COUNTERS, 0)
            counts[counter] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            namespaces = {ns: _with_ratio(dict(c)) for ns, c in self._counts.items()}
        total = dict.fromkeys(COUNTERS, 0)
        for counts in namespaces.values():
            for name in COUNTERS:
                total[name] += counts[name]
        return {"total": _with_ratio(total), "namespaces": namespaces}


def _with_ratio(counts: dict[str, Any]) -> dict[str, Any]:
    lookups = counts["hits"] + counts["misses"]
    counts["hit_ratio"] = round(counts["hits"] / lookups, 4) if lookups else None
    return counts


def summarize_info(infos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The servers' side of the picture: what INFO says, summed over the masters."""

    def total(name: str) -> int:
        return sum(int(info.get(name, 0) or 0) for info in infos)

    hits, misses = total("keyspace_hits"), total("keyspace_misses")
    keys = sum(int(v.get("keys", 0)) for info in infos for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    return {
        "masters": len(infos),
        "keys": keys,
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "server_hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "evicted_keys": total("evicted_keys"),
        "expired_keys": total("expired_keys"),
        "used_memory": total("used_memory"),
        "maxmemory": total("maxmemory"),
        "maxmemory_policy": sorted({str(info.get("maxmemory_policy")) for info in infos}),
        "redis_version": sorted({str(info.get("redis_version")) for info in infos}),
    }


# -------------------------------------------------------------------------- read-your-writes
class RecentWrites:
    """Names (entry keys, tags) written through this client in the last `window` seconds: reads
    of them go to the master, so a client never reads its own write's previous value back from
    a replica that has not caught up yet."""

    LIMIT = 100_000  # beyond this many names, expired ones are dropped

    def __init__(self, window: float) -> None:
        self.window = window
        self._until: dict[str, float] = {}
        self._prune_at = self.LIMIT

    def add(self, names: Iterable[str]) -> None:
        if self.window <= 0:
            return
        until = time.monotonic() + self.window
        for name in names:
            self._until[name] = until
        if len(self._until) > self._prune_at:
            now = time.monotonic()
            self._until = {k: v for k, v in list(self._until.items()) if v > now}
            # Names still within the window stay; the next prune waits until the map has doubled
            # (pruning on every write once over the limit cost ~20 ms per call at 100k names).
            self._prune_at = max(self.LIMIT, 2 * len(self._until))

    def any_of(self, names: Iterable[str]) -> bool:
        if not self._until:
            return False
        now = time.monotonic()
        return any(self._until.get(name, 0.0) > now for name in names)


class TagMemo:
    """The tags each entry key was last seen with (written or read), so a read sends the entry's
    GET and its tags' GETs in one round trip. Only a guess: tags the entry turns out to carry
    beyond it are read in a second round trip, and a tag guessed wrongly costs one extra GET."""

    LIMIT = 65_536

    def __init__(self) -> None:
        self._tags: dict[str, tuple[str, ...]] = {}

    def guess(self, keys: Sequence[str]) -> list[str]:
        memo = self._tags
        if len(keys) == 1:
            return list(memo.get(keys[0], ()))
        return list(dict.fromkeys(tag for key in keys for tag in memo.get(key, ())))

    def learn(self, key: str, tags: tuple[str, ...]) -> None:
        if self._tags.get(key) == tags:
            return
        if len(self._tags) >= self.LIMIT and key not in self._tags:
            self._tags = {}  # cheaper than LRU bookkeeping on every read; relearnt on the next reads
        self._tags[key] = tags


# --------------------------------------------------------------------------------------- XFetch
def refresh_early(entry: Entry, beta: float, now_ms: int, rand: Callable[[], float] = random.random) -> bool:
    """Probabilistic early expiration (Vattani et al., "Optimal Probabilistic Cache Stampede
    Prevention"): refresh when now - delta * beta * ln(u) >= expiry. Entries that took long to
    compute, and entries close to expiry, are refreshed early by one caller, before they expire
    for everyone."""
    if beta <= 0 or not entry.delta_ms or not entry.expires_at_ms:
        return False
    u = 1.0 - rand()  # in (0, 1]: log(0) is undefined
    return now_ms - entry.delta_ms * beta * math.log(u) >= entry.expires_at_ms


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------- core
class Core:
    """Builds plans. Holds no connection; `Cache` and `AsyncCache` each own one Core."""

    def __init__(self, config: CacheConfig, serializer: Serializer | None = None) -> None:
        self.config = config
        self.serializer: Serializer = serializer or JsonSerializer()
        self.keys = Keys(config.namespace, config.hash_keys)
        self.stats = Stats()
        self.recent = RecentWrites(config.read_your_writes_window)
        self.tag_memo = TagMemo()
        self._refusal_logged_at = -math.inf

    # ---------------------------------------------------------------- helpers
    def _ttl_ms(self, ttl: float | None, default: float) -> int:
        seconds = default if ttl is None else ttl
        if seconds <= 0:
            raise ValueError(f"ttl must be positive seconds, got {ttl!r}")
        return max(1, int(seconds * 1000))

    def _payload(self, key: str, value: Any, tags: Sequence[str]) -> tuple[int, bytes]:
        """Serialize and compress once; refuse a value the server would refuse, before any I/O."""
        flags, payload = encode_payload(value, self.serializer, self.config.compress_threshold)
        size = header_size(tags) + len(payload)
        if size > self.config.max_value_bytes:
            raise ValueTooLargeError(key, size, self.config.max_value_bytes)
        return flags, payload

    def _decode(self, raw: bytes | None) -> Entry | None:
        if raw is None:
            return None
        try:
            return decode_entry(raw, self.serializer)
        except CorruptEntryError:
            return None  # a foreign or older value under our key: a miss, overwritten on the next set

    def _unavailable(self, namespace: str, error: BaseException, fail_open: bool, session: bool = False) -> None:
        """Count the error; re-raise unless the policy is to fail open. Non-availability errors
        (NOPERM, WRONGTYPE, bugs) always propagate unchanged."""
        if not is_unavailable(error):
            raise error
        self.stats.add(namespace, "errors")
        refused = is_credential_refusal(error)
        if refused and time.monotonic() - self._refusal_logged_at > 60:
            # Failing open keeps the application up, but a wrong password must not stay silent.
            self._refusal_logged_at = time.monotonic()
            log.error("redis refused user %r: %s", self.config.user, _credentials_fix(self.config.user))
        if not fail_open:
            kind = SessionUnavailableError if session else CacheUnavailableError
            # The message names the error class and node text only: never the password.
            if refused:
                raise kind(f"redis refused user {self.config.user!r}: {_credentials_fix(self.config.user)}") from error
            raise kind(f"redis unavailable: {type(error).__name__}: {error}") from error

    # ------------------------------------------------------------ tag versions
    def _tag_versions(self, tags: Iterable[str], ttl_ms: int) -> Plan[list[tuple[str, bytes]]]:
        """Current version of each tag, creating missing ones with a fresh value. The version key
        lives at least as long as the entries written under it (PEXPIRE GT only lengthens), so a
        live entry is not invalidated by its tag expiring; tags nobody writes expire, no garbage."""
        names = list(dict.fromkeys(tags))
        if not names:
            return []
        tag_ttl = ttl_ms + 60_000
        fresh = [new_version() for _ in names]
        commands: list[Command] = []
        for name, version in zip(names, fresh, strict=True):
            key = self.keys.tag(name)
            # NX + GET together (Redis >= 7.0): the existing version, or nil when ours was set.
            commands.append(cmd("SET", key, version, "NX", "GET", "PX", tag_ttl, get=True))
            commands.append(cmd("PEXPIRE", key, tag_ttl, "GT"))
        replies = yield Batch(tuple(commands))
        return [
            (name, existing if existing is not None else version)
            for name, version, existing in zip(names, fresh, replies[::2], strict=True)
        ]

    def _replica_allowed(self, ns: str, keys: Sequence[str], stale_ok: bool | None) -> bool:
        """The read policy: replicas only for reads that may be stale (the namespace's policy, or
        the call's `stale_ok`), and never for keys this client wrote within the window."""
        allowed = self.config.replica_reads_allowed(ns) if stale_ok is None else stale_ok
        return allowed and not self.recent.any_of(keys)

    def _read(self, keys: Sequence[str], replica: bool = False) -> Plan[list[Entry | None]]:
        """Entries for full keys, tag versions checked. The tags the keys were last seen with are
        read in the same round trip as the entries; a second one only for tags not guessed."""
        guessed = self.tag_memo.guess(keys)
        tag_key = self.keys.tag
        # Commands built directly (no cmd()): this runs on every read.
        commands = [Command(("GET", key)) for key in keys]
        commands += [Command(("GET", tag_key(tag))) for tag in guessed]
        replies = yield Batch(tuple(commands), replica)
        decode = self._decode
        entries = [decode(raw) for raw in replies[: len(keys)]]
        versions = dict(zip(guessed, replies[len(keys) :], strict=True))
        learn = self.tag_memo.learn
        tagged = False
        for key, entry in zip(keys, entries, strict=True):
            if entry is not None:
                learn(key, tuple(tag for tag, _ in entry.tags))
                tagged = tagged or bool(entry.tags)
        if not tagged:
            return entries  # nothing to check: misses and untagged entries
        if replica and self.recent.any_of(tag_key(tag) for e in entries if e for tag, _ in e.tags):
            # A tag this client invalidated moments ago: the replica may not know yet.
            return (yield from self._read(keys, replica=False))
        unseen = list(dict.fromkeys(tag for e in entries if e for tag, _ in e.tags if tag not in versions))
        if unseen:
            current = yield Batch(tuple(Command(("GET", tag_key(tag))) for tag in unseen), replica)
            versions.update(zip(unseen, current, strict=True))
        return [e if e is not None and all(versions[t] == v for t, v in e.tags) else None for e in entries]

    # -------------------------------------------------------------- operations
    def get(
        self, key: str, namespace: str | None = None, default: Any = None, stale_ok: bool | None = None
    ) -> Plan[Any]:
        ns = self.keys.ns(namespace)
        full = self.keys.entry(key, ns)
        try:
            (entry,) = yield from self._read([full], self._replica_allowed(ns, (full,), stale_ok))
        except Exception as error:
            self._unavailable(ns, error, self.config.fail_open_reads)
            return default
        self.stats.add(ns, "hits" if entry else "misses")
        return entry.value if entry else default

    def mget(
        self, keys: Sequence[str], namespace: str | None = None, stale_ok: bool | None = None
    ) -> Plan[dict[str, Any]]:
        """{key: value} for the keys found (a missing key is a miss)."""
        ns = self.keys.ns(namespace)
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        fulls = [self.keys.entry(k, ns) for k in keys]
        try:
            entries = yield from self._read(fulls, self._replica_allowed(ns, fulls, stale_ok))
        except Exception as error:
            self._unavailable(ns, error, self.config.fail_open_reads)
            return {}
        found = {k: e.value for k, e in zip(keys, entries, strict=True) if e is not None}
        self.stats.add(ns, "hits", len(found))
        self.stats.add(ns, "misses", len(keys) - len(found))
        return found

    def set(
        self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = (), namespace: str | None = None
    ) -> Plan[bool]:
        return (yield from self.mset({key: value}, ttl, tags, namespace))

    def mset(
        self,
        mapping: Mapping[str, Any],
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
    ) -> Plan[bool]:
        """Write every entry with the same TTL and tags. True when written; False when Redis was
        unreachable and writes fail open."""
        ns = self.keys.ns(namespace)
        ttl_ms = self._ttl_ms(ttl, self.config.default_ttl)
        tags = list(tags)
        for tag in tags:
            self.keys.tag(tag)  # validate before any I/O
        payloads = {self.keys.entry(key, ns): self._payload(key, value, tags) for key, value in mapping.items()}
        if not mapping:
            return True
        # Marked before sending: a read racing this write must not go to a replica either.
        self.recent.add(payloads)
        tag_names = tuple(dict.fromkeys(tags))
        for full in payloads:
            self.tag_memo.learn(full, tag_names)
        try:
            versions = yield from self._tag_versions(tags, ttl_ms)
            expires_at = now_ms() + ttl_ms
            commands = tuple(
                cmd("SET", full, pack_entry(flags, payload, versions, expires_at), "PX", ttl_ms)
                for full, (flags, payload) in payloads.items()
            )
            yield Batch(commands)
        except Exception as error:
            self._unavailable(ns, error, self.config.fail_open_writes)
            return False
        self.stats.add(ns, "sets", len(mapping))
        return True

    def delete(self, keys: Sequence[str], namespace: str | None = None) -> Plan[int]:
        ns = self.keys.ns(namespace)
        if not keys:
            return 0
        fulls = [self.keys.entry(k, ns) for k in keys]
        self.recent.add(fulls)
        try:
            replies = yield Batch(tuple(cmd("UNLINK", full) for full in fulls))
        except Exception as error:
            self._unavailable(ns, error, self.config.fail_open_writes)
            return 0
        deleted = sum(int(r) for r in replies)
        self.stats.add(ns, "deletes", deleted)
        return deleted

    def invalidate_by_tags(self, tags: Iterable[str]) -> Plan[int]:
        """Invalidate every entry carrying any of `tags`, in every namespace: one UNLINK per tag.
        Always fails closed: a silently skipped invalidation would serve stale data."""
        names = list(dict.fromkeys(tags))
        keys = [self.keys.tag(t) for t in names]
        if not keys:
            return 0
        ns = self.keys.ns(None)
        self.recent.add(keys)
        try:
            yield Batch(tuple(cmd("UNLINK", key) for key in keys))
        except Exception as error:
            self._unavailable(ns, error, fail_open=False)
        self.stats.add(ns, "invalidations", len(names))
        return len(names)

    def get_or_set(
        self,
        key: str,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
        rand: Callable[[], float] = random.random,
        stale_ok: bool | None = None,
    ) -> Plan[Any]:
        """The value, loading it (the executor's loader, through Load) on a miss.

        Single flight: on a miss, one caller wins `SET ~lock:<key> NX PX lock_ttl`, reads the
        entry once more (the previous leader may have just stored it) and runs the loader; the
        others poll for the entry (or for the lock to go, when the loader failed) and
        load themselves only after lock_wait. Early refresh: a hit that XFetch picks is refreshed
        by whoever wins the lock, while everyone else keeps getting the current value."""
        ns = self.keys.ns(namespace)
        full = self.keys.entry(key, ns)
        ttl_ms = self._ttl_ms(ttl, self.config.default_ttl)
        tags = list(tags)
        lock = self.keys.lock(full)
        lock_ms = max(1, int(self.config.lock_ttl * 1000))
        counted = False
        deadline: float | None = None
        interval = 0.005
        # Only the first read may go to a replica: polls for a leader's fresh write and the
        # double-check under the lock read the master, or they would miss what was just stored.
        replica = self._replica_allowed(ns, (full,), stale_ok)
        while True:
            try:
                (entry,) = yield from self._read([full], replica)
                replica = False
                early = entry is not None and refresh_early(entry, self.config.xfetch_beta, now_ms(), rand)
                if entry is not None and not early:
                    if not counted:
                        self.stats.add(ns, "hits")
                    return entry.value
                if not counted:
                    self.stats.add(ns, "hits" if entry else "misses")
                    counted = True
                token = new_version()
                (won,) = yield Batch((cmd("SET", lock, token, "NX", "PX", lock_ms),))
            except Exception as error:
                self._unavailable(ns, error, self.config.fail_open_reads)
                return (yield Load())  # Redis is down: serve from the source, store nothing
            if won:
                if entry is not None:
                    self.stats.add(ns, "early_refreshes")
                    return (yield from self._load_and_store(full, ns, ttl_ms, tags, lock, token))
                # Between our miss and our lock, the leader may have stored the value and let go
                # of its lock: read again before loading (double-checked), or two loads run.
                try:
                    (entry,) = yield from self._read([full])
                except Exception as error:
                    yield from self._release(lock, token)
                    self._unavailable(ns, error, self.config.fail_open_reads)
                    return (yield Load())
                if entry is not None:
                    yield from self._release(lock, token)
                    return entry.value
                return (yield from self._load_and_store(full, ns, ttl_ms, tags, lock, token))
            if entry is not None:
                return entry.value  # someone else is refreshing it early: the current value is fine
            deadline = deadline if deadline is not None else time.monotonic() + self.config.lock_wait
            if time.monotonic() >= deadline:
                # The leader is stuck: load ourselves rather than wait forever.
                return (yield from self._load_and_store(full, ns, ttl_ms, tags, None, None))
            yield Sleep(interval)
            interval = min(interval * 2, 0.05)

    def _load_and_store(
        self, full: str, ns: str, ttl_ms: int, tags: list[str], lock: str | None, token: bytes | None
    ) -> Plan[Any]:
        try:
            try:
                # Versions are read before the loader runs: an invalidation while it loads makes
                # what it loaded (possibly stale) a miss instead of a valid entry.
                versions = yield from self._tag_versions(tags, ttl_ms)
            except Exception as error:
                self._unavailable(ns, error, self.config.fail_open_reads)
                return (yield Load())
            started = time.monotonic()
            value = yield Load()
            delta = int((time.monotonic() - started) * 1000)
            self.stats.add(ns, "loads")
            flags, payload = self._payload(full, value, tags)
            data = pack_entry(flags, payload, versions, now_ms() + ttl_ms, max(delta, 1))
            self.recent.add((full,))
            self.tag_memo.learn(full, tuple(dict.fromkeys(tags)))
            try:
                yield Batch((cmd("SET", full, data, "PX", ttl_ms),))
                self.stats.add(ns, "sets")
            except Exception as error:
                self._unavailable(ns, error, self.config.fail_open_writes)
            return value
        finally:
            if lock is not None:
                yield from self._release(lock, token)

    def _release(self, lock: str, token: bytes | None) -> Plan[None]:
        # Without Lua there is no atomic compare-and-delete: GET then DEL. The window only lets a
        # lock that expired in between be deleted, costing at most one extra loader run.
        try:
            (holder,) = yield Batch((cmd("GET", lock),))
            if holder == token:
                yield Batch((cmd("DEL", lock),))
        except Exception as error:
            if not is_unavailable(error):
                raise
            # The lock expires by itself (lock_ttl).

    # ---------------------------------------------------------------- sessions
    SESSIONS = "~sessions"  # the stats' name for the session store

    def set_session(self, session_id: str, data: Any, ttl: float | None = None) -> Plan[None]:
        key = self.keys.session(session_id)
        ttl_ms = self._ttl_ms(ttl, self.config.session_ttl)
        raw = pack_entry(*self._payload(key, data, ()))
        try:
            yield Batch((cmd("SET", key, raw, "PX", ttl_ms),))
        except Exception as error:
            self._unavailable(self.SESSIONS, error, self.config.fail_open_sessions, session=True)
            return
        self.stats.add(self.SESSIONS, "sets")

    def get_session(self, session_id: str, sliding: bool = True, ttl: float | None = None) -> Plan[Any]:
        """The session's data, or None. `sliding` restarts its TTL in the same command (GETEX)."""
        key = self.keys.session(session_id)
        ttl_ms = self._ttl_ms(ttl, self.config.session_ttl)
        command = cmd("GETEX", key, "PX", ttl_ms) if sliding else cmd("GET", key)
        try:
            (raw,) = yield Batch((command,))
        except Exception as error:
            self._unavailable(self.SESSIONS, error, self.config.fail_open_sessions, session=True)
            return None
        entry = self._decode(raw)
        self.stats.add(self.SESSIONS, "hits" if entry else "misses")
        return entry.value if entry else None

    def touch_session(self, session_id: str, ttl: float | None = None) -> Plan[bool]:
        key = self.keys.session(session_id)
        ttl_ms = self._ttl_ms(ttl, self.config.session_ttl)
        try:
            (done,) = yield Batch((cmd("PEXPIRE", key, ttl_ms),))
        except Exception as error:
            self._unavailable(self.SESSIONS, error, self.config.fail_open_sessions, session=True)
            return False
        return bool(done)

    def destroy_session(self, session_id: str) -> Plan[bool]:
        key = self.keys.session(session_id)
        try:
            (deleted,) = yield Batch((cmd("UNLINK", key),))
        except Exception as error:
            self._unavailable(self.SESSIONS, error, self.config.fail_open_sessions, session=True)
            return False
        self.stats.add(self.SESSIONS, "deletes", int(deleted))
        return bool(deleted)

    # ------------------------------------------------------------------- stats
    def get_stats(self) -> Plan[dict[str, Any]]:
        stats = self.stats.snapshot()
        try:
            infos = yield ServerInfo()
            stats["servers"] = summarize_info(infos)
        except Exception as error:
            if not is_unavailable(error):
                raise
            self.stats.add(self.keys.ns(None), "errors")
            stats["servers"] = {"error": f"{type(error).__name__}: {error}"}
        return stats
