"""redis-py client options from a CacheConfig, shared by the sync and asyncio backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .config import CacheConfig, parse_endpoint


def connection_kwargs(config: CacheConfig) -> dict[str, Any]:
    """Options of every connection (nodes and sentinels). `retry` is added by the caller: the
    sync and asyncio clients take different Retry classes."""
    kwargs: dict[str, Any] = {
        "username": config.user,
        "password": config.password,
        "socket_timeout": config.retry.socket_timeout,
        "socket_connect_timeout": config.retry.socket_connect_timeout,
        "health_check_interval": config.retry.health_check_interval,
        "decode_responses": False,  # values are binary (header + maybe zlib)
        "client_name": "platform-cache",
    }
    if config.tls:
        kwargs["ssl"] = True
        if config.tls_ca_certs:
            kwargs["ssl_ca_certs"] = config.tls_ca_certs
    return kwargs


def backoff(config: CacheConfig) -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=config.retry.backoff_base, cap=config.retry.backoff_cap)


def endpoints(items: Sequence[str]) -> list[tuple[str, int]]:
    return [parse_endpoint(item) for item in items]


def shard_of(key: Any, shards: int) -> int:
    """Sentinel topology: which group's master holds `key`. The cluster's slot function (hash tags
    honoured), with contiguous slot ranges per group, as a cluster would split them."""
    raw = key if isinstance(key, bytes) else str(key).encode()
    return key_slot(raw) * shards // REDIS_CLUSTER_HASH_SLOTS
