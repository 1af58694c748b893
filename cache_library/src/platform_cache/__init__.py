"""The learning platform's cache service library (Redis Cluster or Sentinel, via redis-py).

    from platform_cache import Cache
    cache = Cache.from_env()            # or Cache.from_stack_output(connection_json)
    cache.set("profile:42", profile, ttl=600, tags=["user:42"], namespace="profiles")
"""

from .aio import AsyncCache
from .client import Cache
from .codec import JsonSerializer, Serializer
from .config import CacheConfig, RetrySettings, from_env, from_stack_output
from .errors import (
    CacheError,
    CacheUnavailableError,
    ConfigError,
    InvalidKeyError,
    SessionUnavailableError,
    ValueTooLargeError,
)

__all__ = [
    "AsyncCache",
    "Cache",
    "CacheConfig",
    "CacheError",
    "CacheUnavailableError",
    "ConfigError",
    "InvalidKeyError",
    "JsonSerializer",
    "RetrySettings",
    "Serializer",
    "SessionUnavailableError",
    "ValueTooLargeError",
    "from_env",
    "from_stack_output",
]
