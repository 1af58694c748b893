"""The synchronous cache: performs the core's plans with redis-py's cluster (or sentinel) client."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import redis
from redis.cluster import ClusterNode, LoadBalancingStrategy, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from .codec import Serializer
from .config import CacheConfig, from_env, from_stack_output
from .connect import backoff, connection_kwargs, endpoints, shard_of
from .core import Batch, Command, Core, Load, Plan, ServerInfo, Sleep

T = TypeVar("T")
C = TypeVar("C")
# Replicas only, in turn: replica reads are there to take load off the masters.
REPLICA_READS = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS


class Backend(Protocol):
    def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]: ...

    def info(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


# After a failed connection attempt, calls fail at once for this long instead of each waiting out
# the connect timeout of every seed (an application's request handlers while Redis is down).
RECONNECT_INTERVAL = 1.0


class LazyClient(Generic[C]):
    """A redis-py client made on first use, not in the constructor: an application starts while
    Redis is down (or refuses its password), and its calls fail open until Redis answers."""

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._client: C | None = None
        self._lock = threading.Lock()
        self._failed_at = -RECONNECT_INTERVAL
        self._failure: BaseException | None = None

    def get(self) -> C:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                if self._failure is not None and time.monotonic() - self._failed_at < RECONNECT_INTERVAL:
                    raise self._failure
                try:
                    self._client = self._make()
                except Exception as error:
                    self._failed_at, self._failure = time.monotonic(), error
                    raise
            return self._client

    @property
    def made(self) -> C | None:
        return self._client


class Every:
    """Due once per `seconds`: how the cluster backends time their replica client's slot-map
    refresh (CacheConfig.replica_refresh_interval says why)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True


class ClusterBackend:
    """Redis Cluster: one command goes straight to its node; a batch goes through redis-py's
    cluster pipeline, which groups the commands by node and follows MOVED/ASK. Reads that may
    be stale use a second client made with redis-py's `load_balancing_strategy` (READONLY
    connections, replicas in turn), made on the first such read."""

    def __init__(self, make: Callable[[bool], RedisCluster], replica_refresh_interval: float = 30.0) -> None:
        self.masters = LazyClient(lambda: make(False))
        self.replicas = LazyClient(lambda: make(True))
        self.replica_map_refresh = Every(replica_refresh_interval)

    @property
    def client(self) -> RedisCluster:
        return self.masters.get()

    def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]:
        client = self._replica_client() if replica else self.masters.get()
        if len(commands) == 1:
            (c,) = commands
            return [client.execute_command(*c.args, **c.options)]
        nodes = client.nodes_manager
        if all(c.args[0] == "GET" and len(c.args) == 2 for c in commands):
            # Slot-grouped MGETs (redis-py's mget_nonatomic, with the node picked by the client's
            # own load balancing): fewer, larger commands than a pipeline of GETs.
            by_slot: dict[int, list[int]] = {}
            for i, c in enumerate(commands):
                by_slot.setdefault(client.keyslot(c.args[1]), []).append(i)
            strategy = client.load_balancing_strategy
            pipe = client.pipeline(transaction=False)
            for slot, indexes in by_slot.items():
                node = nodes.get_node_from_slot(slot, load_balancing_strategy=strategy)
                pipe.execute_command("MGET", *(commands[i].args[1] for i in indexes), target_nodes=[node])
            replies: list[Any] = [None] * len(commands)
            for indexes, values in zip(by_slot.values(), pipe.execute(), strict=True):
                for i, value in zip(indexes, values, strict=True):
                    replies[i] = value
            return replies
        pipe = client.pipeline(transaction=False)
        for c in commands:
            # The node named up front, as redis-py's own *_nonatomic helpers do: the pipeline then
            # skips working out each command's keys (its main cost); MOVED/ASK are still followed.
            node = nodes.get_node_from_slot(client.keyslot(c.args[1]))
            pipe.execute_command(*c.args, target_nodes=[node], **c.options)
        return list(pipe.execute())

    def _replica_client(self) -> RedisCluster:
        """The replica reads' client, its slot map read again every `replica_refresh_interval`
        (CacheConfig says why). A failed refresh keeps the map it had."""
        client = self.replicas.get()
        if self.replica_map_refresh.due():
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                client.nodes_manager.initialize()
        return client

    def info(self) -> list[dict[str, Any]]:
        replies = self.masters.get().info(target_nodes=RedisCluster.PRIMARIES)
        # One node answers a plain dict; several answer {node name: dict}.
        if replies and all(isinstance(v, dict) for v in replies.values()) and "redis_version" not in replies:
            return list(replies.values())
        return [replies]

    def close(self) -> None:
        for lazy in (self.masters, self.replicas):
            if lazy.made is not None:
                lazy.made.close()


class ShardedBackend:
    """Sentinel topology: one master per group (found through the sentinels, followed across
    failovers by redis-py's SentinelConnectionPool); keys are spread over the groups by slot.
    Reads that may be stale go to the group's replicas in turn (`Sentinel.slave_for`; redis-py
    falls back to the master when the group has no replica up)."""

    def __init__(self, masters: Sequence[redis.Redis], replicas: Sequence[redis.Redis] = ()) -> None:
        self.masters = list(masters)
        self.replicas = list(replicas) or self.masters

    def run(self, commands: Sequence[Command], replica: bool = False) -> list[Any]:
        servers = self.replicas if replica else self.masters
        if len(commands) == 1:
            (c,) = commands
            return [servers[shard_of(c.args[1], len(servers))].execute_command(*c.args, **c.options)]
        by_shard: dict[int, list[int]] = {}
        for i, c in enumerate(commands):
            by_shard.setdefault(shard_of(c.args[1], len(servers)), []).append(i)
        replies: list[Any] = [None] * len(commands)
        for shard, indexes in by_shard.items():
            pipe = servers[shard].pipeline(transaction=False)
            for i in indexes:
                pipe.execute_command(*commands[i].args, **commands[i].options)
            for i, reply in zip(indexes, pipe.execute(), strict=True):
                replies[i] = reply
        return replies

    def info(self) -> list[dict[str, Any]]:
        return [dict(master.info()) for master in self.masters]

    def close(self) -> None:
        for server in {id(s): s for s in (*self.masters, *self.replicas)}.values():
            server.close()


def connect(config: CacheConfig) -> Backend:
    """The backend, without connecting: redis-py's Sentinel clients connect on first use, and
    the cluster client (which reads the slot map in its constructor) is made on first use."""
    kwargs = connection_kwargs(config)
    retry = Retry(backoff(config), config.retry.retries)
    if config.topology == "sentinel":
        # No retry of its own on a sentinel connection: redis-py's default (3 retries, backoff up
        # to 10 s) nested in the node connection's retry blocked a call ~16 s with sentinels down.
        # The node connection's retry already repeats the whole master discovery.
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k not in ("decode_responses", "client_name")}
        sentinel_kwargs["retry"] = Retry(backoff(config), 0)
        sentinel = Sentinel(endpoints(config.sentinels), sentinel_kwargs=sentinel_kwargs, retry=retry, **kwargs)
        return ShardedBackend(
            [sentinel.master_for(group) for group in config.sentinel_groups],
            [sentinel.slave_for(group) for group in config.sentinel_groups],
        )
    seeds = endpoints(config.seeds)

    def make(replicas: bool) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            retry=retry,
            load_balancing_strategy=REPLICA_READS if replicas else None,
            **kwargs,
        )

    return ClusterBackend(make, config.replica_refresh_interval)


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
                    reply = self.backend.run(effect.commands, effect.replica)
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
    def get(self, key: str, namespace: str | None = None, default: Any = None, stale_ok: bool | None = None) -> Any:
        """`stale_ok`: True lets a replica answer, False forces the master; None: the namespace's
        read policy (`replica_namespaces`)."""
        return self._run(self.core.get(key, namespace, default, stale_ok))

    def mget(self, keys: Sequence[str], namespace: str | None = None, stale_ok: bool | None = None) -> dict[str, Any]:
        return self._run(self.core.mget(keys, namespace, stale_ok))

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
        stale_ok: bool | None = None,
    ) -> Any:
        return self._run(self.core.get_or_set(key, ttl, tags, namespace, stale_ok=stale_ok), loader)

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
