"""The asyncio cache: the same plans as client.py, performed with redis.asyncio."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel

from .codec import Serializer
from .config import CacheConfig, from_env, from_stack_output
from .connect import backoff, connection_kwargs, endpoints, shard_of
from .core import Batch, Command, Core, Load, Plan, ServerInfo, Sleep

T = TypeVar("T")
Loader = Callable[[], Any] | Callable[[], Awaitable[Any]]


class AsyncBackend(Protocol):
    async def run(self, commands: Sequence[Command]) -> list[Any]: ...

    async def info(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class AsyncClusterBackend:
    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._ready = False
        self._lock: asyncio.Lock | None = None

    async def _initialize(self) -> None:
        # Concurrent first commands would each initialize the client and close connections the
        # others are using ("Connection closed by server"): initialize once, before any command.
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._ready:
                await self.client.initialize()
                self._ready = True

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        if not self._ready:
            await self._initialize()
        if len(commands) == 1:
            (c,) = commands
            return [await self.client.execute_command(*c.args, **c.options)]
        if all(c.args[0] == "GET" and len(c.args) == 2 for c in commands):
            # redis-py's own slot-grouped MGETs: fewer, larger commands than a pipeline of GETs.
            return list(await self.client.mget_nonatomic([c.args[1] for c in commands]))
        pipe = self.client.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c.args, **c.options)
        return list(await pipe.execute())

    async def info(self) -> list[dict[str, Any]]:
        if not self._ready:
            await self._initialize()
        replies = await self.client.info(target_nodes=RedisCluster.PRIMARIES)
        if replies and all(isinstance(v, dict) for v in replies.values()) and "redis_version" not in replies:
            return list(replies.values())
        return [replies]

    async def close(self) -> None:
        await self.client.aclose()


class AsyncShardedBackend:
    def __init__(self, masters: Sequence[Redis]) -> None:
        self.masters = list(masters)

    async def run(self, commands: Sequence[Command]) -> list[Any]:
        by_shard: dict[int, list[int]] = {}
        for i, c in enumerate(commands):
            by_shard.setdefault(shard_of(c.args[1], len(self.masters)), []).append(i)

        async def on_shard(shard: int, indexes: list[int]) -> list[Any]:
            pipe = self.masters[shard].pipeline(transaction=False)
            for i in indexes:
                pipe.execute_command(*commands[i].args, **commands[i].options)
            return list(await pipe.execute())

        results = await asyncio.gather(*(on_shard(s, ix) for s, ix in by_shard.items()))
        replies: list[Any] = [None] * len(commands)
        for indexes, result in zip(by_shard.values(), results, strict=True):
            for i, reply in zip(indexes, result, strict=True):
                replies[i] = reply
        return replies

    async def info(self) -> list[dict[str, Any]]:
        return [dict(await master.info()) for master in self.masters]

    async def close(self) -> None:
        for master in self.masters:
            await master.aclose()


def connect_async(config: CacheConfig) -> AsyncBackend:
    kwargs = connection_kwargs(config)
    retry = Retry(backoff(config), config.retry.retries)
    if config.topology == "sentinel":
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k not in ("decode_responses", "client_name")}
        sentinel = Sentinel(endpoints(config.sentinels), sentinel_kwargs=sentinel_kwargs, retry=retry, **kwargs)
        return AsyncShardedBackend([sentinel.master_for(group) for group in config.sentinel_groups])
    kwargs.pop("health_check_interval")  # the asyncio cluster client takes it per node only
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in endpoints(config.seeds)], retry=retry, **kwargs
    )
    return AsyncClusterBackend(client)


class AsyncCache:
    """The platform's cache (asyncio). Create it inside the event loop that uses it."""

    def __init__(
        self, config: CacheConfig, serializer: Serializer | None = None, backend: AsyncBackend | None = None
    ) -> None:
        self.config = config.validate()
        self.core = Core(config, serializer)
        self.backend = backend or connect_async(config)

    @classmethod
    def from_stack_output(cls, connection: str | Mapping[str, Any], **options: Any) -> AsyncCache:
        return cls(from_stack_output(connection, **options))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> AsyncCache:
        return cls(from_env(environ, **options))

    async def _run(self, plan: Plan[T], loader: Loader | None = None) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = plan.throw(error) if error is not None else plan.send(reply)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                if isinstance(effect, Batch):
                    reply = await self.backend.run(effect.commands)
                elif isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
                elif isinstance(effect, Load):
                    assert loader is not None
                    reply = loader()
                    if inspect.isawaitable(reply):
                        reply = await reply
                elif isinstance(effect, ServerInfo):
                    reply = await self.backend.info()
            except Exception as failure:
                error = failure

    async def get(self, key: str, namespace: str | None = None, default: Any = None) -> Any:
        return await self._run(self.core.get(key, namespace, default))

    async def mget(self, keys: Sequence[str], namespace: str | None = None) -> dict[str, Any]:
        return await self._run(self.core.mget(keys, namespace))

    async def set(
        self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = (), namespace: str | None = None
    ) -> bool:
        return await self._run(self.core.set(key, value, ttl, tags, namespace))

    async def mset(
        self, mapping: Mapping[str, Any], ttl: float | None = None, tags: Iterable[str] = (), namespace: str | None = None
    ) -> bool:
        return await self._run(self.core.mset(mapping, ttl, tags, namespace))

    async def delete(self, *keys: str, namespace: str | None = None) -> int:
        return await self._run(self.core.delete(keys, namespace))

    async def invalidate_by_tags(self, tags: Iterable[str]) -> int:
        return await self._run(self.core.invalidate_by_tags(tags))

    async def get_or_set(
        self, key: str, loader: Loader, ttl: float | None = None, tags: Iterable[str] = (), namespace: str | None = None
    ) -> Any:
        """`loader` may be a plain function or a coroutine function."""
        return await self._run(self.core.get_or_set(key, ttl, tags, namespace), loader)

    async def set_session(self, session_id: str, data: Any, ttl: float | None = None) -> None:
        await self._run(self.core.set_session(session_id, data, ttl))

    async def get_session(self, session_id: str, sliding: bool = True, ttl: float | None = None) -> Any:
        return await self._run(self.core.get_session(session_id, sliding, ttl))

    async def touch_session(self, session_id: str, ttl: float | None = None) -> bool:
        return await self._run(self.core.touch_session(session_id, ttl))

    async def destroy_session(self, session_id: str) -> bool:
        return await self._run(self.core.destroy_session(session_id))

    async def get_stats(self) -> dict[str, Any]:
        return await self._run(self.core.get_stats())

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> AsyncCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
