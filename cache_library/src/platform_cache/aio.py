"""The asyncio cache: the same plans as client.py, performed with redis.asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from .client import RECONNECT_INTERVAL, REPLICA_READS, Every
from .codec import Serializer
from .config import CacheConfig, from_env, from_stack_output
from .connect import backoff, connection_kwargs, endpoints, shard_of
from .core import Batch, Command, Core, Load, Plan, ServerInfo, Sleep

T = TypeVar("T")
Loader = Callable[[], Any] | Callable[[], Awaitable[Any]]


class AsyncBackend(Protocol):
    async def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]: ...

    async def info(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class LazyCluster:
    """An asyncio cluster client initialised once, before its first command: concurrent first
    commands would each initialise it and close connections the others are using ("Connection
    closed by server"). After a failed initialisation, calls fail at once for RECONNECT_INTERVAL."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.ready = False
        self._lock: asyncio.Lock | None = None
        self._failed_at = -RECONNECT_INTERVAL
        self._failure: BaseException | None = None

    async def get(self) -> RedisCluster:
        if self.ready:
            return self.client
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self.ready:
                if self._failure is not None and time.monotonic() - self._failed_at < RECONNECT_INTERVAL:
                    raise self._failure
                try:
                    await self.client.initialize()
                except Exception as error:
                    self._failed_at, self._failure = time.monotonic(), error
                    raise
                self.ready = True
        return self.client


class AsyncClusterBackend:
    def __init__(
        self, masters: RedisCluster, replicas: RedisCluster | None = None, replica_refresh_interval: float = 30.0
    ) -> None:
        self.masters = LazyCluster(masters)
        self.replicas = LazyCluster(replicas) if replicas is not None else self.masters
        self.replica_map_refresh = Every(replica_refresh_interval)

    @property
    def client(self) -> RedisCluster:
        return self.masters.client

    async def _replica_client(self) -> RedisCluster:
        """As the sync ClusterBackend's: the slot map read again every `replica_refresh_interval`."""
        client = await self.replicas.get()
        if self.replica_map_refresh.due():
            with contextlib.suppress(RedisError, RedisClusterException):
                await client.nodes_manager.initialize()
        return client

    async def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]:
        client = await (self._replica_client() if replica else self.masters.get())
        if len(commands) == 1:
            (c,) = commands
            return [await client.execute_command(*c.args, **c.options)]
        if all(c.args[0] == "GET" and len(c.args) == 2 for c in commands):
            # Slot-grouped MGETs, each sent to the node the client's load balancing picks.
            by_slot: dict[int, list[int]] = {}
            for i, c in enumerate(commands):
                by_slot.setdefault(client.keyslot(c.args[1]), []).append(i)
            strategy = client.load_balancing_strategy
            pipe = client.pipeline(transaction=False)
            for slot, indexes in by_slot.items():
                node = client.nodes_manager.get_node_from_slot(slot, load_balancing_strategy=strategy)
                pipe.execute_command("MGET", *(commands[i].args[1] for i in indexes), target_nodes=[node])
            replies: list[Any] = [None] * len(commands)
            for indexes, values in zip(by_slot.values(), await pipe.execute(), strict=True):
                for i, value in zip(indexes, values, strict=True):
                    replies[i] = value
            return replies
        pipe = client.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c.args, **c.options)
        return list(await pipe.execute())

    async def info(self) -> list[dict[str, Any]]:
        client = await self.masters.get()
        replies = await client.info(target_nodes=RedisCluster.PRIMARIES)
        if replies and all(isinstance(v, dict) for v in replies.values()) and "redis_version" not in replies:
            return list(replies.values())
        return [replies]

    async def close(self) -> None:
        await self.masters.client.aclose()
        if self.replicas is not self.masters:
            await self.replicas.client.aclose()


class AsyncShardedBackend:
    def __init__(self, masters: Sequence[Redis], replicas: Sequence[Redis] = ()) -> None:
        self.masters = list(masters)
        self.replicas = list(replicas) or self.masters

    async def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]:
        servers = self.replicas if replica else self.masters
        by_shard: dict[int, list[int]] = {}
        for i, c in enumerate(commands):
            by_shard.setdefault(shard_of(c.args[1], len(servers)), []).append(i)

        async def on_shard(shard: int, indexes: list[int]) -> list[Any]:
            pipe = servers[shard].pipeline(transaction=False)
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
        for server in {id(s): s for s in (*self.masters, *self.replicas)}.values():
            await server.aclose()


def connect_async(config: CacheConfig) -> AsyncBackend:
    """Nothing connects here: the clients connect on their first command."""
    kwargs = connection_kwargs(config)
    retry = Retry(backoff(config), config.retry.retries)
    if config.topology == "sentinel":
        # No retry of its own on a sentinel connection: redis-py's default (3 retries, backoff up
        # to 10 s) nested in the node connection's retry blocked a call ~16 s with sentinels down.
        # The node connection's retry already repeats the whole master discovery.
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k not in ("decode_responses", "client_name")}
        sentinel_kwargs["retry"] = Retry(backoff(config), 0)
        sentinel = Sentinel(endpoints(config.sentinels), sentinel_kwargs=sentinel_kwargs, retry=retry, **kwargs)
        return AsyncShardedBackend(
            [sentinel.master_for(group) for group in config.sentinel_groups],
            [sentinel.slave_for(group) for group in config.sentinel_groups],
        )
    kwargs.pop("health_check_interval")  # the asyncio cluster client takes it per node only
    seeds = endpoints(config.seeds)

    def make(replicas: bool) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            retry=retry,
            load_balancing_strategy=REPLICA_READS if replicas else None,
            **kwargs,
        )

    return AsyncClusterBackend(make(False), make(True), config.replica_refresh_interval)


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
                    reply = await self.backend.run(effect.commands, effect.replica)
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

    async def get(
        self, key: str, namespace: str | None = None, default: Any = None, stale_ok: bool | None = None
    ) -> Any:
        return await self._run(self.core.get(key, namespace, default, stale_ok))

    async def mget(
        self, keys: Sequence[str], namespace: str | None = None, stale_ok: bool | None = None
    ) -> dict[str, Any]:
        return await self._run(self.core.mget(keys, namespace, stale_ok))

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
        self,
        key: str,
        loader: Loader,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
        stale_ok: bool | None = None,
    ) -> Any:
        """`loader` may be a plain function or a coroutine function."""
        return await self._run(self.core.get_or_set(key, ttl, tags, namespace, stale_ok=stale_ok), loader)

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
