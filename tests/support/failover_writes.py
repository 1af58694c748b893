"""Writers that measure a Sentinel failover from the client's side, for the integration test and
benchmarks/load_balancer.py: a plain redis-py client through HAProxy's write port, and a
Sentinel-aware one (`Sentinel(...).master_for`). Each write is `SET w:<n> n` then `WAIT 1` on the
same connection: it counts as acknowledged only when a replica has it (WAIT returned >= 1)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.sentinel

from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox

WAIT_MS = 200


@dataclass
class FailoverWriter:
    """Writes `<prefix>:<n>` through a client made by `connect`, counting what happens."""

    name: str
    prefix: str
    connect: Callable[[], Any]  # a redis.Redis (plain or Sentinel-managed)
    acknowledged: list[str] = field(default_factory=list)
    written_at: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered) of each SET that succeeded
    refused_at: list[float] = field(default_factory=list)  # errors: the write did not succeed
    not_replicated: int = 0  # SET succeeded but WAIT saw no replica
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        client = self.connect()
        for n in itertools.count(1):
            if self._stop.is_set():
                break
            key = f"{self.prefix}:{n}"
            sent = time.monotonic()
            try:
                pipe = client.pipeline(transaction=False)
                pipe.set(key, n)
                pipe.execute_command("WAIT", 1, WAIT_MS)
                _, replicas = pipe.execute()
            except Exception as error:
                self.refused_at.append(time.monotonic())
                self.last_error = repr(error)
                time.sleep(0.01)
                continue
            self.written_at.append((sent, time.monotonic()))
            if int(replicas) >= 1:
                self.acknowledged.append(key)
            else:
                self.not_replicated += 1
            time.sleep(0.002)
        client.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def outage(self, since: float) -> float:
        """Seconds from `since` (the kill) until writes succeed again: the end of the longest pause
        between successful writes around the kill. (A write answered just after the kill, by the
        master before the signal took effect, does not end the outage.) Not WAIT-acknowledged: with
        one replica per group the promoted master has none until the old master rejoins."""
        done = sorted(answered for _, answered in self.written_at)
        before = [t for t in done if t < since]
        points = [*before[-1:], *(t for t in done if t >= since)]
        gaps = [(b - a, b) for a, b in itertools.pairwise(points)]
        if not gaps or not any(t >= since for t in done):
            return float("inf")
        _, resumed = max(gaps)
        return resumed - since

    def refused_since(self, since: float) -> int:
        return sum(1 for t in self.refused_at if t >= since)

    def lost(self, master: redis.Redis) -> list[str]:
        """Acknowledged keys that `master` (the group's current master) does not hold."""
        keys = list(self.acknowledged)
        values: list[Any] = []
        for start in range(0, len(keys), 1000):
            values += master.mget(keys[start : start + 1000])
        return [key for key, value in zip(keys, values, strict=True) if value is None or int(value) != int(key.split(":")[1])]


def plain_client(address: str, port: int, password: str) -> Callable[[], redis.Redis]:
    """A client that knows one address (HAProxy's write port) and nothing of Sentinel."""

    def connect() -> redis.Redis:
        return redis.Redis(
            host=address, port=port, username=USERS.app, password=password, socket_timeout=2,
            socket_connect_timeout=0.5, decode_responses=True,
        )

    return connect


def sentinel_client(sandbox: LocalSandbox, group: str) -> Callable[[], redis.Redis]:
    def connect() -> redis.Redis:
        app, password = USERS.app, sandbox.passwords.app
        sentinel = redis.sentinel.Sentinel(
            [(s.address, s.port) for s in sandbox.topology.sentinels],
            sentinel_kwargs={"username": app, "password": password, "socket_timeout": 0.5},
            username=app, password=password, socket_timeout=2, socket_connect_timeout=0.5,
        )
        return sentinel.master_for(group, decode_responses=True)

    return connect


@dataclass(frozen=True)
class Measurement:
    client: str
    writes_again_seconds: float
    refused: int
    acknowledged: int
    lost: int


def measure(writer: FailoverWriter, killed_at: float, master: redis.Redis) -> Measurement:
    return Measurement(
        writer.name, writer.outage(killed_at), writer.refused_since(killed_at), len(writer.acknowledged),
        len(writer.lost(master)),
    )


def table(rows: list[Measurement]) -> str:
    lines = [
        "| client | writes succeed again after the kill | writes refused meanwhile | acknowledged writes (WAIT 1) | acknowledged writes lost |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.client} | {r.writes_again_seconds:.2f} s | {r.refused} | {r.acknowledged} | {r.lost} |" for r in rows
    ]
    return "\n".join(lines)
