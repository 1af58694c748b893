"""Read a stack file (Pulumi.<stack>.yaml) the way Pulumi hands its config to the program. Pure.

The local sandbox and the tests use this; under `pulumi up` the config comes from the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cachelayer import PROJECT
from cachelayer.errors import SettingsError
from cachelayer.paths import project_root


def stack_file(stack: str, root: Path | None = None) -> Path:
    """The stack file of `stack` in the project at `root` (default: the project around the current directory)."""
    return (root or project_root()) / f"Pulumi.{stack}.yaml"


def read_stack_config(stack: str, root: Path | None = None) -> dict[str, Any]:
    """The project's keys (without the `cachelayer:` prefix) and their values.

    Encrypted values (`secure: ...`) are left out: only the Pulumi engine can decrypt them.
    """
    path = stack_file(stack, root)
    if not path.exists():
        known = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in path.parent.glob("Pulumi.*.yaml"))
        raise SettingsError("stack", f"there is no stack file {path.name}", f"use one of: {', '.join(known)}")
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, Any] = {}
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = str(key).partition(":")
        if namespace != PROJECT:
            continue  # provider settings such as docker:host belong to the providers
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        config[name] = value
    return config


def engine_config(stack: str, root: Path | None = None) -> dict[str, str]:
    """The stack file as the Pulumi engine passes it to a program: namespaced keys, and
    structured values as JSON text."""
    path = stack_file(stack, root)
    document = yaml.safe_load(path.read_text()) or {}
    return {
        str(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in (document.get("config") or {}).items()
    }
