"""redis-py clients of the sandbox's processes, over TLS when the stack runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from cachelayer.ops.health import tls_client_options
from cachelayer.plan.topology import Node, SentinelNode


def process_client(
    process: Node | SentinelNode, username: str | None, password: str | None, tls_dir: Path | None, **options: Any
) -> redis.Redis:
    """A client of one process as any user (None, None: anonymous)."""
    if tls_dir is not None:
        options = tls_client_options(str(tls_dir / "ca.crt")) | options
    return redis.Redis(
        host=process.address,
        port=process.port,
        username=username,
        password=password,
        decode_responses=True,
        socket_timeout=options.pop("socket_timeout", 2),
        socket_connect_timeout=options.pop("socket_connect_timeout", 2),
        **options,
    )
