"""Scale-in without dropping a slot: 8 -> 6 nodes with a key in every slot, while a watcher
checks that the cluster serves all 16384 slots and a reader keeps reading. Ports 8100-8107."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from cachelayer.sandbox.targets import retire_sandbox_nodes

from .conftest import cluster_client, cluster_nodes

pytestmark = pytest.mark.integration

BASE = 8100


def one_key_per_slot() -> dict[str, str]:
    keys: dict[int, str] = {}
    index = 0
    while len(keys) < TOTAL_SLOTS:
        key = f"course:{index}"
        keys.setdefault(key_slot(key.encode()), key)
        index += 1
    return {key: f"value-{slot}" for slot, key in keys.items()}


@dataclass
class Watch:
    """What a watcher and a reader saw while the scale-in ran."""

    slot_gaps: list[str] = field(default_factory=list)
    read_errors: list[str] = field(default_factory=list)
    reads: int = 0
    polls: int = 0


@contextmanager
def watching(sandbox: LocalSandbox, values: dict[str, str]) -> Iterator[Watch]:
    watch = Watch()
    stop = threading.Event()
    keys = list(values)

    def poll_slots() -> None:
        with sandbox.admin_client(BASE) as admin:  # node 0 stays
            while not stop.is_set():
                info = admin.execute_command("CLUSTER INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != TOTAL_SLOTS:
                    watch.slot_gaps.append(f"state {info['cluster_state']}, {info['cluster_slots_ok']} slots ok")
                watch.polls += 1
                stop.wait(0.02)

    def read() -> None:
        client = cluster_client(sandbox)
        try:
            while not stop.is_set():
                key = random.choice(keys)
                try:
                    if client.get(key) != values[key]:
                        watch.read_errors.append(f"{key}: wrong value")
                except redis.RedisError as error:
                    watch.read_errors.append(f"{key}: {error}")
                watch.reads += 1
        finally:
            client.close()

    threads = [threading.Thread(target=poll_slots), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    try:
        yield watch
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_scale_in_from_8_to_6_keeps_every_key_and_every_slot_served(
    sandbox_factory: Callable[..., LocalSandbox], tmp_path: Path
) -> None:
    big = sandbox_factory(BASE, node_count=8, workdir=tmp_path / "sb")
    big.up()
    values = one_key_per_slot()
    client = cluster_client(big)
    try:
        client.mset_nonatomic(values)
    finally:
        client.close()

    settings, config = sandbox_settings({"redis": {"base_port": BASE}}, "test")
    small = LocalSandbox(settings, big.workdir, config=config)
    with pytest.raises(SandboxError, match="redis-8106, redis-8107 run"):
        small.up()  # stopping them would drop their slots: refused
    # The deployments' bootstrap (re-run by Pulumi before it deletes the removed nodes' services
    # or containers) refuses too, naming them and the drain command.
    with pytest.raises(SandboxError) as refused:
        small.bootstrap()
    named = str(refused.value).split("no longer plans:")[1].split(".\n")[0].split()
    assert sorted(named) == ["127.0.0.1:8106", "127.0.0.1:8107"], refused.value
    assert "cachelayer drain" in str(refused.value)

    lines: list[str] = []
    with watching(small, values) as watch:
        retired = retire_sandbox_nodes(small, report=lines.append)
    assert retired == ["redis-8106", "redis-8107"], lines
    assert watch.polls > 10 and watch.reads > 100, "the watchers barely ran: they prove nothing"
    assert watch.slot_gaps == [], watch.slot_gaps[:5]
    assert watch.read_errors == [], watch.read_errors[:5]

    result = small.up()
    assert result.started == ()
    assert small.status().problems() == []
    nodes = cluster_nodes(small, BASE)
    assert sorted(nodes) == [f"127.0.0.1:{BASE + i}" for i in range(6)]
    masters = {d["node_id"] for d in nodes.values() if "master" in d["flags"]}
    assert sorted(d["master_id"] for d in nodes.values() if "slave" in d["flags"]) == sorted(masters)
    assert not any((big.workdir / f"redis-{BASE + i}").exists() for i in (6, 7))
    assert set(small.records()) == {f"redis-{BASE + i}" for i in range(6)}

    client = cluster_client(small)
    try:
        assert client.mget_nonatomic(list(values)) == list(values.values()), "a key was lost"
    finally:
        client.close()
