"""Free loopback ports, for the processes we start ourselves (sandbox nodes, a restore's
temporary servers, a drill's throwaway sandbox, tests). Standard library only."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

from cachelayer.errors import CachelayerError


class PortsTakenError(CachelayerError):
    """No block of free ports in the range asked for."""


def port_is_free(address: str, port: int) -> bool:
    # SO_REUSEADDR as redis-server sets it: a socket in TIME_WAIT does not count as taken.
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_loopback_port() -> int:
    """A port the kernel has free on 127.0.0.1 now (it may be taken before the caller binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_port_block(
    first: int, last: int, size: int = 6, offsets: Iterable[int] = (), step: int | None = None,
    extra: Iterable[int] = (), shuffle: bool = True, address: str = "127.0.0.1",
) -> int:
    """A base port p in [first, last) with p..p+size-1 free, and p+offset+i for each offset (a
    cluster bus at +10000), and p+e for each of `extra` (sentinels); PortsTakenError if none is.
    Candidates are `step` apart (default `size`), tried in random order unless `shuffle` is off,
    so two checkouts on one machine rarely reach for the same block."""
    offsets, extra = tuple(offsets), tuple(extra)
    bases = list(range(first, last - size + 1, step or size))
    if shuffle:
        random.shuffle(bases)
    for base in bases:
        ports = [base + i for i in range(size)] + [base + o + i for o in offsets for i in range(size)]
        if all(port_is_free(address, port) for port in ports + [base + e for e in extra]):
            return base
    raise PortsTakenError(f"no block of {size} free ports (and their companions) in {first}-{last}")
