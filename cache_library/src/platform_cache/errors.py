"""The library's exceptions, and which redis-py errors mean "Redis is unreachable"."""

from __future__ import annotations

from redis import exceptions as rx


class CacheError(Exception):
    """Base class of every error the library raises itself."""


class ConfigError(CacheError, ValueError):
    """The connection settings or options are unusable."""


class ValueTooLargeError(CacheError, ValueError):
    """The encoded value exceeds the server's bulk limit (proto-max-bulk-len): refused before sending."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"value for {key!r} is {size} bytes encoded, over the limit of {limit} bytes (max_value_bytes)")
        self.key, self.size, self.limit = key, size, limit


class CacheUnavailableError(CacheError):
    """Redis could not be reached (raised where the failure policy is fail-closed)."""


class SessionUnavailableError(CacheUnavailableError):
    """The session store could not be reached (sessions fail closed by default)."""


class InvalidKeyError(CacheError, ValueError):
    """A key, namespace or tag the library cannot use (empty, or in its reserved '~' space)."""


# Errors that mean the node or the cluster is down, failing over or unreachable. Everything else
# (NOPERM, WRONGTYPE, a bug) is a programming error and is never swallowed by fail-open.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # includes BusyLoadingError, MasterNotFoundError, MaxConnectionsError
    rx.TimeoutError,
    rx.ClusterError,  # ClusterDownError, MasterDownError
    rx.TryAgainError,
    rx.ReadOnlyError,  # a demoted master answering writes during a sentinel failover
    rx.SlotNotCoveredError,
    rx.RedisClusterException,
    OSError,
)


def is_unavailable(error: BaseException) -> bool:
    """Redis unreachable or refusing our credentials (the failure policy applies), as opposed to
    a refusal of one command (NOPERM, WRONGTYPE) or a bug, which are always raised."""
    return isinstance(error, UNAVAILABLE)


def is_credential_refusal(error: BaseException) -> bool:
    """A wrong user or password, also when redis-py wraps it ("cannot be connected ... from")."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, rx.AuthenticationError | rx.AuthorizationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
