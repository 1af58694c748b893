"""Sentinel topology: three master/replica groups, three sentinels, quorum 2.

down_after_milliseconds is lowered to 1000 (stack default 5000) to keep the automatic
failover test short; failover_timeout to 10 s so a second failover is not held back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox
from support.sandbox_processes import kill

from .conftest import BootedSandbox, boot, wait_until

pytestmark = pytest.mark.integration

BASE = 7140


@pytest.fixture(scope="module")
def sentinel(sandbox_factory: Callable[..., LocalSandbox]) -> BootedSandbox:
    sandbox = sandbox_factory(
        BASE, topology="sentinel", sentinel={"down_after_milliseconds": 1000, "failover_timeout": 10000}
    )
    return boot(sandbox)


def master_address(sandbox: LocalSandbox, group: str) -> tuple[str, int]:
    with sandbox.admin_client(sandbox.topology.sentinels[0]) as client:
        reply: Any = client.sentinel_get_master_addr_by_name(group)
    return str(reply[0]), int(reply[1])


def test_each_sentinel_has_a_quorum_for_each_group(sentinel: BootedSandbox) -> None:
    sandbox = sentinel.sandbox
    assert len(sandbox.topology.sentinels) == 3 and len(sandbox.topology.masters) == 3
    for watcher in sandbox.topology.sentinels:
        with sandbox.admin_client(watcher) as client:
            for master in sandbox.topology.masters:
                reply = client.execute_command("SENTINEL", "CKQUORUM", master.group)
                assert str(reply).startswith("OK"), f"{watcher.name} / {master.group}: {reply}"
                assert master_address(sandbox, master.group) == (master.address, master.port)


def test_replicas_follow_their_planned_master(sentinel: BootedSandbox) -> None:
    sandbox = sentinel.sandbox
    for node in sandbox.topology.replicas:
        with sandbox.admin_client(node) as client:
            replication = client.info("replication")
        planned = sandbox.topology.master_of(node)
        assert (replication["role"], replication["master_port"]) == ("slave", planned.port), node.name
        assert replication["master_link_status"] == "up", node.name


def test_app_user_writes_to_a_master(sentinel: BootedSandbox) -> None:
    sandbox = sentinel.sandbox
    host, port = master_address(sandbox, "redis-master-3")
    client = redis.Redis(host=host, port=port, username=USERS.app, password=sandbox.passwords.app, socket_timeout=2)
    try:
        assert client.set("course:1", "intro")
        assert client.get("course:1") == b"intro"
    finally:
        client.close()


def test_manual_failover_promotes_the_replica(sentinel: BootedSandbox) -> None:
    sandbox = sentinel.sandbox
    master = sandbox.topology.masters[0]
    (replica,) = sandbox.topology.replicas_of(master)
    with sandbox.admin_client(sandbox.topology.sentinels[0]) as client:
        assert client.execute_command("SENTINEL", "FAILOVER", master.group) in ("OK", True)
    wait_until(lambda: master_address(sandbox, master.group) == (replica.address, replica.port), 30,
               f"{master.group} to move to {replica.endpoint}")
    wait_until(lambda: sandbox.admin(replica).info("replication")["role"] == "master", 30,
               f"{replica.name} to become master")
    wait_until(lambda: sandbox.admin(master).info("replication").get("master_port") == replica.port, 30,
               f"{master.name} to follow {replica.name}")


def test_killed_master_is_failed_over_automatically(sentinel: BootedSandbox) -> None:
    sandbox = sentinel.sandbox
    master = sandbox.topology.masters[1]
    (replica,) = sandbox.topology.replicas_of(master)
    kill(sandbox, master.name)  # SIGKILL
    wait_until(lambda: master_address(sandbox, master.group) == (replica.address, replica.port), 30,
               f"sentinels to fail {master.group} over to {replica.endpoint}")
    wait_until(lambda: sandbox.admin(replica).info("replication")["role"] == "master", 15,
               f"{replica.name} to become master")
    # Restarted at once, maybe before every sentinel has heard of the failover: its start script
    # takes the newest configuration (highest epoch), so it is a replica of the new master from
    # its first moment, not a second master until the sentinels convert it.
    sandbox.start(names=[master.name])
    with sandbox.admin_client(master) as admin:
        replication = admin.info("replication")
    assert (replication["role"], replication["master_port"]) == ("slave", replica.port), replication
    wait_until(lambda: sandbox.admin(master).info("replication")["master_link_status"] == "up", 30,
               f"{master.name}'s link to {replica.name}")
