"""Reading a rendered redis.conf, sentinel.conf or ACL file as redis-server reads it. Pure.

One reader for every caller (drift, the rollout plan, the policy pack), so they agree on what a
file means. Semantics from Redis 7.0's `src/config.c` (`loadServerConfigFromString`) and
`src/acl.c` (`ACLLoadFromFile`, `ACLAppendUserForLoading`):

- a line is trimmed; blank lines and lines starting with `#` are skipped; the rest is split like
  `sdssplitargs` ("double quotes" with escapes, 'single quotes'); the name is case-insensitive;
- most directives hold one value and the LAST line wins (`bind`, `replicaof`, `port`, ...);
- `save` accumulates: the file's first `save` line drops the defaults, each line adds its
  points, and `save ""` drops the points read so far;
- `client-output-buffer-limit` sets only the classes a line names: the last line per class wins;
- `include`, `rename-command`, `loadmodule`, `user` and `sentinel ...` act once per line: every
  line counts, in order. An included file is not followed here (it is another rendered file);
- a user declared twice (two `user` lines in a config, or in an ACL file) makes Redis refuse the
  whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cachelayer.errors import CachelayerError

# Directives redis-server 7.0 refuses to change with CONFIG SET: immutable (read at start-up
# only), protected (`dir`, `dbfilename`: refused unless enable-protected-configs, which we never
# set), or not a config at all (`include`). A difference in one of them is fixed by restarting
# the node with the rendered file, never by CONFIG SET. tests/integration/test_restart_only.py
# checks this on a real server against every directive the template renders.
RESTART_ONLY = frozenset(
    {
        "aclfile",
        "appenddirname",
        "appendfilename",
        "cluster-config-file",
        "cluster-enabled",
        "cluster-port",
        "daemonize",
        "databases",
        "dbfilename",
        "dir",
        "include",
        "logfile",
        "rdbchecksum",
        "replicaof",
        "supervised",
        "tcp-backlog",
    }
)

# Directives whose every line acts (in order), rather than the last line replacing the others.
# None is a config that CONFIG GET can read.
PER_LINE = frozenset({"include", "rename-command", "loadmodule", "user", "sentinel"})
# A client class as written -> as Redis names it (CONFIG GET says `slave`).
OUTPUT_BUFFER_CLASSES = {"normal": "normal", "replica": "slave", "slave": "slave", "pubsub": "pubsub"}
# Accepted by Redis 7.0 and ignored (config.c `deprecated_configs`).
DEPRECATED = frozenset({"list-max-ziplist-entries", "list-max-ziplist-value", "lua-replicate-commands"})


class ConfError(CachelayerError):
    """A file redis-server would refuse to load; the message names the line and why."""


@dataclass(frozen=True)
class Directive:
    """A directive as the server holds it after reading the whole file."""

    name: str
    args: tuple[str, ...]  # split and unquoted as redis-server does; accumulated where Redis accumulates
    written: str  # the arguments as written in the file (quotes kept), lines joined by a space

    @property
    def value(self) -> str:
        """The value as CONFIG SET takes it and CONFIG GET shows it (memory units aside)."""
        return " ".join(self.args)


def split_args(line: str) -> list[str]:
    """One line split as Redis's `sdssplitargs`: a ConfError for unbalanced quotes, or for a
    closing quote not followed by a space."""
    args: list[str] = []
    position, end = 0, len(line)
    escapes = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
    while True:
        while position < end and line[position].isspace():
            position += 1
        if position >= end:
            return args
        current: list[str] = []
        quote = ""
        while True:
            char = line[position] if position < end else ""
            if quote:
                if not char:
                    raise ConfError(f"unbalanced quotes: {line}")
                following = line[position + 1:position + 2]
                if char == quote:
                    if following and not following.isspace():
                        raise ConfError(f"a closing quote must be followed by a space: {line}")
                    position += 1
                    break
                if char == "\\" and quote == '"' and following == "x" and _is_hex(line[position + 2:position + 4]):
                    current.append(chr(int(line[position + 2:position + 4], 16)))
                    position += 3
                elif char == "\\" and quote == '"' and following:
                    position += 1
                    current.append(escapes.get(following, following))
                elif char == "\\" and following == "'":  # the one escape inside single quotes
                    position += 1
                    current.append("'")
                else:
                    current.append(char)
            elif char in ("", " ", "\n", "\r", "\t"):
                break
            elif char in ('"', "'"):
                quote = char
            else:
                current.append(char)
            position += 1
        args.append("".join(current))


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def _lines(text: str) -> Iterator[tuple[int, str, list[str], str]]:
    """(line number, name in lower case, arguments, arguments as written) of each directive line."""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r\n")
        if not line or line.startswith("#"):
            continue
        try:
            words = split_args(line)
        except ConfError as error:
            raise ConfError(f"line {number}: {error}") from None
        if words:
            name = line.split(None, 1)
            yield number, words[0].lower(), words[1:], name[1] if len(name) > 1 else ""


def read_redis_conf(text: str) -> dict[str, Directive]:
    """Directive name -> what redis-server holds after reading `text` (a redis.conf or a
    sentinel.conf), in the order the names first appear."""
    found: dict[str, Directive] = {}
    users: set[str] = set()
    for number, name, args, written in _lines(text):
        if name in DEPRECATED:
            continue
        if name == "user" and args:
            if args[0] in users:
                raise ConfError(f"line {number}: user {args[0]} is declared twice: redis-server refuses the file")
            users.add(args[0])
        before = found.get(name)
        if name == "save":
            found[name] = _add_save_points(before, args, written)
        elif name == "client-output-buffer-limit":
            found[name] = _merge_output_buffer_limits(before, args, written)
        elif name in PER_LINE and before is not None:
            found[name] = Directive(name, before.args + tuple(args), f"{before.written} {written}")
        else:
            found[name] = Directive(name, tuple(args), written)
    return found


def _add_save_points(before: Directive | None, args: list[str], written: str) -> Directive:
    """The file's first `save` line replaces the defaults, later ones add to it; `save ""` drops
    every point read so far. One argument holding several words is split (`save "900 1"`)."""
    if args == [""]:
        return Directive("save", (), written)
    points = tuple(split_args(args[0])) if len(args) == 1 else tuple(args)
    if before is None:
        return Directive("save", points, written)
    return Directive("save", before.args + points, f"{before.written} {written}".strip())


def _merge_output_buffer_limits(before: Directive | None, args: list[str], written: str) -> Directive:
    """Each line sets the classes it names (`class hard soft seconds` ...); the others keep theirs."""
    if len(args) == 1:
        args = split_args(args[0])
    limits: dict[str, tuple[str, ...]] = {}
    if before is not None:
        limits = {before.args[i]: before.args[i + 1:i + 4] for i in range(0, len(before.args), 4)}
    for i in range(0, len(args) - len(args) % 4, 4):
        limits[OUTPUT_BUFFER_CLASSES.get(args[i].lower(), args[i].lower())] = tuple(args[i + 1:i + 4])
    order = ("normal", "slave", "pubsub")
    ordered = sorted(limits.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    merged = tuple(word for name, limit in ordered for word in (name, *limit))
    return Directive("client-output-buffer-limit", merged,
                     f"{before.written} {written}" if before is not None else written)


def conf_values(text: str) -> dict[str, str]:
    """Directive name -> its value (as CONFIG SET takes it) after reading a rendered config."""
    return {name: directive.value for name, directive in read_redis_conf(text).items()}


def acl_users(text: str, acl_file: bool = False) -> dict[str, list[str]]:
    """User -> its rules, from the `user` lines of a config file or, with `acl_file`, of an ACL
    file (or ACL LIST's answer), where Redis refuses any other line. A user declared twice is a
    ConfError: Redis refuses such a file (ACL LOAD and start-up alike)."""
    users: dict[str, list[str]] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        words = raw.split()
        if len(words) < 2 or words[0] != "user":
            if acl_file and words:
                raise ConfError(f"line {number} of an ACL file does not start with `user NAME`: {raw.strip()!r}")
            continue
        if words[1] in users:
            raise ConfError(f"line {number}: user {words[1]} is declared twice: Redis refuses the file")
        users[words[1]] = words[2:]
    return users
