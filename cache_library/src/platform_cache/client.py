"""The synchronous cache: performs the core's plans with redis-py's cluster (or sentinel) client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .codec import Serializer
from .config import CacheConfig, from_env, from_stack_output
from .connect import backoff, connection_kwargs, endpoints, shard_of
from .core import Batch, Command, Core, Load, Plan, ServerInfo, Sleep

T = TypeVar("T")


class Backend(Protocol):
    def run(self, commands: Sequence[Command]) -> list[Any]: ...

    def info(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class ClusterBackend:
    """Redis Cluster: one command goes straight to its node; a batch goes through redis-py's
    cluster pipeline, which groups the commands by node and follows MOVED/ASK."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client

    def run(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            (c,) = commands
            return [self.client.execute_command(*c.args, **c.options)]
        if all(c.args[0] == "GET" and len(c.args) == 2 for c in commands):
            # redis-py's own slot-grouped MGETs: fewer, larger commands than a pipeline of GETs.
            return list(self.client.mget_nonatomic([c.args[1] for c in commands]))
        pipe = self.client.pipeline(transaction=False)
        nodes = self.client.nodes_manager
        for c in commands:
            # The node named up front, as redis-py's own *_nonatomic helpers do: the pipeline then
            # skips working out each command's keys (its main cost); MOVED/ASK are still followed.
            node = nodes.get_node_from_slot(self.client.keyslot(c.args[1]))
            pipe.execute_command(*c.args, target_nodes=[node], **c.options)
        return list(pipe.execute())

    def info(self) -> list[dict[str, Any]]:
        replies = self.client.info(target_nodes=RedisCluster.PRIMARIES)
        # One node answers a plain dict; several answer {node name: dict}.
        if replies and all(isinstance(v, dict) for v in replies.values()) and "redis_version" not in replies:
            return list(replies.values())
        return [replies]

    def close(self) -> None:
        self.client.close()


class ShardedBackend:
    """Sentinel topology: one master per group (found through the sentinels, followed across
    failovers by redis-py's SentinelConnectionPool); keys are spread over the groups by slot."""

    def __init__(self, masters: Sequence[redis.Redis]) -> None:
        self.masters = list(masters)

    def run(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            (c,) = commands
            return [self.masters[shard_of(c.args[1], len(self.masters))].execute_command(*c.args, **c.options)]
        by_shard: dict[int, list[int]] = {}
        for i, c in enumerate(commands):
            by_shard.setdefault(shard_of(c.args[1], len(self.masters)), []).append(i)
        replies: list[Any] = [None] * len(commands)
        for shard, indexes in by_shard.items():
            pipe = self.masters[shard].pipeline(transaction=False)
            for i in indexes:
                pipe.execute_command(*commands[i].args, **commands[i].options)
            for i, reply in zip(indexes, pipe.execute(), strict=True):
                replies[i] = reply
        return replies

    def info(self) -> list[dict[str, Any]]:
        return [dict(master.info()) for master in self.masters]

    def close(self) -> None:
        for master in self.masters:
            master.close()


def connect(config: CacheConfig) -> Backend:
    kwargs = connection_kwargs(config)
    retry = Retry(backoff(config), config.retry.retries)
    if config.topology == "sentinel":
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k not in ("decode_responses", "client_name")}
        sentinel = Sentinel(endpoints(config.sentinels), sentinel_kwargs=sentinel_kwargs, retry=retry, **kwargs)
        return ShardedBackend([sentinel.master_for(group) for group in config.sentinel_groups])
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in endpoints(config.seeds)], retry=retry, **kwargs
    )
    return ClusterBackend(client)


class Cache:
    """The platform's cache (sync). Thread-safe: share one per process."""

    def __init__(self, config: CacheConfig, serializer: Serializer | None = None, backend: Backend | None = None) -> None:
        self.config = config.validate()
        self.core = Core(config, serializer)
        self.backend = backend or connect(config)

    @classmethod
    def from_stack_output(cls, connection: str | Mapping[str, Any], **options: Any) -> Cache:
        return cls(from_stack_output(connection, **options))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Cache:
        return cls(from_env(environ, **options))

    def _run(self, plan: Plan[T], loader: Callable[[], Any] | None = None) -> T:
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
                    reply = self.backend.run(effect.commands)
                elif isinstance(effect, Sleep):
                    time.sleep(effect.seconds)
                elif isinstance(effect, Load):
                    assert loader is not None
                    reply = loader()
                elif isinstance(effect, ServerInfo):
                    reply = self.backend.info()
            except Exception as failure:
                error = failure

    # ------------------------------------------------------------------ cache
    def get(self, key: str, namespace: str | None = None, default: Any = None) -> Any:
        return self._run(self.core.get(key, namespace, default))

    def mget(self, keys: Sequence[str], namespace: str | None = None) -> dict[str, Any]:
        return self._run(self.core.mget(keys, namespace))

    def set(
        self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = (), namespace: str | None = None
    ) -> bool:
        return self._run(self.core.set(key, value, ttl, tags, namespace))

    def mset(
        self, mapping: Mapping[str, Any], ttl: float | None = None, tags: Iterable[str] = (), namespace: str | None = None
    ) -> bool:
        return self._run(self.core.mset(mapping, ttl, tags, namespace))

    def delete(self, *keys: str, namespace: str | None = None) -> int:
        return self._run(self.core.delete(keys, namespace))

    def invalidate_by_tags(self, tags: Iterable[str]) -> int:
        return self._run(self.core.invalidate_by_tags(tags))

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
    ) -> Any:
        return self._run(self.core.get_or_set(key, ttl, tags, namespace), loader)

    # --------------------------------------------------------------- sessions
    def set_session(self, session_id: str, data: Any, ttl: float | None = None) -> None:
        self._run(self.core.set_session(session_id, data, ttl))

    def get_session(self, session_id: str, sliding: bool = True, ttl: float | None = None) -> Any:
        return self._run(self.core.get_session(session_id, sliding, ttl))

    def touch_session(self, session_id: str, ttl: float | None = None) -> bool:
        return self._run(self.core.touch_session(session_id, ttl))

    def destroy_session(self, session_id: str) -> bool:
        return self._run(self.core.destroy_session(session_id))

    # ------------------------------------------------------------------ stats
    def get_stats(self) -> dict[str, Any]:
        return self._run(self.core.get_stats())

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
