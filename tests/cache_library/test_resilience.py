"""platform_cache under stress on real sandboxes: a tag version evicted under memory pressure,
a master killed in the middle of a read/write loop, and the sentinel topology."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.sandbox.local import LocalSandbox
from integration.conftest import cluster_nodes, wait_until
from platform_cache import AsyncCache, Cache
from support.sandbox_processes import kill

from .conftest import cache_config

pytestmark = pytest.mark.integration


def binary_admin(sandbox: LocalSandbox) -> RedisCluster:
    """The admin user, replies as bytes (tag versions are binary)."""
    return RedisCluster(
        startup_nodes=[ClusterNode(n.address, n.port) for n in sandbox.topology.nodes],
        username="admin",
        password=sandbox.passwords.admin,
        socket_timeout=2,
    )


def test_an_evicted_tag_version_invalidates_and_never_revalidates(
    sandbox_factory: Callable[..., LocalSandbox], client_factory: Callable[..., Any], flavour: str
) -> None:
    # 8mb nodes, the smallest backlog the settings accept, no client eviction. volatile-lru
    # instead of the stack's allkeys-lru only so the entry itself can be kept out of eviction
    # (PERSIST below): LRU is approximate, and an evicted entry would leave nothing to check.
    sandbox = sandbox_factory(
        7810 if flavour == "sync" else 7840,
        maxmemory="8mb",
        repl_backlog_size="1mb",
        maxmemory_clients="0",
        maxmemory_policy="volatile-lru",
    )
    sandbox.up()
    cache = client_factory(sandbox)
    admin = binary_admin(sandbox)
    try:
        assert cache.set("profile:1", {"name": "Ada"}, ttl=3600, tags=["user:1"])
        assert cache.get("profile:1") == {"name": "Ada"}
        assert admin.persist("lms:profile:1")  # not volatile: never chosen for eviction
        old_version = admin.get("~tag:user:1")
        filler = 0
        # Fill the nodes with incompressible values (with a TTL, so they can be evicted) until
        # the version key, which nothing reads, is evicted.
        while admin.exists("~tag:user:1"):
            assert filler < 2000, "the tag version was never evicted"
            cache.mset({f"fill:{filler}:{i}": os.urandom(20_000) for i in range(10)}, ttl=3600)
            filler += 1
        assert admin.exists("lms:profile:1"), "the entry was evicted too; the case was not exercised"
        assert cache.get_stats()["servers"]["evicted_keys"] > 0
        assert cache.get("profile:1") is None
        # The version comes back with a fresh value: the old entry stays invalid.
        assert cache.set("profile:2", {"name": "Bob"}, tags=["user:1"])
        assert admin.get("~tag:user:1") not in (None, old_version)
        assert cache.get("profile:1") is None
        assert cache.get("profile:2") == {"name": "Bob"}
    finally:
        admin.close()
        sandbox.down()


def test_a_master_killed_mid_loop(sandbox_factory: Callable[..., LocalSandbox]) -> None:
    """A sync and an asyncio client read and write through a master's SIGKILL and failover:
    nothing raises to the application (reads and writes fail open), no read returns a value that
    was never written to that key, and both are back to full service once the replica has taken
    over. (A read may return the key's previous value: its last write failed open, or was
    acknowledged by the killed master and not yet replicated, as Redis replicates asynchronously.)"""
    sandbox = sandbox_factory(7820, cluster_node_timeout=2000)
    sandbox.up()
    config = cache_config(sandbox)
    stop = threading.Event()
    outcomes: dict[str, list[tuple[float, float, bool]]] = {"sync": [], "async": []}
    wrong: list[Any] = []
    crashed: list[BaseException] = []

    def record(flavour: str, started: float, ok: bool) -> None:
        outcomes[flavour].append((started, time.monotonic(), ok))

    def sync_loop() -> None:
        cache = Cache(config)
        try:
            i = 0
            while not stop.is_set():
                key = f"s{i % 200}"
                started = time.monotonic()
                written = cache.set(key, i, namespace="loop")
                value = cache.get(key, namespace="loop")
                if value is not None and value % 200 != i % 200:
                    wrong.append((key, i, value))
                record("sync", started, written and value == i)
                i += 1
        except BaseException as error:
            crashed.append(error)
        finally:
            cache.close()

    async def async_main() -> None:
        async with AsyncCache(config) as cache:
            i = 0
            while not stop.is_set():
                key = f"a{i % 200}"
                started = time.monotonic()
                written = await cache.set(key, i, namespace="loop")
                value = await cache.get(key, namespace="loop")
                if value is not None and value % 200 != i % 200:
                    wrong.append((key, i, value))
                record("async", started, written and value == i)
                i += 1

    def async_loop() -> None:
        try:
            asyncio.run(async_main())
        except BaseException as error:
            crashed.append(error)

    threads = [threading.Thread(target=sync_loop), threading.Thread(target=async_loop)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        victim = sandbox.topology.masters[0]
        killed_at = time.monotonic()
        kill(sandbox, victim.name)
        survivors = [n.port for n in sandbox.topology.nodes if n.port != victim.port]

        def covered() -> bool:
            # Every survivor sees all slots served by live masters, none by the victim.
            return all(
                sum(
                    int(high) - int(low) + 1
                    for endpoint, d in cluster_nodes(sandbox, port).items()
                    if "master" in d["flags"] and "fail" not in d["flags"] and endpoint != victim.endpoint
                    for low, high in d["slots"]
                )
                == TOTAL_SLOTS
                for port in survivors
            )

        wait_until(covered, 30, "the replica to take over the killed master's slots")
        recovered_at = time.monotonic()
        print(f"failover took {recovered_at - killed_at:.2f} s")
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not crashed, crashed
    assert not wrong, wrong[:5]
    for flavour, results in outcomes.items():
        before = [ok for _, end, ok in results if end < killed_at]
        # Felt: an operation overlapping the outage failed (fail-open) or waited in redis-py's retries.
        felt = [ok is False or end - start > 0.5 for start, end, ok in results if end > killed_at and start < recovered_at]
        after = [ok for start, _, ok in results if start > recovered_at + 1.5]
        slowest = max(end - start for start, end, _ in results)
        print(f"{flavour}: {len(results)} loops, slowest {slowest:.2f} s, {felt.count(True)} felt the failover")
        assert before and all(before), flavour
        assert any(felt), f"{flavour}: the failover was not felt; the case was not exercised"
        assert slowest < 10, f"{flavour}: an operation blocked {slowest:.1f} s"
        assert len(after) > 50 and all(after), f"{flavour}: {after.count(False)} failures after recovery"


SENTINEL_BASE = 7830


def test_sentinel_topology(sandbox_factory: Callable[..., LocalSandbox], client_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(
        SENTINEL_BASE, topology="sentinel", sentinel={"down_after_milliseconds": 1000, "failover_timeout": 10000}
    )
    sandbox.up()
    try:
        cache = client_factory(sandbox)
        mapping = {f"course:{i}": {"id": i} for i in range(90)}
        assert cache.mset(mapping, tags=["catalog"], namespace="sen")
        assert cache.mget(list(mapping), namespace="sen") == mapping
        # Keys spread over every group's master.
        for master in sandbox.topology.masters:
            with sandbox.admin_client(master) as admin:
                assert admin.dbsize() > 10, master.group
        cache.set("profile:1", "Ada", tags=["user:1"], namespace="sen")
        assert cache.invalidate_by_tags(["catalog"]) == 1
        assert cache.mget(list(mapping), namespace="sen") == {}
        assert cache.get("profile:1", namespace="sen") == "Ada"
        assert cache.get_or_set("report", lambda: [1, 2], namespace="sen") == [1, 2]
        cache.set_session("sid", {"user": 1})
        assert cache.get_session("sid") == {"user": 1}
        assert cache.get_stats()["servers"]["masters"] == 3
    finally:
        sandbox.down()
