"""An application starts while Redis is down: constructing the cache never connects, its calls
follow the failure policy (reads and writes fail open, sessions and invalidation fail closed), and
only bad configuration raises at construction. Real sockets: a port nobody listens on."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from platform_cache import AsyncCache, Cache, CacheUnavailableError, ConfigError, SessionUnavailableError


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def down_env(**more: str) -> dict[str, str]:
    return {"REDIS_NODE_1_HOST": "127.0.0.1", "REDIS_NODE_1_PORT": str(closed_port()), "REDIS_PASSWORD": "pw", **more}


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_the_sync_cache_starts_and_fails_open_while_redis_is_down(topology: str) -> None:
    env = down_env()
    if topology == "sentinel":
        env.update(REDIS_SENTINELS=f"127.0.0.1:{closed_port()}", REDIS_SENTINEL_GROUPS="redis-master-1")
    cache = Cache.from_env(env)  # used to raise RedisClusterException: no reachable node
    started = time.monotonic()
    assert cache.get("k", default="from-db") == "from-db"
    # Retries give up within about a second (sentinels down used to block a call ~16 s: redis-py's
    # default sentinel retry, backoff up to 10 s, nested in ours).
    assert time.monotonic() - started < 3
    assert cache.mget(["a", "b"]) == {}
    assert cache.set("k", 1) is False
    assert cache.get_or_set("k", lambda: "loaded") == "loaded"
    with pytest.raises(SessionUnavailableError):
        cache.get_session("sid")
    with pytest.raises(CacheUnavailableError):
        cache.invalidate_by_tags(["t"])
    assert cache.get_stats()["total"]["errors"] >= 6
    cache.close()


def test_calls_fail_fast_between_connection_attempts() -> None:
    # A black-holed seed would cost socket_connect_timeout per call; after a failed attempt,
    # calls within RECONNECT_INTERVAL fail at once.
    cache = Cache.from_env(down_env())
    cache.get("k")
    started = time.monotonic()
    for _ in range(50):
        cache.get("k")
    assert time.monotonic() - started < 0.5
    assert cache.get_stats()["total"]["errors"] == 51


def test_the_async_cache_starts_and_fails_open_while_redis_is_down() -> None:
    async def main() -> None:
        async with AsyncCache.from_env(down_env()) as cache:
            assert await cache.get("k", default="from-db") == "from-db"
            assert await cache.set("k", 1) is False
            with pytest.raises(SessionUnavailableError):
                await cache.set_session("sid", {})

    asyncio.run(main())


def test_only_bad_configuration_raises_at_construction() -> None:
    with pytest.raises(ConfigError, match="REDIS_NODE_0_PORT is set without REDIS_NODE_0_HOST"):
        Cache.from_env({"REDIS_NODE_0_PORT": "7000"})
    with pytest.raises(ConfigError, match="not host:port"):
        Cache.from_stack_output({"seeds": ["redis-node-1"], "password": "pw"})
