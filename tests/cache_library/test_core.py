"""The pure core of platform_cache, without Redis: codec, keys, configuration, XFetch, and the
plans driven by an in-memory backend that interprets the few commands the core sends."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from platform_cache import (
    Cache,
    CacheConfig,
    CacheUnavailableError,
    ConfigError,
    InvalidKeyError,
    SessionUnavailableError,
    ValueTooLargeError,
    from_env,
    from_stack_output,
)
from platform_cache.codec import (
    FLAG_ZLIB,
    CorruptEntryError,
    Entry,
    JsonSerializer,
    decode_entry,
    encode_entry,
    new_version,
    pack_entry,
)
from platform_cache.connect import shard_of
from platform_cache.core import Command, Core, refresh_early, summarize_info
from platform_cache.keys import Keys

CONFIG = CacheConfig(seeds=("127.0.0.1:7000",), password="s3cret-pass")


class MemoryBackend:
    """Interprets GET/SET (NX, GET, PX)/GETEX/PEXPIRE (GT)/DEL/UNLINK on a dict; TTLs ignored
    except that they are recorded. `down` makes every call fail like an unreachable cluster."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttl: dict[str, int] = {}
        self.down = False
        self.log: list[tuple[Any, ...]] = []
        self.round_trips: list[tuple[bool, list[tuple[Any, ...]]]] = []  # (replica, commands) per batch

    def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:7000. Connection refused.")
        self.round_trips.append((replica, [c.args for c in commands]))
        return [self._one(c.args, c.options) for c in commands]

    def _one(self, args: tuple[Any, ...], options: Any) -> Any:
        self.log.append(args)
        name, key, rest = args[0], args[1], list(args[2:])
        if name == "GET":
            return self.data.get(key)
        if name == "SET":
            value, flags = rest[0], rest[1:]
            old = self.data.get(key)
            if "NX" in flags and old is not None:
                return old if options.get("get") else None
            self.data[key] = value
            if "PX" in flags:
                self.ttl[key] = flags[flags.index("PX") + 1]
            return None if options.get("get") else True
        if name == "GETEX":
            if key in self.data:
                self.ttl[key] = rest[1]
            return self.data.get(key)
        if name == "PEXPIRE":
            if key not in self.data:
                return 0
            if "GT" not in rest or rest[0] > self.ttl.get(key, math.inf):
                self.ttl[key] = rest[0]
            return 1
        if name in ("DEL", "UNLINK"):
            self.ttl.pop(key, None)
            return int(self.data.pop(key, None) is not None)
        raise AssertionError(f"unexpected command {args}")

    def info(self) -> list[dict[str, Any]]:
        if self.down:
            raise redis.ConnectionError("down")
        return [{"keyspace_hits": 3, "keyspace_misses": 1, "redis_version": "7.0.15", "db0": {"keys": len(self.data)}}]

    def close(self) -> None:
        pass


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def cache(backend: MemoryBackend) -> Cache:
    return Cache(CONFIG, backend=backend)


# ------------------------------------------------------------------------------------ codec
@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, "é"]}, "ünïcødé ✓", 0, None, b"\x00\xff\x80binary", [True]])
def test_values_round_trip(value: Any) -> None:
    tags = (("user:1", new_version()), ("course:é", new_version()))
    entry = decode_entry(encode_entry(value, JsonSerializer(), tags, 123, 45), JsonSerializer())
    assert entry == Entry(value, 123, 45, tags)
    assert type(entry.value) is type(value)


def test_large_values_are_compressed_and_flagged() -> None:
    value = "lesson " * 1000
    data = encode_entry(value, JsonSerializer(), compress_threshold=1024)
    assert data[2] & FLAG_ZLIB and len(data) < 200
    assert decode_entry(data, JsonSerializer()).value == value
    small = encode_entry("short", JsonSerializer(), compress_threshold=1024)
    assert not small[2] & FLAG_ZLIB


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"plain text",
        b"\xc7\x09" + b"\x00" * 20,
        encode_entry("x", JsonSerializer())[:-2],
        pack_entry(0, b'"\xff"'),  # a JSON payload that is not UTF-8 (the serializer only writes UTF-8)
    ],
)
def test_foreign_or_truncated_values_are_corrupt(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode_entry(raw, JsonSerializer())


def test_versions_never_repeat() -> None:
    versions = {new_version() for _ in range(10000)}
    assert len(versions) == 10000


# ------------------------------------------------------------------------------------- keys
def test_keys_are_readable_and_carry_no_hash_tags() -> None:
    keys = Keys("lms")
    assert keys.entry("profile:42") == "lms:profile:42"
    assert keys.entry("profile:42", "profiles") == "profiles:profile:42"
    assert keys.tag("user:42") == "~tag:user:42"
    assert "{" not in keys.entry("x") + keys.tag("t") + keys.session("s")
    hashed = Keys("lms", hash_keys=True).entry("user@example.com")
    assert hashed.startswith("lms:#") and "example" not in hashed


@pytest.mark.parametrize("bad", ["", "~reserved"])
def test_reserved_or_empty_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        Keys("lms").entry("k", bad)


def test_a_namespace_spreads_over_the_shards() -> None:
    keys = Keys("lms")
    shards = {shard_of(keys.entry(f"course:{i}"), 3) for i in range(100)}
    assert shards == {0, 1, 2}


# ----------------------------------------------------------------------------------- config
def test_from_stack_output_reads_the_connection_output() -> None:
    output: dict[str, Any] = {
        "user": "app",
        "password": "pw-from-pulumi",
        "seeds": ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"],
        "sentinels": [],
        "sentinel_groups": [],
        "tls": True,
    }
    config = from_stack_output(json.dumps(output), namespace="courses")
    assert config.seeds == tuple(output["seeds"]) and config.tls and config.topology == "cluster"
    assert config.namespace == "courses"
    assert "pw-from-pulumi" not in repr(config)
    sentinel = from_stack_output(
        {**output, "sentinels": ["10.0.0.9:26379"], "sentinel_groups": ["redis-master-1", "redis-master-2"]}
    )
    assert sentinel.topology == "sentinel" and sentinel.sentinel_groups == ("redis-master-1", "redis-master-2")


def test_from_env_reads_the_seed_variables() -> None:
    env = {
        "REDIS_PASSWORD": "pw",
        "REDIS_NODE_1_HOST": "redis-node-1",
        "REDIS_NODE_1_PORT": "7000",
        "REDIS_NODE_2_HOST": "redis-node-2",
        "REDIS_NODE_2_PORT": "7001",
        "CACHE_DEFAULT_TTL": "600",
        "CACHE_NAMESPACE": "lms-test",
        "SESSION_TTL": "1800",
    }
    config = from_env(env)
    assert config.seeds == ("redis-node-1:7000", "redis-node-2:7001")
    assert (config.password, config.default_ttl, config.namespace, config.session_ttl) == ("pw", 600, "lms-test", 1800)
    defaults = from_env({"REDIS_NODE_1_HOST": "h"})
    assert (defaults.default_ttl, defaults.namespace, defaults.session_ttl) == (3600, "lms", 86400)
    with pytest.raises(ConfigError):
        from_env({})
    with pytest.raises(ConfigError):
        from_env({"REDIS_NODE_1_HOST": "h", "CACHE_DEFAULT_TTL": "soon"})


def test_from_env_numbers_nodes_from_0_or_1_and_names_what_to_set() -> None:
    # Numbering from 0 used to give "no seeds" with no hint: the loop started at 1.
    assert from_env({"REDIS_NODE_0_HOST": "a", "REDIS_NODE_0_PORT": "7000", "REDIS_NODE_1_HOST": "b"}).seeds == (
        "a:7000",
        "b:6379",
    )
    assert from_env({"REDIS_NODE_1_HOST": "a", "REDIS_NODE_3_HOST": "c"}).seeds == ("a:6379", "c:6379")
    with pytest.raises(ConfigError, match="set REDIS_NODE_1_HOST") as nothing:
        from_env({"REDIS_PASSWORD": "pw"})
    assert "REDIS_SENTINELS" in str(nothing.value)
    with pytest.raises(ConfigError, match="REDIS_NODE_2_PORT is set without REDIS_NODE_2_HOST"):
        from_env({"REDIS_NODE_1_HOST": "a", "REDIS_NODE_2_PORT": "7001"})
    with pytest.raises(ConfigError, match="REDIS_NODE_1_HOST/PORT"):
        from_env({"REDIS_NODE_1_HOST": "a", "REDIS_NODE_1_PORT": "seven"})


def test_from_env_reads_the_read_policy() -> None:
    config = from_env({"REDIS_NODE_1_HOST": "h", "CACHE_REPLICA_NAMESPACES": "content, catalog", "CACHE_READ_YOUR_WRITES": "2"})
    assert config.replica_namespaces == ("content", "catalog") and config.read_your_writes_window == 2
    assert config.replica_reads_allowed("content") and not config.replica_reads_allowed("lms")
    assert from_env({"REDIS_NODE_1_HOST": "h", "CACHE_REPLICA_NAMESPACES": "*"}).replica_reads_allowed("any")
    assert from_env({"REDIS_NODE_1_HOST": "h"}).replica_namespaces == ()  # masters only by default
    assert from_env({"REDIS_NODE_1_HOST": "h"}).replica_refresh_interval == 30
    assert from_env({"REDIS_NODE_1_HOST": "h", "CACHE_REPLICA_REFRESH": "5"}).replica_refresh_interval == 5
    with pytest.raises(ConfigError, match="replica_refresh_interval must be > 0"):
        from_env({"REDIS_NODE_1_HOST": "h", "CACHE_REPLICA_REFRESH": "0"})


# ------------------------------------------------------------------------------------ XFetch
def test_early_refresh_grows_near_expiry_and_with_compute_time() -> None:
    now = 1_000_000
    far = Entry("v", now + 60_000, 100, ())
    near = Entry("v", now + 50, 100, ())
    assert not refresh_early(far, 1.0, now, rand=lambda: 0.5)
    assert refresh_early(near, 1.0, now, rand=lambda: 0.5)  # 100 * ln 2 = 69 ms > 50 ms left
    assert not refresh_early(near, 0.0, now, rand=lambda: 0.5)  # beta 0: off
    assert not refresh_early(Entry("v", now + 50, 0, ()), 1.0, now)  # no compute time recorded
    assert refresh_early(far, 1.0, now + 60_000, rand=lambda: 0.0)  # expired: always


# ------------------------------------------------------------------- plans on a memory backend
def test_tags_are_checked_on_read_and_invalidation_deletes_only_the_tag(cache: Cache, backend: MemoryBackend) -> None:
    cache.set("profile:1", {"name": "Ada"}, tags=["user:1", "tenant:a"])
    cache.set("profile:2", {"name": "Bob"}, tags=["user:2", "tenant:a"])
    assert cache.invalidate_by_tags(["user:1"]) == 1
    assert cache.get("profile:1") is None
    assert cache.get("profile:2") == {"name": "Bob"}
    unlinked = [args for args in backend.log if args[0] == "UNLINK"]
    assert unlinked == [("UNLINK", "~tag:user:1")]  # O(tags): nothing else touched


def test_an_invalidated_entry_is_a_miss_beside_untagged_ones(cache: Cache, backend: MemoryBackend) -> None:
    """Reads skip the version check when no entry read carries a tag: a batch mixing untagged
    and tagged entries still checks the tagged ones."""
    cache.set("plain", 1)
    cache.set("tagged", 2, tags=["t"])
    assert cache.mget(["plain", "tagged"]) == {"plain": 1, "tagged": 2}
    cache.invalidate_by_tags(["t"])
    assert cache.mget(["plain", "tagged"]) == {"plain": 1}
    assert cache.mget(["tagged", "plain"]) == {"plain": 1}
    assert cache.get("plain") == 1 and cache.get("tagged") is None


def test_a_recreated_tag_version_never_revalidates_old_entries(cache: Cache, backend: MemoryBackend) -> None:
    cache.set("k", "old", tags=["t"])
    old_version = backend.data["~tag:t"]
    del backend.data["~tag:t"]  # evicted (allkeys-lru)
    assert cache.get("k") is None
    cache.set("other", "new", tags=["t"])  # recreates the version
    assert backend.data["~tag:t"] != old_version
    assert cache.get("k") is None and cache.get("other") == "new"


def test_tag_versions_outlive_their_entries(cache: Cache, backend: MemoryBackend) -> None:
    cache.set("a", 1, ttl=100, tags=["t"])
    cache.set("b", 2, ttl=10, tags=["t"])
    assert backend.ttl["~tag:t"] == 160_000  # longest entry + a minute, never shortened
    assert backend.ttl["lms:a"] == 100_000 and backend.ttl["lms:b"] == 10_000


def test_too_large_values_are_refused_before_any_io(backend: MemoryBackend) -> None:
    cache = Cache(CONFIG.with_options(max_value_bytes=1000, compress_threshold=0), backend=backend)
    with pytest.raises(ValueTooLargeError) as error:
        cache.mset({"ok": "x", "big": "y" * 2000}, tags=["t"])
    assert error.value.key == "big" and error.value.size > 2000
    assert backend.log == []


def test_reads_fail_open_and_count_errors_writes_configurable(cache: Cache, backend: MemoryBackend) -> None:
    backend.down = True
    assert cache.get("k", default="fallback") == "fallback"
    assert cache.mget(["a", "b"]) == {}
    assert cache.set("k", 1) is False
    assert cache.get_or_set("k", lambda: "from-db") == "from-db"
    with pytest.raises(CacheUnavailableError):
        cache.invalidate_by_tags(["t"])  # never silently skipped
    with pytest.raises(SessionUnavailableError) as error:
        cache.get_session("sid")
    assert "s3cret-pass" not in str(error.value)
    stats = cache.get_stats()
    assert stats["total"]["errors"] == 6 and "error" in stats["servers"]
    assert cache.get_stats()["total"]["errors"] == 7  # the failed INFO itself
    strict = Cache(CONFIG.with_options(fail_open_reads=False, fail_open_writes=False), backend=backend)
    with pytest.raises(CacheUnavailableError):
        strict.get("k")
    with pytest.raises(CacheUnavailableError):
        strict.set("k", 1)
    lenient = Cache(CONFIG.with_options(fail_open_sessions=True), backend=backend)
    assert lenient.get_session("sid") is None


def test_refusals_are_not_swallowed_by_fail_open(backend: MemoryBackend) -> None:
    def refuse(commands: Sequence[Command], replica: bool = False) -> list[Any]:
        raise redis.exceptions.NoPermissionError("this user has no permissions to run the 'get' command")

    backend.run = refuse  # type: ignore[method-assign]
    with pytest.raises(redis.exceptions.NoPermissionError):
        Cache(CONFIG, backend=backend).get("k")


def test_get_or_set_loads_once_then_hits(cache: Cache, backend: MemoryBackend) -> None:
    calls: list[int] = []

    def loader() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert cache.get_or_set("c", loader, tags=["t"]) == {"n": 1}
    assert cache.get_or_set("c", loader, tags=["t"]) == {"n": 1}
    assert len(calls) == 1
    assert "~lock:lms:c" not in backend.data  # released
    cache.invalidate_by_tags(["t"])
    assert cache.get_or_set("c", loader, tags=["t"]) == {"n": 2}


class LeaderFinishesFirst(MemoryBackend):
    """Between a follower's miss and its lock attempt, the leader stores the entry and releases
    its lock: the interleaving that made two threads load (the follower then won the free lock)."""

    def _one(self, args: tuple[Any, ...], options: Any) -> Any:
        if args[0] == "SET" and args[1] == "~lock:lms:c" and "lms:c" not in self.data:
            self.data["lms:c"] = encode_entry("from the leader", JsonSerializer(), (), int(time.time() * 1000) + 60_000, 300)
        return super()._one(args, options)


def test_the_lock_winner_reads_again_before_loading() -> None:
    backend = LeaderFinishesFirst()
    cache = Cache(CONFIG, backend=backend)
    calls: list[int] = []

    def loader() -> str:
        calls.append(1)
        return "loaded twice"

    assert cache.get_or_set("c", loader) == "from the leader"
    assert calls == [] and cache.get_stats()["namespaces"]["lms"]["loads"] == 0
    assert "~lock:lms:c" not in backend.data  # released


def test_a_failing_loader_releases_the_lock_and_raises(cache: Cache, backend: MemoryBackend) -> None:
    def broken() -> Any:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        cache.get_or_set("c", broken)
    assert "~lock:lms:c" not in backend.data


def test_a_follower_waits_for_the_leader_then_loads_itself_after_lock_wait(backend: MemoryBackend) -> None:
    cache = Cache(CONFIG.with_options(lock_wait=0.2), backend=backend)
    backend.data["~lock:lms:c"] = b"someone else"  # a leader that never finishes
    started = time.monotonic()
    assert cache.get_or_set("c", lambda: "mine") == "mine"
    assert 0.2 <= time.monotonic() - started < 2


def test_early_refresh_runs_the_loader_while_others_keep_the_value(cache: Cache, backend: MemoryBackend) -> None:
    # An entry 10 ms from expiry whose loader took 1 s: XFetch picks it for refresh (u = 0.5).
    now = int(time.time() * 1000)
    backend.data["lms:c"] = encode_entry("v1", JsonSerializer(), (), now + 10, 1000)
    core = Core(CONFIG)
    assert cache._run(core.get_or_set("c", 60, (), None, rand=lambda: 0.5), lambda: "v2") == "v2"
    assert cache.get("c") == "v2"
    backend.data["lms:c"] = encode_entry("v2", JsonSerializer(), (), now + 10, 1000)
    # While another caller holds the refresh lock, an early refresh returns the current value.
    backend.data["~lock:lms:c"] = b"other"
    assert cache._run(core.get_or_set("c", 60, (), None, rand=lambda: 0.5), lambda: "v3") == "v2"


def test_sessions_slide(cache: Cache, backend: MemoryBackend) -> None:
    cache.set_session("sid", {"user": 1}, ttl=100)
    assert backend.ttl["~session:lms:sid"] == 100_000
    assert cache.get_session("sid", sliding=True, ttl=500) == {"user": 1}
    assert backend.ttl["~session:lms:sid"] == 500_000
    assert cache.get_session("sid", sliding=False) == {"user": 1}
    assert backend.ttl["~session:lms:sid"] == 500_000
    assert cache.touch_session("sid", ttl=50) and backend.ttl["~session:lms:sid"] == 50_000
    assert cache.destroy_session("sid") and cache.get_session("sid") is None
    assert not cache.touch_session("sid")


def test_stats_per_namespace(cache: Cache) -> None:
    cache.set("a", 1)
    cache.set("a", 1, namespace="other")
    cache.get("a")
    cache.get("missing")
    cache.get("a", namespace="other")
    stats = cache.get_stats()
    assert (stats["namespaces"]["lms"]["hits"], stats["namespaces"]["lms"]["misses"]) == (1, 1)
    assert stats["namespaces"]["lms"]["hit_ratio"] == 0.5
    assert stats["namespaces"]["other"]["hits"] == 1
    assert stats["total"]["sets"] == 2
    assert stats["servers"]["server_hit_ratio"] == 0.75 and stats["servers"]["keys"] == 2


def test_summarize_info_sums_masters() -> None:
    infos = [{"keyspace_hits": 1, "keyspace_misses": 1, "evicted_keys": 2, "maxmemory_policy": "allkeys-lru"}] * 3
    summary = summarize_info(infos)
    assert (summary["masters"], summary["evicted_keys"], summary["server_hit_ratio"]) == (3, 6, 0.5)


def test_redaction_keeps_a_session_keys_namespace_and_never_its_id() -> None:
    from platform_cache.keys import Keys, redact_command, redact_key

    key = Keys("lms").session("tok-123")
    assert redact_key(key) == "~session:lms:<redacted>"
    assert redact_key("lms:course:42") == "lms:course:42"
    assert redact_command(["SET", key, '{"user": 7}', "EX", "3600"]) == ["SET", "~session:lms:<redacted>", "<redacted>"]
    assert redact_command(["GET", "lms:course:42"]) == ["GET", "lms:course:42"]


# ------------------------------------------------------------------------------- read policy
def reads(backend: MemoryBackend) -> list[bool]:
    """For each batch of GETs of entries sent since the last call, whether a replica may answer."""
    sent = [replica for replica, args in backend.round_trips if args[0][0] == "GET"]
    backend.round_trips.clear()
    return sent


def test_reads_go_to_masters_unless_the_policy_or_the_call_allows_replicas(backend: MemoryBackend) -> None:
    writer = Cache(CONFIG, backend=backend)
    writer.set("page", "v1", namespace="content")
    writer.set("page", "v1", namespace="lms")
    reader = Cache(CONFIG.with_options(replica_namespaces=("content",)), backend=backend)
    backend.round_trips.clear()
    assert reader.get("page", namespace="content") == "v1"
    assert reader.get("page", namespace="lms") == "v1"
    assert reader.mget(["page"], namespace="content") == {"page": "v1"}
    assert reader.get("page", namespace="lms", stale_ok=True) == "v1"
    assert reader.get("page", namespace="content", stale_ok=False) == "v1"
    assert reader.get_or_set("page", lambda: "loaded", namespace="content") == "v1"
    assert reads(backend) == [True, False, True, True, False, True]
    assert Cache(CONFIG, backend=backend).get("page", namespace="content") == "v1"
    assert reads(backend) == [False]  # the default policy: masters only


def test_sessions_never_read_from_replicas(backend: MemoryBackend) -> None:
    cache = Cache(CONFIG.with_options(replica_namespaces=("*",)), backend=backend)
    cache.set_session("sid", {"user": 1})
    assert cache.get_session("sid", sliding=False) == {"user": 1}
    assert cache.get_session("sid") == {"user": 1}
    assert cache.touch_session("sid")
    assert backend.round_trips and not any(replica for replica, _ in backend.round_trips)


def test_reads_after_own_writes_go_to_the_master_for_the_window(backend: MemoryBackend) -> None:
    cache = Cache(CONFIG.with_options(replica_namespaces=("*",), read_your_writes_window=0.2), backend=backend)
    Cache(CONFIG, backend=backend).set("other", "x")
    cache.set("mine", "x")
    backend.round_trips.clear()
    assert cache.get("mine") == "x" and cache.get("other") == "x"
    assert cache.mget(["mine", "other"]) == {"mine": "x", "other": "x"}  # one own key: all to the master
    assert reads(backend) == [False, True, False]
    time.sleep(0.25)
    assert cache.get("mine") == "x"
    assert reads(backend) == [True]
    cache.delete("mine")
    cache.get_or_set("loaded", lambda: 1)
    cache.get("mine")
    cache.get("loaded")
    assert reads(backend)[-2:] == [False, False]


def test_an_own_invalidation_is_never_read_back_from_a_replica(backend: MemoryBackend) -> None:
    """A replica that has not yet applied our UNLINK of a tag still holds its old version: the
    read through it would be a hit. An entry carrying a tag we just invalidated is read again from
    the master."""
    cache = Cache(CONFIG.with_options(replica_namespaces=("*",)), backend=backend)
    Cache(CONFIG, backend=backend).set("k", "v", tags=["t"])
    lagging = dict(backend.data)  # what a replica that missed the invalidation holds

    def run(commands: Sequence[Command], replica: bool = False) -> list[Any]:
        backend.round_trips.append((replica, [c.args for c in commands]))
        source = lagging if replica else backend.data
        return [source.get(c.args[1]) for c in commands]

    cache.invalidate_by_tags(["t"])
    backend.run = run  # type: ignore[method-assign]
    backend.round_trips.clear()
    assert cache.get("k") is None
    assert [replica for replica, _ in backend.round_trips] == [True, False]


def test_an_entry_and_its_known_tags_are_read_in_one_round_trip(backend: MemoryBackend) -> None:
    cache = Cache(CONFIG, backend=backend)
    cache.set("k", "v", tags=["a", "b"])
    backend.round_trips.clear()
    assert cache.get("k") == "v"
    assert backend.round_trips == [(False, [("GET", "lms:k"), ("GET", "~tag:a"), ("GET", "~tag:b")])]
    # Another process's client learns the tags on its first read, then needs one round trip.
    other = Cache(CONFIG, backend=backend)
    backend.round_trips.clear()
    assert other.get("k") == "v" and other.get("k") == "v"
    assert [len(batch) for _, batch in backend.round_trips] == [1, 2, 3]
    # A guess gone wrong (the entry was rewritten with another tag) costs a round trip, never a
    # wrong answer; an invalidated tag still makes the entry a miss.
    cache.set("k", "v2", tags=["c"])
    backend.round_trips.clear()
    assert other.get("k") == "v2"
    assert [batch for _, batch in backend.round_trips] == [
        [("GET", "lms:k"), ("GET", "~tag:a"), ("GET", "~tag:b")],
        [("GET", "~tag:c")],
    ]
    cache.invalidate_by_tags(["c"])
    assert other.get("k") is None and cache.get("k") is None


def test_a_memo_guess_never_revalidates_an_entry_whose_tag_was_evicted(backend: MemoryBackend) -> None:
    cache = Cache(CONFIG, backend=backend)
    cache.set("k", "v", tags=["t"])
    assert cache.get("k") == "v"
    del backend.data["~tag:t"]  # evicted under allkeys-lru
    assert cache.get("k") is None
    cache.set("other", "x", tags=["t"])  # recreates the version with a fresh value
    assert cache.get("k") is None and cache.get("other") == "x"


def test_the_read_your_writes_memory_prunes_expired_names_and_keeps_live_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from platform_cache.core import RecentWrites

    monkeypatch.setattr(RecentWrites, "LIMIT", 10)
    recent = RecentWrites(0.05)
    recent.add(f"old:{i}" for i in range(10))
    time.sleep(0.06)
    recent.add(f"new:{i}" for i in range(10))  # over the limit: the expired names go
    assert len(recent._until) == 10 and recent.any_of(["new:0"]) and not recent.any_of(["old:0"])
    recent.add(["new:10"])  # all live: no prune on every write, and nothing live is dropped
    assert recent._prune_at == 20 and all(recent.any_of([f"new:{i}"]) for i in range(11))
