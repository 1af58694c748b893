"""Key names. Entries are `namespace:key` as given (readable in redis-cli and MONITOR) unless the
application asks for hashing; the library's own keys start with `~`. No `{hash tags}`: a namespace
spreads over every slot, so no namespace becomes a hot shard. Pure."""

from __future__ import annotations

import hashlib

from .errors import InvalidKeyError

# Keys whose names carry a credential: a session id is a bearer token. Anything that shows key
# names to people (the operator's `cachelayer report`, logs) shows these through `redact_key`.
SESSION_PREFIX = "~session:"
REDACTED = "<redacted>"


def is_secret_key(key: str) -> bool:
    return key.startswith(SESSION_PREFIX)


def redact_key(key: str) -> str:
    """The key as it may be shown: a session key keeps its namespace's first segment, never its id."""
    if not is_secret_key(key):
        return key
    namespace = key[len(SESSION_PREFIX):].split(":", 1)[0]
    return f"{SESSION_PREFIX}{namespace}:{REDACTED}"


def redact_command(words: list[str]) -> list[str]:
    """A logged command (SLOWLOG, MONITOR) as it may be shown: from the first session key on,
    nothing is shown (the key's id, and the session data that follows it)."""
    for index, word in enumerate(words):
        if is_secret_key(word):
            return [*words[:index], redact_key(word), *([REDACTED] if index + 1 < len(words) else [])]
    return words


class Keys:
    def __init__(self, namespace: str, hash_keys: bool = False) -> None:
        self.namespace = namespace
        self.hash_keys = hash_keys

    def ns(self, namespace: str | None) -> str:
        ns = self.namespace if namespace is None else namespace
        if not ns or ns.startswith("~"):
            raise InvalidKeyError(f"namespace {ns!r}: must be non-empty and not start with '~'")
        return ns

    def entry(self, key: str, namespace: str | None = None) -> str:
        if not isinstance(key, str) or not key:
            raise InvalidKeyError(f"key {key!r}: must be a non-empty str")
        if self.hash_keys:
            key = "#" + hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.ns(namespace)}:{key}"

    @staticmethod
    def tag(tag: str) -> str:
        # Tags are global: invalidating `user:42` reaches every namespace that tagged an entry with it.
        if not isinstance(tag, str) or not tag:
            raise InvalidKeyError(f"tag {tag!r}: must be a non-empty str")
        return f"~tag:{tag}"

    @staticmethod
    def lock(entry_key: str) -> str:
        return f"~lock:{entry_key}"

    def session(self, session_id: str) -> str:
        if not isinstance(session_id, str) or not session_id:
            raise InvalidKeyError("session id must be a non-empty str")
        return f"{SESSION_PREFIX}{self.namespace}:{session_id}"
