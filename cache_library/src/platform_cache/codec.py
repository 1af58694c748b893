"""Values on the wire: a small binary header (flags, logical expiry, loader time, tag versions)
followed by the serialized, maybe zlib-compressed, payload. Pure."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

MAGIC = 0xC7
FORMAT = 1
FLAG_ZLIB = 1
FLAG_BYTES = 2  # the value was `bytes`, stored as is (JSON has no bytes)
# magic, format, flags, expires_at_ms, delta_ms, tag count
_HEADER = struct.Struct(">BBBQIH")
_TAG = struct.Struct(">HB")  # tag name length, version length


class Serializer(Protocol):
    """Turns values into bytes and back (JSON by default; plug in msgpack, pickle, ...)."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


_json_decode = json.JSONDecoder().decode


class JsonSerializer:
    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        # dumps writes UTF-8: decoding it directly skips json.loads's encoding detection.
        return _json_decode(data.decode())


class CorruptEntryError(ValueError):
    """Not an entry this library wrote (or a newer format): read as a miss."""


class Entry(NamedTuple):  # made on every read: a NamedTuple is cheaper than a frozen dataclass
    value: Any
    expires_at_ms: int  # logical expiry (wall clock), for early refresh
    delta_ms: int  # how long the loader took to compute it (XFetch's delta)
    tags: tuple[tuple[str, bytes], ...]  # (tag, version it was written under)


VERSION_LEN = 16


def new_version() -> bytes:
    """A tag version never seen before: the time in ns plus 64 random bits. An evicted or
    invalidated tag is recreated with a new one, so entries written under an old one never match."""
    return struct.pack(">Q", time.time_ns()) + os.urandom(8)


def encode_payload(value: Any, serializer: Serializer, compress_threshold: int = 1024) -> tuple[int, bytes]:
    """(flags, payload): the value serialized (bytes as is), zlib'd when large and worth it."""
    flags = 0
    if isinstance(value, bytes | bytearray | memoryview):
        payload, flags = bytes(value), FLAG_BYTES
    else:
        payload = serializer.dumps(value)
    if compress_threshold and len(payload) >= compress_threshold:
        packed = zlib.compress(payload, 1)  # level 1: most of the gain for a fraction of the CPU
        if len(packed) < len(payload):
            payload, flags = packed, flags | FLAG_ZLIB
    return flags, payload


def pack_entry(
    flags: int, payload: bytes, tags: Sequence[tuple[str, bytes]] = (), expires_at_ms: int = 0, delta_ms: int = 0
) -> bytes:
    parts = [_HEADER.pack(MAGIC, FORMAT, flags, expires_at_ms, min(delta_ms, 0xFFFFFFFF), len(tags))]
    for tag, version in tags:
        name = tag.encode()
        parts += [_TAG.pack(len(name), len(version)), name, version]
    parts.append(payload)
    return b"".join(parts)


def header_size(tags: Sequence[str], version_len: int = VERSION_LEN) -> int:
    return _HEADER.size + sum(_TAG.size + len(t.encode()) + version_len for t in tags)


def encode_entry(
    value: Any,
    serializer: Serializer,
    tags: Sequence[tuple[str, bytes]] = (),
    expires_at_ms: int = 0,
    delta_ms: int = 0,
    compress_threshold: int = 1024,
) -> bytes:
    flags, payload = encode_payload(value, serializer, compress_threshold)
    return pack_entry(flags, payload, tags, expires_at_ms, delta_ms)


def decode_entry(data: bytes, serializer: Serializer) -> Entry:
    try:
        magic, fmt, flags, expires_at_ms, delta_ms, count = _HEADER.unpack_from(data)
    except struct.error:
        raise CorruptEntryError("too short for a header") from None
    if magic != MAGIC or fmt != FORMAT:
        raise CorruptEntryError(f"unknown header {magic:#x}/{fmt}")
    offset = _HEADER.size
    tags = []
    try:
        for _ in range(count):
            name_len, version_len = _TAG.unpack_from(data, offset)
            offset += _TAG.size
            name = data[offset : offset + name_len].decode()
            offset += name_len
            tags.append((name, data[offset : offset + version_len]))
            offset += version_len
        payload = data[offset:]
        if flags & FLAG_ZLIB:
            payload = zlib.decompress(payload)
        value = payload if flags & FLAG_BYTES else serializer.loads(payload)
    except (struct.error, UnicodeDecodeError, zlib.error, ValueError) as error:
        raise CorruptEntryError(str(error)) from None
    return Entry(value, expires_at_ms, delta_ms, tuple(tags))
