"""Stock Redis defaults against the stack's data-safety defaults, side by side in one run.

    venv/bin/python benchmarks/data_safety.py

1. First sync: seconds from REPLICAOF to a replica in sync (repl-diskless-sync-delay 5 vs 0).
2. Short partition: the replica is stopped while 8 MB is written, its link cut, then resumed:
   full or partial resync (sync_full / sync_partial_ok) with a 1mb vs 64mb backlog.
3. One 12 MB SET into an 8 MB node holding 2000 keys: keys evicted (proto-max-bulk-len 512mb vs 1mb).
Ports 7680-7689 only (plain redis-server, no persistence).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

STOCK = {"repl-diskless-sync-delay": "5", "repl-backlog-size": "1mb", "proto-max-bulk-len": "512mb", "client-query-buffer-limit": "1gb", "maxmemory-clients": "0"}  # fmt: skip
OURS = {"repl-diskless-sync-delay": "0", "repl-backlog-size": "64mb", "proto-max-bulk-len": "1mb", "client-query-buffer-limit": "2mb", "maxmemory-clients": "5%"}  # fmt: skip


@contextmanager
def server(port: int, directives: dict[str, str]) -> Iterator[tuple[redis.Redis, subprocess.Popen[bytes]]]:
    with tempfile.TemporaryDirectory() as workdir:
        args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir,
                "--repl-diskless-sync", "yes"]  # fmt: skip
        for name, value in directives.items():
            args += [f"--{name}", value]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port, socket_timeout=10)
        wait(lambda: client.ping())
        try:
            yield client, process
        finally:
            process.terminate()
            process.wait(10)


def wait(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise TimeoutError


def in_sync(replica: redis.Redis) -> bool:
    info = replica.info("replication")
    return info["master_link_status"] == "up" and not info.get("master_sync_in_progress", 0)


def first_sync(port: int, directives: dict[str, str]) -> float:
    with server(port, directives) as (master, _), server(port + 1, directives) as (replica, _):
        master.set("seed", "x" * 1_000_000)
        started = time.monotonic()
        replica.replicaof("127.0.0.1", port)
        wait(lambda: in_sync(replica))
        return time.monotonic() - started


def partition(port: int, directives: dict[str, str]) -> tuple[int, int]:
    with server(port, directives) as (master, _), server(port + 1, directives) as (replica, process):
        replica.replicaof("127.0.0.1", port)
        wait(lambda: in_sync(replica))
        before = master.info("stats")
        os.kill(process.pid, signal.SIGSTOP)
        master.client_kill_filter(_type="replica")
        pipe = master.pipeline(transaction=False)
        for index in range(8000):
            pipe.set(f"k{index}", "v" * 1000)  # 8 MB the replica misses
        pipe.execute()
        os.kill(process.pid, signal.SIGCONT)
        wait(lambda: in_sync(replica) and replica.dbsize() == master.dbsize())
        after = master.info("stats")
        return after["sync_full"] - before["sync_full"], after["sync_partial_ok"] - before["sync_partial_ok"]


def oversized_set(port: int, directives: dict[str, str]) -> tuple[str, int]:
    small = {**directives, "maxmemory": "8mb", "maxmemory-policy": "allkeys-lru"}
    if directives is OURS:
        small["repl-backlog-size"] = "1mb"
    with server(port, small) as (client, _):
        pipe = client.pipeline(transaction=False)
        for index in range(2000):
            pipe.set(f"kept:{index}", "x" * 1000)
        pipe.execute()
        try:
            redis.Redis(port=port, socket_timeout=30).set("kept:0", "y" * (12 * 1024**2))
            outcome = "accepted"
        except redis.RedisError as error:
            outcome = f"refused ({type(error).__name__})"
        return outcome, 2000 - sum(1 for index in range(2000) if client.exists(f"kept:{index}"))


def main() -> None:
    rows = []
    stock, ours = first_sync(7680, STOCK), first_sync(7682, OURS)
    rows.append(("first sync of a replica, s", f"{stock:.2f}", f"{ours:.2f}", f"{stock / ours:.0f}x faster"))
    (s_full, s_partial), (o_full, o_partial) = partition(7684, STOCK), partition(7686, OURS)
    rows.append(("resync after 8 MB missed", f"full {s_full} / partial {s_partial}", f"full {o_full} / partial {o_partial}", ""))
    (s_outcome, s_lost), (o_outcome, o_lost) = oversized_set(7688, STOCK), oversized_set(7689, OURS)
    rows.append(("12 MB SET into 8 MB node", s_outcome, o_outcome, ""))
    rows.append(("keys evicted of 2000", str(s_lost), str(o_lost), ""))
    widths = [max(len(r[i]) for r in [("measure", "stock", "cachelayer", "ratio"), *rows]) for i in range(4)]
    for row in [("measure", "stock", "cachelayer", "ratio"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
