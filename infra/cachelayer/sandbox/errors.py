"""What the local sandbox raises: one message that says why and what to do."""

from __future__ import annotations

from cachelayer.errors import CachelayerError


class SandboxError(CachelayerError):
    """The sandbox cannot do what was asked; the message says why and what to do."""


class RedisNotInstalledError(SandboxError):
    pass


class PortInUseError(SandboxError):
    def __init__(self, port: int, address: str, what: str) -> None:
        self.port = port
        super().__init__(
            f"port {port} ({what}) on {address} is already in use. If it is an earlier sandbox, run "
            "`sandbox down --stack <stack>`; otherwise choose other ports with "
            "`--base-port` (the stack key redis.base_port)"
        )
