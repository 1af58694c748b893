"""Benchmark platform_cache against raw redis-py on the same sandbox cluster, in the same run.

    venv/bin/python benchmarks/cache_library.py [--ops 5000]

Starts the dev stack's cluster as local processes on ports 7850-7855 and prints a table:
get/set ops/s (ours / raw RedisCluster get/set, target >= 0.8), mget/mset of 100 keys (ours /
redis-py's mget_nonatomic/mset_nonatomic), and the cost of invalidating one tag on 1k vs 100k
entries, ours (delete the tag's version key) beside a tag-set baseline (SADD each entry key to a
set per tag; invalidation = SMEMBERS + UNLINK of every member, slot by slot, + the set).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "cache_library" / "src")]

from redis.cluster import ClusterNode, RedisCluster  # noqa: E402

from cachelayer.config.stack_file import read_stack_config  # noqa: E402
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings  # noqa: E402
from platform_cache import Cache, CacheConfig  # noqa: E402

BASE_PORT = 7850
VALUE = {"id": 42, "title": "Introduction to algorithms", "lessons": list(range(10)), "published": True}
TTL = 600


def compare(ops: int, ours: Callable[[int], object], base: Callable[[int], object], rounds: int = 5) -> tuple[float, float]:
    """Best ops/s of each over rounds that alternate ours and the baseline, so a busy moment of
    the machine hits both alike."""
    best = [0.0, 0.0]
    for _ in range(rounds):
        for side, fn in enumerate((ours, base)):
            started = time.perf_counter()
            for i in range(ops):
                fn(i)
            best[side] = max(best[side], ops / (time.perf_counter() - started))
    return best[0], best[1]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def tagset_invalidate(raw: RedisCluster, tag: str) -> None:
    members = raw.smembers(f"tagset:{tag}")
    keys = list(members)
    for start in range(0, len(keys), 1000):
        raw.unlink(*keys[start : start + 1000])  # redis-py splits it by slot (no CROSSSLOT)
    raw.delete(f"tagset:{tag}")


def tagset_populate(raw: RedisCluster, tag: str, count: int) -> None:
    payload = json.dumps(VALUE)
    for start in range(0, count, 1000):
        pipe = raw.pipeline(transaction=False)
        for i in range(start, min(start + 1000, count)):
            pipe.set(f"ts:{tag}:{i}", payload, px=TTL * 1000)
            pipe.sadd(f"tagset:{tag}", f"ts:{tag}:{i}")
        pipe.execute()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=5000, help="operations per get/set round")
    args = parser.parse_args()

    config = read_stack_config("dev")
    config["redis"] = {**dict(config.get("redis") or {}), "base_port": BASE_PORT}
    settings, merged = sandbox_settings(config, "dev", topology="cluster")
    sandbox = LocalSandbox(settings, Path(tempfile.mkdtemp(prefix="cache-bench-")), config=merged)
    sandbox.up()
    try:
        seeds = tuple(n.endpoint for n in sandbox.topology.masters)
        cache = Cache(CacheConfig(seeds=seeds, password=sandbox.passwords.app, namespace="bench"))
        raw = RedisCluster(
            startup_nodes=[ClusterNode(*n.endpoint.rsplit(":", 1)) for n in sandbox.topology.masters],
            username="app",
            password=sandbox.passwords.app,
        )
        rows: list[tuple[str, str, str, str, str]] = []
        n = args.ops

        def ratio_row(metric: str, ours: float, base: float, unit: str, target: str) -> None:
            rows.append((metric, f"{ours:,.0f} {unit}", f"{base:,.0f} {unit}", f"{ours / base:.2f}", target))

        keys = [f"course:{i}" for i in range(1000)]
        ours_set, raw_set = compare(
            n,
            lambda i: cache.set(keys[i % 1000], VALUE, ttl=TTL),
            lambda i: raw.set(f"bench:{keys[i % 1000]}", json.dumps(VALUE), px=TTL * 1000),
        )
        ours_get, raw_get = compare(
            n, lambda i: cache.get(keys[i % 1000]), lambda i: json.loads(raw.get(f"bench:{keys[i % 1000]}") or b"null")
        )
        ratio_row("set (JSON value, TTL)", ours_set, raw_set, "ops/s", ">= 0.8")
        ratio_row("get (hit)", ours_get, raw_get, "ops/s", ">= 0.8")
        cache.mset({k: VALUE for k in keys}, ttl=TTL, tags=["catalog"], namespace="tagged")
        ours_tagged, raw_get2 = compare(
            n,
            lambda i: cache.get(keys[i % 1000], namespace="tagged"),
            lambda i: json.loads(raw.get(f"bench:{keys[i % 1000]}") or b"null"),
        )
        ratio_row("get (hit, 1 tag checked)", ours_tagged, raw_get2, "ops/s", "2 round trips: >= 0.4")

        batches = [[f"course:{(b * 100 + i) % 1000}" for i in range(100)] for b in range(10)]
        mapping = [{k: VALUE for k in batch} for batch in batches]
        raw_mapping = [{f"bench:{k}": json.dumps(VALUE) for k in batch} for batch in batches]
        m = max(50, n // 50)
        ours_mset, raw_mset = compare(
            m, lambda i: cache.mset(mapping[i % 10], ttl=TTL), lambda i: raw.mset_nonatomic(raw_mapping[i % 10])
        )
        ours_mget, raw_mget = compare(
            m,
            lambda i: cache.mget(batches[i % 10]),
            lambda i: [json.loads(v or b"null") for v in raw.mget_nonatomic([f"bench:{k}" for k in batches[i % 10]])],
        )
        ratio_row("mset 100 keys (ours with TTL)", ours_mset, raw_mset, "batches/s", "mset_nonatomic")
        ratio_row("mget 100 keys", ours_mget, raw_mget, "batches/s", "mget_nonatomic")

        invalidation: dict[int, tuple[float, float]] = {}
        for count in (1_000, 100_000):
            tag = f"size{count}"
            for start in range(0, count, 1000):
                cache.mset({f"e{count}:{i}": VALUE for i in range(start, min(start + 1000, count))}, ttl=TTL, tags=[tag])

            def ours_once(tag: str = tag) -> float:
                # The invalidation alone: a probe set recreates the version each time.
                cache.set("probe", 1, tags=[tag])
                return timed(lambda: cache.invalidate_by_tags([tag]))

            ours = statistics.median(ours_once() for _ in range(7))
            assert cache.get(f"e{count}:0") is None
            tagset_populate(raw, tag, count)
            baseline = timed(partial(tagset_invalidate, raw, tag))
            invalidation[count] = (max(ours, 1e-6), baseline)
        for count, (ours, baseline) in invalidation.items():
            rows.append(
                (f"invalidate 1 tag on {count:,} entries", f"{ours * 1000:.2f} ms", f"{baseline * 1000:.1f} ms (tag set)",
                 f"{baseline / ours:,.0f}x faster", "flat")
            )  # fmt: skip
        growth_ours = invalidation[100_000][0] / invalidation[1_000][0]
        growth_base = invalidation[100_000][1] / invalidation[1_000][1]
        rows.append(("100k / 1k invalidation cost", f"{growth_ours:.1f}x", f"{growth_base:.1f}x", "", "ours ~1x"))
        raw.close()
        cache.close()
    finally:
        sandbox.down()

    header = ("metric", "platform_cache", "baseline (redis-py)", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
