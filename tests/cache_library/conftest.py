"""platform_cache on real sandboxes (ports 78xx), through both clients: every sync test case
runs against `Cache` and against `AsyncCache` through a small adapter that drives the
coroutines on the adapter's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cachelayer.sandbox.local import LocalSandbox
from integration.conftest import sandbox_factory  # noqa: F401  (the fixture, re-exported)
from platform_cache import AsyncCache, Cache, CacheConfig


def cache_config(sandbox: LocalSandbox, **options: Any) -> CacheConfig:
    """What the stack's `connection` output holds for this sandbox."""
    topology = sandbox.topology
    return CacheConfig(
        seeds=tuple(n.endpoint for n in topology.masters),
        user="app",
        password=sandbox.passwords.app,
        sentinels=tuple(s.endpoint for s in topology.sentinels),
        sentinel_groups=tuple(m.group for m in topology.masters) if topology.kind == "sentinel" else (),
    ).with_options(**options)


class AsyncAdapter:
    """AsyncCache behind sync methods: each call runs to completion on this adapter's loop."""

    def __init__(self, config: CacheConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.cache: AsyncCache = self.loop.run_until_complete(self._make(config))

    @staticmethod
    async def _make(config: CacheConfig) -> AsyncCache:
        return AsyncCache(config)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.cache, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        self.loop.run_until_complete(self.cache.close())
        self.loop.close()


def make_client(flavour: str, config: CacheConfig) -> Any:
    return Cache(config) if flavour == "sync" else AsyncAdapter(config)


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client_factory(flavour: str) -> Iterator[Callable[..., Any]]:
    """make(sandbox, **options) -> a Cache or an adapted AsyncCache, closed after the test."""
    made: list[Any] = []

    def make(sandbox: LocalSandbox, **options: Any) -> Any:
        client = make_client(flavour, cache_config(sandbox, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
