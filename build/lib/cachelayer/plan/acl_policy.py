"""What the `app` ACL user may run on the Redis nodes: an allowlist. Pure.

Every command, and every subcommand of a container command (written `client|kill`), appears in
exactly one group below, allowed or refused, with the reason. The ACL line is built from the
same table: `-@all`, then the ACL categories in ALLOWED_CATEGORIES, minus DENIED_CATEGORIES,
then the `explicit` groups as `+command` / `-command`. Groups that are not explicit are what
those categories give; the integration test (tests/integration/test_acl_policy.py) walks every
command of a real server through `ACL DRYRUN` and fails when the server and this table disagree,
or when the server has a command this table does not list (a new Redis version).

Explicit groups may only name commands Redis 7.0 knows: an ACL file naming an unknown command
does not load. Commands added in 7.2 follow the categories (NEWER_COMMANDS).
"""

from __future__ import annotations

from dataclasses import dataclass

# Categories whose commands work on the app's own keys and connection.
ALLOWED_CATEGORIES = (
    "read",
    "write",
    "keyspace",
    "string",
    "hash",
    "list",
    "set",
    "sortedset",
    "stream",
    "bitmap",
    "hyperloglog",
    "geo",
    "pubsub",
    "transaction",
    "connection",
)
# Removed again after the allowed ones: they hold what sneaks in through @write, @keyspace and
# @connection (FLUSHALL, MIGRATE, RESTORE, SWAPDB, KEYS, CLIENT KILL/PAUSE/LIST, ...), and every
# administrative command a later Redis version adds is refused without a change here.
DENIED_CATEGORIES = ("admin", "dangerous", "scripting")


@dataclass(frozen=True)
class Group:
    """Commands with one verdict and one reason. `explicit`: rendered as +cmd/-cmd rules
    (the categories would give the other verdict, or none)."""

    allowed: bool
    reason: str
    commands: tuple[str, ...]
    explicit: bool = False


# Added in Redis 7.2 (the prod image); absent from 7.0, so never named in a rule.
NEWER_COMMANDS = frozenset({"client|setinfo", "client|no-touch", "waitaof", "cluster|myshardid"})

SCRIPTING_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "script|load", "script|exists")

_DATA = Group(
    True,
    "data commands on the app's own keys (strings, hashes, lists, sets, sorted sets, streams, bitmaps, HyperLogLog, geo)",
    (
        # strings
        "append", "decr", "decrby", "get", "getdel", "getex", "getrange", "getset", "incr", "incrby",
        "incrbyfloat", "lcs", "mget", "mset", "msetnx", "psetex", "set", "setex", "setnx", "setrange",
        "strlen", "substr",
        # hashes
        "hdel", "hexists", "hget", "hgetall", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget", "hmset",
        "hrandfield", "hscan", "hset", "hsetnx", "hstrlen", "hvals",
        # lists
        "blmove", "blmpop", "blpop", "brpop", "brpoplpush", "lindex", "linsert", "llen", "lmove", "lmpop",
        "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "rpop", "rpoplpush", "rpush",
        "rpushx",
        # sets
        "sadd", "scard", "sdiff", "sdiffstore", "sinter", "sintercard", "sinterstore", "sismember",
        "smembers", "smismember", "smove", "spop", "srandmember", "srem", "sscan", "sunion", "sunionstore",
        # sorted sets
        "bzmpop", "bzpopmax", "bzpopmin", "zadd", "zcard", "zcount", "zdiff", "zdiffstore", "zincrby",
        "zinter", "zintercard", "zinterstore", "zlexcount", "zmpop", "zmscore", "zpopmax", "zpopmin",
        "zrandmember", "zrange", "zrangebylex", "zrangebyscore", "zrangestore", "zrank", "zrem",
        "zremrangebylex", "zremrangebyrank", "zremrangebyscore", "zrevrange", "zrevrangebylex",
        "zrevrangebyscore", "zrevrank", "zscan", "zscore", "zunion", "zunionstore",
        # streams
        "xack", "xadd", "xautoclaim", "xclaim", "xdel", "xgroup|create", "xgroup|createconsumer",
        "xgroup|delconsumer", "xgroup|destroy", "xgroup|help", "xgroup|setid", "xinfo|consumers",
        "xinfo|groups", "xinfo|help", "xinfo|stream", "xlen", "xpending", "xrange", "xread", "xreadgroup",
        "xrevrange", "xsetid", "xtrim",
        # bitmaps, HyperLogLog, geo
        "bitcount", "bitfield", "bitfield_ro", "bitop", "bitpos", "getbit", "setbit",
        "pfadd", "pfcount", "pfmerge",
        "geoadd", "geodist", "geohash", "geopos", "georadius", "georadius_ro", "georadiusbymember",
        "georadiusbymember_ro", "geosearch", "geosearchstore",
    ),
)  # fmt: skip

_KEYSPACE = Group(
    True,
    "generic key commands on the app's keys: expiry, delete, rename, copy, SCAN, OBJECT/MEMORY USAGE of one key",
    (
        "copy", "dbsize", "del", "dump", "exists", "expire", "expireat", "expiretime", "move", "persist",
        "pexpire", "pexpireat", "pexpiretime", "pttl", "randomkey", "rename", "renamenx", "scan", "touch",
        "ttl", "type", "unlink", "object|encoding", "object|freq", "object|help", "object|idletime",
        "object|refcount", "memory|usage",
    ),
)  # fmt: skip

_PUBSUB_TRANSACTIONS = Group(
    True,
    "pub/sub (channels `&*`) and MULTI/EXEC transactions",
    (
        "psubscribe", "publish", "pubsub|channels", "pubsub|numpat", "pubsub|numsub", "pubsub|shardchannels",
        "pubsub|shardnumsub", "punsubscribe", "spublish", "ssubscribe", "subscribe", "sunsubscribe",
        "unsubscribe", "discard", "exec", "multi", "unwatch", "watch",
    ),
)  # fmt: skip

_CONNECTION = Group(
    True,
    "the client's own connection: AUTH/HELLO, CLIENT about itself (name, id, tracking), COMMAND introspection "
    "(the cluster client reads COMMAND), WAIT, READONLY/READWRITE/ASKING for cluster replicas and redirects",
    (
        "auth", "hello", "ping", "echo", "quit", "reset", "select", "wait", "waitaof", "asking", "readonly",
        "readwrite", "client|caching", "client|getname", "client|getredir", "client|help", "client|id",
        "client|info", "client|reply", "client|setname", "client|setinfo", "client|no-touch",
        "client|tracking", "client|trackinginfo", "command|count", "command|docs", "command|getkeys",
        "command|getkeysandflags", "command|help", "command|info", "command|list",
    ),
)  # fmt: skip

_CLUSTER_DISCOVERY = Group(
    True,
    "read-only cluster discovery a cluster-aware client needs (slot map, node ids, key slots)",
    ("cluster|slots", "cluster|shards", "cluster|nodes", "cluster|info", "cluster|keyslot", "cluster|myid"),
    explicit=True,
)

_SERVER_FACTS = Group(
    True,
    "read-only facts client libraries and cache dashboards read (INFO for hit ratio and memory, TIME, "
    "ACL WHOAMI); SORT is flagged @dangerous only because BY/GET reach keys outside a key pattern, and the app has ~*",
    ("info", "time", "acl|whoami", "sort", "sort_ro"),
    explicit=True,
)

_REPLICATION = Group(
    False,
    "the replication protocol: a client could pose as a replica (WAIT 1 would succeed with no real replica) "
    "and stream the whole dataset",
    ("sync", "psync", "replconf"),
)

_OTHER_CLIENTS = Group(
    False,
    "acts on other clients: PAUSE/KILL/UNBLOCK block or cut them (the replication link included), LIST shows "
    "their addresses and last commands, NO-EVICT exempts a connection from client eviction",
    ("client|kill", "client|list", "client|pause", "client|unpause", "client|unblock", "client|no-evict"),
)

_BULK_DATA = Group(
    False,
    "wipes, swaps or moves data in bulk: FLUSHALL/FLUSHDB/SWAPDB, MIGRATE ships keys to any address, "
    "RESTORE writes raw serialised payloads, KEYS blocks the node on the whole keyspace (use SCAN)",
    ("flushall", "flushdb", "swapdb", "migrate", "restore", "restore-asking", "keys"),
)

_TOPOLOGY = Group(
    False,
    "changes the topology or the cluster's state: replication, failover, slots, membership, epochs",
    (
        "replicaof", "slaveof", "failover", "cluster|addslots", "cluster|addslotsrange", "cluster|bumpepoch",
        "cluster|delslots", "cluster|delslotsrange", "cluster|failover", "cluster|flushslots", "cluster|forget",
        "cluster|meet", "cluster|replicate", "cluster|reset", "cluster|saveconfig", "cluster|set-config-epoch",
        "cluster|setslot",
    ),
)  # fmt: skip

_CLUSTER_INTERNALS = Group(
    False,
    "cluster internals no client needs: bus links, failure reports, per-slot key listings (KEYS by slot), "
    "replica lists (CLUSTER NODES/SHARDS already show them)",
    (
        "cluster|links", "cluster|count-failure-reports", "cluster|countkeysinslot", "cluster|getkeysinslot",
        "cluster|replicas", "cluster|slaves", "cluster|help", "cluster|myshardid",
    ),
)  # fmt: skip

_SERVER_ADMIN = Group(
    False,
    "server administration: configuration, modules, persistence, shutdown, DEBUG, MONITOR (every client's commands)",
    (
        "config|get", "config|help", "config|resetstat", "config|rewrite", "config|set", "module|help",
        "module|list", "module|load", "module|loadex", "module|unload", "debug", "monitor", "save", "bgsave",
        "bgrewriteaof", "lastsave", "shutdown",
    ),
)  # fmt: skip

_DIAGNOSTICS = Group(
    False,
    "operators' diagnostics, read as admin: SLOWLOG/LATENCY RESET would erase the evidence, MEMORY PURGE/DOCTOR "
    "and ROLE are node internals",
    (
        "slowlog|get", "slowlog|help", "slowlog|len", "slowlog|reset", "latency|doctor", "latency|graph",
        "latency|help", "latency|histogram", "latency|history", "latency|latest", "latency|reset",
        "memory|doctor", "memory|help", "memory|malloc-stats", "memory|purge", "memory|stats", "role",
        "pfdebug", "pfselftest",
    ),
)  # fmt: skip

_ACL = Group(
    False,
    "ACL management (users, passwords, the ACL log); ACL WHOAMI is allowed above",
    (
        "acl|cat", "acl|deluser", "acl|dryrun", "acl|genpass", "acl|getuser", "acl|help", "acl|list",
        "acl|load", "acl|log", "acl|save", "acl|setuser", "acl|users",
    ),
)  # fmt: skip

_SCRIPT_ADMIN = Group(
    False,
    "script and function administration: SCRIPT FLUSH/KILL act on every client's scripts, SCRIPT DEBUG blocks "
    "the node; functions are server-wide code this deployment does not ship",
    (
        "script|flush", "script|kill", "script|debug", "script|help", "fcall", "fcall_ro", "function|delete",
        "function|dump", "function|flush", "function|help", "function|kill", "function|list", "function|load",
        "function|restore", "function|stats",
    ),
)  # fmt: skip

_NO_USE = Group(
    False,
    "no client use: PUBSUB HELP is the only PUBSUB subcommand outside @pubsub, LOLWUT draws art at CPU cost",
    ("pubsub|help", "lolwut"),
    explicit=True,
)

SCRIPTING_ALLOWED_REASON = (
    "Lua scripts on the app's keys (redis.app_scripting: true); a busy script makes the node answer BUSY "
    "after busy-reply-threshold ms but keeps running until an operator runs SCRIPT KILL"
)
SCRIPTING_DENIED_REASON = (
    "Lua scripting is off (redis.app_scripting: false): a busy script blocks its node, and a blocked master "
    "is failed over; busy-reply-threshold only makes the node answer BUSY, it does not stop the script"
)


def app_policy(scripting: bool = False) -> tuple[Group, ...]:
    """The app user's table. `scripting` allows EVAL and friends (never SCRIPT FLUSH/KILL)."""
    if scripting:
        scripts = Group(True, SCRIPTING_ALLOWED_REASON, SCRIPTING_COMMANDS, explicit=True)
    else:
        scripts = Group(False, SCRIPTING_DENIED_REASON, SCRIPTING_COMMANDS)  # -@scripting
    return (
        _DATA,
        _KEYSPACE,
        _PUBSUB_TRANSACTIONS,
        _CONNECTION,
        _CLUSTER_DISCOVERY,
        _SERVER_FACTS,
        scripts,
        _REPLICATION,
        _OTHER_CLIENTS,
        _BULK_DATA,
        _TOPOLOGY,
        _CLUSTER_INTERNALS,
        _SERVER_ADMIN,
        _DIAGNOSTICS,
        _ACL,
        _SCRIPT_ADMIN,
        _NO_USE,
    )


def verdicts(scripting: bool = False) -> dict[str, bool]:
    """command -> allowed, for every command the table lists."""
    return {command: group.allowed for group in app_policy(scripting) for command in group.commands}


def app_rules(scripting: bool = False, extra_denied: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The app user's command rules, in the order Redis applies them (later rules win).

    `extra_denied` (redis.disabled_commands) comes last, so an operator can always take more away.
    """
    groups = app_policy(scripting)
    return (
        "-@all",
        *(f"+@{category}" for category in ALLOWED_CATEGORIES),
        *(f"-@{category}" for category in DENIED_CATEGORIES),
        *(f"+{c}" for g in groups if g.explicit and g.allowed for c in g.commands),
        *(f"-{c}" for g in groups if g.explicit and not g.allowed for c in g.commands),
        *(f"-{c.lower()}" for c in extra_denied),
    )


def markdown_table(scripting: bool = False) -> str:
    """The table as docs/security.md shows it (a test keeps the two equal)."""
    lines = ["| verdict | commands | why |", "| --- | --- | --- |"]
    for group in app_policy(scripting):
        verdict = "allowed" if group.allowed else "refused"
        commands = ", ".join(f"`{c.upper().replace('|', ' ')}`" for c in group.commands)
        lines.append(f"| {verdict} | {commands} | {group.reason} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ monitor user
# The `monitor` user the Redis exporter (prometheus-redis-exporter 1.45, the Debian 12 package and
# the pinned image) logs in with: what it runs, found with ACL LOG against a real exporter. No key,
# no channel. Each entry: (ACL rule, why).
MONITOR_NODE_RULES: tuple[tuple[str, str], ...] = (
    ("+ping", "liveness"),
    ("+info", "INFO ALL: memory, clients, persistence, replication, stats (nearly every metric)"),
    ("+cluster|info", "cluster_state and slots ok/pfail/fail (cluster topology; an error elsewhere)"),
    ("+slowlog|len", "the slowlog length on the dashboard"),
    ("+latency|latest", "latency-monitor spikes (event names and milliseconds only)"),
    ("+client|setname", "names its connection redis_exporter, so CLIENT LIST shows who it is"),
)
# What the exporter tries and is refused on purpose (it then exports the rest).
MONITOR_NODE_REFUSED: tuple[tuple[str, str], ...] = (
    ("config|get", "CONFIG GET * would show masterauth, the replication user's password (redis_config_* metrics are lost)"),
    ("slowlog|get", "slowlog entries hold the commands' arguments: application keys and values"),
)
MONITOR_SENTINEL_RULES: tuple[tuple[str, str], ...] = (
    ("+ping", "liveness"),
    ("+info", "INFO: sentinel_masters, tilt, running scripts"),
    ("+client|setname", "names its connection redis_exporter"),
    ("+sentinel|masters", "each group's master address, status, quorum and sentinel/replica counts"),
    ("+sentinel|sentinels", "the other sentinels of a group, to count the ones that are up"),
    ("+sentinel|slaves", "a group's replicas, to count the ones that are up"),
    ("+sentinel|ckquorum", "whether a group's quorum and a majority of sentinels are reachable (read-only check)"),
)


def monitor_rules(sentinel: bool = False) -> tuple[str, ...]:
    """The monitor user's ACL rules after `on #<hash>`: nothing but the listed commands."""
    table = MONITOR_SENTINEL_RULES if sentinel else MONITOR_NODE_RULES
    return ("-@all", *(rule for rule, _ in table))


def monitor_markdown_table() -> str:
    """docs/security.md's table of the monitor user's rights (tests keep them equal)."""
    lines = ["| where | command | why |", "| --- | --- | --- |"]
    for where, table, verdict in (
        ("nodes", MONITOR_NODE_RULES, "allowed"),
        ("nodes", MONITOR_NODE_REFUSED, "refused"),
        ("sentinels", MONITOR_SENTINEL_RULES, "allowed"),
    ):
        for rule, why in table:
            command = rule.lstrip("+").replace("|", " ").upper()
            lines.append(f"| {where} | `{command}` ({verdict}) | {why} |")
    return "\n".join(lines) + "\n"
