"""Free loopback ports for tests that start a redis-server of their own, so two checkouts
(or a developer's sandbox) on one machine do not reach for the same port."""

from __future__ import annotations

import random

from cachelayer.sandbox.processes import port_is_free


def free_port_block(first: int, last: int, size: int = 6, offsets: tuple[int, ...] = ()) -> int:
    """A port p in [first, last) with p..p+size-1 (and p+offset for each offset, e.g. the
    cluster bus) free, picked at random among the candidates."""
    bases = list(range(first, last - size + 1, size))
    random.shuffle(bases)
    for base in bases:
        ports = [base + i for i in range(size)] + [base + i + offset for offset in offsets for i in range(size)]
        if all(port_is_free("127.0.0.1", port) for port in ports):
            return base
    raise RuntimeError(f"no {size} free ports in {first}-{last}")
