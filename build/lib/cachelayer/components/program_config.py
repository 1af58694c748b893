"""The stack's config as the Pulumi engine hands it to the program, for the pure settings core."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config

from cachelayer import PROJECT
from cachelayer.config.settings import SECRET_KEYS


def project_config() -> dict[str, Any]:
    """Every `cachelayer:*` key with its plain value (secrets included, to check them; the
    values never leave this process unwrapped). Listing every key lets the core refuse a
    misspelt one instead of silently ignoring it."""
    raw: dict[str, Any] = {**(runtime_config.get_config_env() or {}), **runtime_config.CONFIG.get()}
    config: dict[str, Any] = {}
    for key, value in raw.items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT:
            continue
        config[name] = _decode(value)
    return config


def secret_settings() -> dict[str, pulumi.Output[str] | None]:
    """The secret keys as secret Outputs (None when not set)."""
    config = pulumi.Config(PROJECT)
    return {key: config.get_secret(key) for key in SECRET_KEYS}


def _decode(value: Any) -> Any:
    """Structured values arrive as JSON text; plain strings stay as they are."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
