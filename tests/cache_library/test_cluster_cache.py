"""platform_cache on a real sandbox cluster (3 masters + 3 replicas, the `app` ACL user, no Lua),
each case through the sync and the asyncio client."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cachelayer.sandbox.local import LocalSandbox
from integration.conftest import cluster_client
from platform_cache import AsyncCache, Cache, SessionUnavailableError, ValueTooLargeError

from .conftest import cache_config

pytestmark = pytest.mark.integration

BASE = 7800


@pytest.fixture(scope="module")
def sandbox(sandbox_factory: Callable[..., LocalSandbox]) -> LocalSandbox:
    sandbox = sandbox_factory(BASE)
    sandbox.up()
    return sandbox


@pytest.fixture(scope="module")
def admin(sandbox: LocalSandbox) -> Iterator[RedisCluster]:
    client = cluster_client(sandbox, user="admin")
    yield client
    client.close()


_counter = iter(range(10**6))


@pytest.fixture
def ns(flavour: str) -> str:
    """A namespace of the test's own: the module shares one cluster."""
    return f"t{next(_counter)}-{flavour}"


@pytest.fixture
def own_ns() -> str:
    """The same, for tests that pick their client themselves (not run once per flavour)."""
    return f"t{next(_counter)}"


def test_set_get_delete_round_trip_values(sandbox: LocalSandbox, client_factory: Callable[..., Any], ns: str) -> None:
    cache = client_factory(sandbox)
    values: dict[str, Any] = {
        "json": {"title": "Intro", "lessons": [1, 2, 3], "price": 9.5, "draft": False, "tutor": None},
        "unicode": "Grüße, 学习, ✓ — ok",
        "binary": bytes(range(256)) * 8,
        "big": "x" * 100_000,  # compressed on the wire
        "null": None,
    }
    for key, value in values.items():
        assert cache.set(key, value, namespace=ns)
    for key, value in values.items():
        assert cache.get(key, namespace=ns) == value
    assert cache.get("absent", namespace=ns, default="dflt") == "dflt"
    assert cache.delete("json", "unicode", "absent", namespace=ns) == 2
    assert cache.get("json", namespace=ns) is None
    assert cache.get("null", namespace=ns, default="dflt") is None  # a stored null is a hit, not the default


def test_keys_are_readable_with_the_ttl_asked(
    sandbox: LocalSandbox, client_factory: Callable[..., Any], admin: RedisCluster, ns: str
) -> None:
    cache = client_factory(sandbox)
    cache.set("course:1", {"t": "a"}, ttl=120, namespace=ns)
    cache.set("course:2", {"t": "b"}, namespace=ns)  # default TTL 3600
    assert 119_000 < admin.pttl(f"{ns}:course:1") <= 120_000
    assert 3_590_000 < admin.pttl(f"{ns}:course:2") <= 3_600_000
    cache.set("short", "v", ttl=0.3, namespace=ns)
    assert cache.get("short", namespace=ns) == "v"
    time.sleep(0.5)
    assert cache.get("short", namespace=ns) is None


def test_mset_mget_across_slots_and_masters(
    sandbox: LocalSandbox, client_factory: Callable[..., Any], admin: RedisCluster, ns: str
) -> None:
    cache = client_factory(sandbox)
    mapping = {f"course:{i}": {"id": i, "name": f"Course {i}"} for i in range(300)}
    assert cache.mset(mapping, ttl=600, tags=["catalog"], namespace=ns)
    nodes = {admin.get_node_from_key(f"{ns}:{k}").name for k in mapping}
    assert len(nodes) == 3  # no hash tag pins a namespace to one shard
    found = cache.mget([*mapping, "course:missing"], namespace=ns)
    assert found == mapping


def test_namespaces_are_isolated(sandbox: LocalSandbox, client_factory: Callable[..., Any], ns: str) -> None:
    cache = client_factory(sandbox)
    cache.set("profile:1", "in-a", namespace=f"{ns}-a")
    cache.set("profile:1", "in-b", namespace=f"{ns}-b")
    assert cache.get("profile:1", namespace=f"{ns}-a") == "in-a"
    assert cache.get("profile:1", namespace=f"{ns}-b") == "in-b"
    assert cache.delete("profile:1", namespace=f"{ns}-a") == 1
    assert cache.get("profile:1", namespace=f"{ns}-b") == "in-b"
    assert cache.mget(["profile:1"], namespace=f"{ns}-a") == {}


def test_tag_invalidation_across_slots_and_namespaces(
    sandbox: LocalSandbox, client_factory: Callable[..., Any], admin: RedisCluster, ns: str
) -> None:
    cache = client_factory(sandbox)
    user, other = f"user:{ns}:1", f"user:{ns}:2"
    cache.mset({f"p{i}": i for i in range(100)}, tags=[user], namespace=f"{ns}-profiles")
    cache.mset({f"e{i}": i for i in range(100)}, tags=[user, "enrolments"], namespace=f"{ns}-enrol")
    cache.set("keep", "kept", tags=[other], namespace=f"{ns}-profiles")
    slots = {key_slot(f"{ns}-profiles:p{i}".encode()) for i in range(100)}
    assert len(slots) > 50
    def entries() -> int:
        return sum(1 for _ in admin.scan_iter(match=f"{ns}-*", count=1000))

    assert entries() == 201
    assert cache.invalidate_by_tags([user]) == 1
    assert cache.mget([f"p{i}" for i in range(100)], namespace=f"{ns}-profiles") == {}
    assert cache.mget([f"e{i}" for i in range(100)], namespace=f"{ns}-enrol") == {}
    assert cache.get("keep", namespace=f"{ns}-profiles") == "kept"
    # O(tags): the invalidation removed one key (the version) and touched none of the entries,
    # which expire with their TTL (or are overwritten by the next set).
    assert admin.exists(f"~tag:{user}") == 0
    assert entries() == 201
    # Entries written after the invalidation are valid again, under a new version.
    cache.set("p1", "fresh", tags=[user], namespace=f"{ns}-profiles")
    assert cache.get("p1", namespace=f"{ns}-profiles") == "fresh"


def test_invalidation_while_entries_are_being_written(sandbox: LocalSandbox, flavour: str, ns: str) -> None:
    """Writes that completed before the invalidation started read as misses afterwards; writes
    that started after it finished read as hits."""
    config = cache_config(sandbox)
    tag = f"live:{ns}"
    writes: dict[str, tuple[float, float, int]] = {}  # key -> (started, completed, value) of its last write
    stop = threading.Event()

    def writer() -> None:
        from .conftest import make_client

        client = make_client(flavour, config)
        try:
            i = 0
            while not stop.is_set():
                key = f"k{i % 5000}"  # mostly distinct keys: most keep a write from before
                started = time.monotonic()
                assert client.set(key, i, tags=[tag], namespace=ns)
                writes[key] = (started, time.monotonic(), i)
                i += 1
        finally:
            client.close()

    thread = threading.Thread(target=writer)
    thread.start()
    invalidator = Cache(config)
    try:
        time.sleep(0.3)
        begun = time.monotonic()
        invalidator.invalidate_by_tags([tag])
        ended = time.monotonic()
        time.sleep(0.3)
        stop.set()
        thread.join()
        found = invalidator.mget(list(writes), namespace=ns)
    finally:
        invalidator.close()
    stale = [k for k, (_, completed, _) in writes.items() if completed < begun and k in found]
    lost = [k for k, (started, _, _) in writes.items() if started > ended and k not in found]
    assert not stale and not lost, (stale, lost)
    assert all(found[k] == v for k, (_, _, v) in writes.items() if k in found)
    assert any(completed < begun for _, completed, _ in writes.values())  # the case was exercised


def test_values_over_the_bulk_limit_are_refused_client_side(
    sandbox: LocalSandbox, client_factory: Callable[..., Any], admin: RedisCluster, ns: str
) -> None:
    cache = client_factory(sandbox)  # default limit: the 2gb nodes' 32mb proto-max-bulk-len
    with pytest.raises(ValueTooLargeError) as error:
        cache.set("huge", os.urandom(33 * 1024 * 1024), namespace=ns)
    assert error.value.limit < 32 * 1024 * 1024 < error.value.size
    assert admin.exists(f"{ns}:huge") == 0
    assert cache.set("large", os.urandom(8 * 1024 * 1024), namespace=ns)  # under the limit: stored


def test_single_flight_across_threads(sandbox: LocalSandbox, own_ns: str) -> None:
    ns = own_ns
    cache = Cache(cache_config(sandbox))
    calls: list[float] = []
    results: list[Any] = []

    def loader() -> dict[str, int]:
        calls.append(time.monotonic())
        time.sleep(0.3)  # a slow query
        return {"rows": 42}

    def worker() -> None:
        results.append(cache.get_or_set("report", loader, ttl=60, tags=[f"rep:{ns}"], namespace=ns))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(calls) == 1
        assert results == [{"rows": 42}] * 20
        assert cache.get_stats()["namespaces"][ns]["loads"] == 1
    finally:
        cache.close()


def test_single_flight_across_asyncio_tasks(sandbox: LocalSandbox, own_ns: str) -> None:
    ns = own_ns
    calls: list[float] = []

    async def loader() -> dict[str, int]:
        calls.append(time.monotonic())
        await asyncio.sleep(0.3)
        return {"rows": 7}

    async def main() -> list[Any]:
        async with AsyncCache(cache_config(sandbox)) as cache:
            return list(await asyncio.gather(*(cache.get_or_set("report", loader, ttl=60, namespace=ns) for _ in range(20))))

    assert asyncio.run(main()) == [{"rows": 7}] * 20
    assert len(calls) == 1


def test_sessions(sandbox: LocalSandbox, client_factory: Callable[..., Any], admin: RedisCluster, ns: str) -> None:
    cache = client_factory(sandbox)
    sid = f"sess-{ns}"
    cache.set_session(sid, {"user_id": 42, "roles": ["student"]}, ttl=100)
    key = f"~session:lms:{sid}"
    assert 99_000 < admin.pttl(key) <= 100_000
    assert cache.get_session(sid, sliding=True, ttl=500) == {"user_id": 42, "roles": ["student"]}
    assert 499_000 < admin.pttl(key) <= 500_000
    assert cache.get_session(sid, sliding=False) == {"user_id": 42, "roles": ["student"]}
    assert admin.pttl(key) <= 500_000
    assert cache.touch_session(sid, ttl=50) and admin.pttl(key) <= 50_000
    assert cache.destroy_session(sid)
    assert cache.get_session(sid) is None and not cache.touch_session(sid)


def test_stats(sandbox: LocalSandbox, client_factory: Callable[..., Any], ns: str) -> None:
    cache = client_factory(sandbox)
    cache.set("a", 1, namespace=ns)
    cache.get("a", namespace=ns)
    cache.get("b", namespace=ns)
    cache.mget(["a", "b", "c"], namespace=ns)
    cache.invalidate_by_tags([f"x:{ns}"])
    stats = cache.get_stats()
    mine = stats["namespaces"][ns]
    assert (mine["hits"], mine["misses"], mine["sets"], mine["hit_ratio"]) == (2, 3, 1, 0.4)
    assert stats["total"]["invalidations"] == 1 and stats["total"]["errors"] == 0
    servers = stats["servers"]
    assert servers["masters"] == 3 and servers["maxmemory_policy"] == ["allkeys-lru"]
    assert servers["keys"] > 0 and servers["keyspace_hits"] > 0


def test_a_wrong_password_starts_fails_open_and_says_what_to_fix(
    sandbox: LocalSandbox, client_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Used to raise RedisClusterException ("cannot be connected") from the constructor.
    cache = client_factory(sandbox, password="not-the-password")
    assert cache.get("k", default="from-db") == "from-db"
    assert cache.set("k", 1) is False
    with pytest.raises(SessionUnavailableError, match=r"refused user 'app'.*REDIS_PASSWORD") as refused:
        cache.get_session("sid")
    assert "not-the-password" not in str(refused.value)
    assert "REDIS_PASSWORD" in caplog.text and "not-the-password" not in caplog.text
    assert cache.get_stats()["total"]["errors"] >= 3
