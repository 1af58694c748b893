"""Machines for hosts settings in tests: each with a well-formed SSH host key, as the settings
require (the key is a fixed test value; no server ever presents it)."""

from __future__ import annotations

from typing import Any

TEST_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDZlQqJ5m3b6S5vK9yJ3l0Lq0t3P2QJf0rHcJ9d4bZqT"


def machine(name: str, address: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "address": address, "ssh_host_key": TEST_HOST_KEY, **more}
