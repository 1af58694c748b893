"""The app user's ACL on real servers agrees with the policy table (acl_policy.py).

Every command and subcommand the server knows is put to `ACL DRYRUN app ...` (run as admin: it
asks the ACL without running anything) and must get the table's verdict; a command missing from
the table fails the test by name, so a Redis upgrade's new commands are noticed. Then a few real
refusals and the clients' paths: RedisCluster discovery, Sentinel's replica discovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.sentinel import Sentinel

from cachelayer.plan.acl_policy import app_rules, verdicts
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox

from .conftest import BootedSandbox, boot, cluster_client

pytestmark = pytest.mark.integration

CLUSTER_BASE = 7400
SENTINEL_BASE = 7420
BUSY_REPLY_THRESHOLD = 1500
SCRIPTING_USER = "app-scripting"  # the app's rules with redis.app_scripting: true, set by the test


@pytest.fixture(scope="module")
def cluster(sandbox_factory: Callable[..., LocalSandbox]) -> BootedSandbox:
    return boot(sandbox_factory(CLUSTER_BASE, busy_reply_threshold=BUSY_REPLY_THRESHOLD))


@pytest.fixture(scope="module")
def sentinel(sandbox_factory: Callable[..., LocalSandbox]) -> BootedSandbox:
    return boot(sandbox_factory(SENTINEL_BASE, topology="sentinel"))


@pytest.fixture
def app(cluster: BootedSandbox) -> Iterator[redis.Redis]:
    sandbox = cluster.sandbox
    client = sandbox.client(sandbox.topology.nodes[0], USERS.app, sandbox.passwords.app)
    yield client
    client.close()


def raw(client: redis.Redis, *args: Any) -> Any:
    """A command without redis-py's reply parsing (COMMAND's callback expects another shape);
    an error reply is returned, not raised."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command(*args)
        try:
            return connection.read_response()
        except redis.ResponseError as error:
            return error
    finally:
        client.connection_pool.release(connection)


def server_commands(admin: redis.Redis) -> dict[str, int]:
    """Every command (`get`) and subcommand (`client|kill`) of the server, with its arity."""
    commands: dict[str, int] = {}
    for info in raw(admin, "COMMAND", "INFO", *raw(admin, "COMMAND", "LIST")):
        subcommands = info[9] if len(info) > 9 else []
        for entry in subcommands or [info]:
            commands[entry[0]] = int(entry[1])
    return commands


def dryrun(admin: redis.Redis, user: str, name: str, arity: int) -> tuple[bool, str]:
    """ACL DRYRUN with as many placeholder arguments as the arity asks (it checks arity first)."""
    words = name.split("|")
    args = [*words, *["0"] * (abs(arity) - len(words))]
    verdict = str(raw(admin, "ACL", "DRYRUN", user, *args))
    if verdict != "OK":
        assert "no permissions" in verdict, f"{name}: DRYRUN answered {verdict!r}, not a permission verdict"
    return verdict == "OK", verdict


@pytest.mark.parametrize("scripting", [False, True], ids=["rendered-app", "app_scripting"])
def test_every_server_command_gets_the_tables_verdict(cluster: BootedSandbox, scripting: bool) -> None:
    sandbox = cluster.sandbox
    with sandbox.admin_client(sandbox.topology.nodes[0]) as admin:
        user = USERS.app
        if scripting:  # the rules a stack with app_scripting: true renders, on a user of their own
            user = SCRIPTING_USER
            assert raw(admin, "ACL", "SETUSER", user, "reset", "on", "nopass", "~*", "&*", *app_rules(True)) == "OK"
        commands = server_commands(admin)
        assert len(commands) > 300 and "client|kill" in commands and "get" in commands
        table = verdicts(scripting)
        missing = sorted(set(commands) - set(table))
        assert missing == [], f"commands the policy table does not decide: {missing}"
        wrong = {}
        for name, arity in sorted(commands.items()):
            allowed, verdict = dryrun(admin, user, name, arity)
            if allowed != table[name]:
                wrong[name] = f"table says {'allowed' if table[name] else 'refused'}, server: {verdict}"
        assert wrong == {}


@pytest.mark.parametrize(
    "command",
    [
        ("SYNC",),
        ("PSYNC", "?", "-1"),
        ("REPLCONF", "listening-port", "6380"),
        ("CLIENT", "KILL", "TYPE", "replica"),
        ("CLIENT", "PAUSE", "10000"),
        ("CLIENT", "LIST"),
        ("EVAL", "return 1", "0"),
        ("MIGRATE", "127.0.0.1", "6390", "course:1", "0", "1000"),
        ("SLOWLOG", "RESET"),
        ("LATENCY", "RESET"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
        ("CLUSTER", "FAILOVER"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_the_app_user_is_refused(app: redis.Redis, command: tuple[str, ...]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
        app.execute_command(*command)
    assert app.ping()  # still connected: the command never ran


def test_wait_still_works_for_the_app(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    cluster_app = cluster_client(sandbox)
    try:
        owner = cluster_app.get_node_from_key("wait:1")
    finally:
        cluster_app.close()
    app = sandbox.client(owner.port, USERS.app, sandbox.passwords.app)
    try:
        assert app.set("wait:1", "1")
        assert app.execute_command("WAIT", "1", "2000") == 1  # the real replica acknowledged the write
    finally:
        app.close()


def test_the_cluster_client_reads_and_writes_as_app(cluster: BootedSandbox) -> None:
    client = cluster_client(cluster.sandbox)
    try:
        values = {f"acl:{i}": str(i) for i in range(60)}
        for key, value in values.items():
            assert client.set(key, value)
        assert {key: client.get(key) for key in values} == values
        assert len({client.get_node_from_key(key).port for key in values}) == 3  # redirects followed
        assert client.info("stats")  # INFO is allowed (hit ratio for the cache dashboards)
    finally:
        client.close()


def test_scripting_rules_allow_eval_but_not_script_flush(cluster: BootedSandbox) -> None:
    sandbox = cluster.sandbox
    node = sandbox.topology.nodes[0]
    with sandbox.admin_client(node) as admin:
        assert raw(admin, "ACL", "SETUSER", SCRIPTING_USER, "reset", "on", ">scripting-Pw-42x", "~*", "&*", *app_rules(True)) == "OK"
        # rendered from redis.busy_reply_threshold
        assert admin.config_get("busy-reply-threshold") == {"busy-reply-threshold": str(BUSY_REPLY_THRESHOLD)}
    scripting = sandbox.client(node, SCRIPTING_USER, "scripting-Pw-42x")
    try:
        assert scripting.eval("return 1", 0) == 1
        sha = scripting.script_load("return 2")
        assert scripting.evalsha(sha, 0) == 2
        for command in (("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("FUNCTION", "FLUSH")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                scripting.execute_command(*command)
    finally:
        scripting.close()


def test_sentinel_app_user_discovers_the_replicas(sentinel: BootedSandbox) -> None:
    sandbox = sentinel.sandbox
    topology = sandbox.topology
    credentials = {"username": USERS.app, "password": sandbox.passwords.app, "socket_timeout": 2}
    client = Sentinel([(s.address, s.port) for s in topology.sentinels], sentinel_kwargs=credentials, **credentials)
    try:
        for master in topology.masters:
            assert client.discover_master(master.group) == (master.address, master.port)
            # redis-py asks SENTINEL SLAVES and swallows a refusal as "no replicas" ([])
            replicas = [(r.address, r.port) for r in topology.replicas if topology.master_of(r) == master]
            assert sorted(client.discover_slaves(master.group)) == sorted(replicas), master.group
        # slave_for falls back to the master when discovery finds no replica: a refused write proves it did not
        group = topology.masters[0].group
        client.master_for(group, decode_responses=True).set("session:1", "alive")
        replica = client.slave_for(group, decode_responses=True)
        assert replica.get("session:1") in ("alive", None)  # replication is asynchronous
        with pytest.raises(redis.exceptions.ReadOnlyError):
            replica.set("session:1", "from-a-replica")
    finally:
        for connection in client.sentinels:
            connection.close()
