"""Build frozen settings dataclasses from stack config mappings, refusing what does not fit.

Stack config arrives as plain YAML/JSON values. Every settings object is a frozen dataclass
whose field names are the stack keys; this module turns a mapping into one, checking types
and refusing unknown keys so that a misspelt key is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin

from cachelayer.errors import SettingsError

T = TypeVar("T")

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
_MEMORY_PATTERN = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")


def parse_memory(key: str, text: str) -> int:
    """Bytes in a Redis memory size ('2gb', '512mb', '100k'), with Redis's own unit rules."""
    match = _MEMORY_PATTERN.match(str(text).lower())
    if not match or match.group(2) not in _MEMORY_UNITS:
        raise SettingsError(
            key,
            f"'{text}' is not a memory size",
            "write a whole number with a Redis unit: b, k, kb, m, mb, g or gb (e.g. 2gb)",
        )
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def unknown_keys_error(key: str, unknown: str, allowed: typing.Iterable[str]) -> SettingsError:
    """The error for a key the settings object does not have, with the closest known key."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(unknown, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return SettingsError(
        f"{key}.{unknown}" if key else unknown,
        "is not a known setting",
        f"{hint}known keys: {', '.join(allowed)}",
    )


def from_mapping(cls: type[T], raw: Any, key: str) -> T:
    """An instance of the dataclass `cls` from `raw`; defaults fill what `raw` leaves out."""
    if raw is None:
        raw = {}
    if dataclasses.is_dataclass(raw) and isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise SettingsError(key, f"expected a mapping of settings, got {type(raw).__name__}", "write it as YAML key: value pairs")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in raw:
        if name not in fields:
            raise unknown_keys_error(key, str(name), fields)
    for name, spec in fields.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if required and name not in raw:
            raise SettingsError(f"{key}.{name}", "is missing", f"add {name} to {key}")
    hints = typing.get_type_hints(cls)
    values = {name: convert(raw[name], hints[name], f"{key}.{name}") for name in raw}
    return cls(**values)


def convert(value: Any, annotation: Any, key: str) -> Any:
    """`value` checked against (and converted to) the field's annotation."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], key)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise SettingsError(key, f"{value!r} is not one of the choices", f"use one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(key, f"expected a list, got {type(value).__name__}", "write a YAML list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise SettingsError(key, f"expected {len(args)} items, got {len(value)}", f"write a list of {len(args)} items")
        return tuple(convert(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, key)  # type: ignore[arg-type]
    if annotation is bool:
        if not isinstance(value, bool):
            raise SettingsError(key, f"expected true or false, got {value!r}", "write true or false")
        return value
    if annotation is int:
        # YAML gives ints; JSON via Pulumi may give floats like 7000.0 or strings like "7000".
        if isinstance(value, bool):
            raise SettingsError(key, f"expected a whole number, got {value!r}", "write a whole number")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if not isinstance(value, int):
            raise SettingsError(key, f"expected a whole number, got {value!r}", "write a whole number")
        return value
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SettingsError(key, f"expected text, got {value!r}", "write a string")
        return str(value)
    raise TypeError(f"no converter for {annotation!r} at {key}")  # a programming error, not bad input
