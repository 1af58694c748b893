"""Clients for the connection-limit rehearsal (test_connection_limits.py), run as a script inside
a network namespace (`ip netns exec rh-out python connection_clients.py ...`) or on a booted host
with Debian's python3. Prints one JSON line. Passwords come from the environment, never argv.

    brute HOST PORT SECONDS CONCURRENCY   AUTH guesses, a new connection for each (what a
                                          password-guessing tool does)
    pipelined HOST PORT SECONDS           AUTH guesses on one connection, 100 at a time
    hold HOST PORT COUNT CONCURRENCY      open COUNT connections and keep them; how many Redis served
    app HOST PORT SECONDS                 the application: a redis-py cluster client, 8 threads,
                                          SET/GET; halfway every pooled connection is dropped and
                                          made again (what a failover or a deploy does)

The raw modes use only the standard library (the booted hosts have no redis-py in their venv).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import threading
import time

CONNECT_TIMEOUT = 0.5  # a SYN the firewall drops is given up quickly and tried again, as a flood does
GUESS = b"*2\r\n$4\r\nAUTH\r\n$12\r\nnot-the-pass\r\n"
PING = b"*1\r\n$4\r\nPING\r\n"


async def brute(host: str, port: int, seconds: float, concurrency: int) -> dict[str, object]:
    start = time.monotonic()
    through = [0] * (int(seconds) + 1)  # WRONGPASS replies per second: guesses Redis checked
    dropped = [0] * (int(seconds) + 1)  # connection attempts that got no answer in time
    errors: list[str] = []

    async def worker() -> None:
        while (elapsed := time.monotonic() - start) < seconds:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except TimeoutError:
                dropped[int(elapsed)] += 1
                continue
            try:
                writer.write(GUESS)
                line = await asyncio.wait_for(reader.readline(), 5)
                if line.startswith(b"-WRONGPASS"):
                    through[min(int(time.monotonic() - start), int(seconds))] += 1
                else:
                    errors.append(line.decode(errors="replace")[:80])
            except OSError as error:
                errors.append(str(error))
            finally:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"through": through[: int(seconds)], "dropped": dropped[: int(seconds)], "errors": errors[:5],
            "error_count": len(errors)}  # fmt: skip


async def pipelined(host: str, port: int, seconds: float) -> dict[str, object]:
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    through = 0
    while time.monotonic() - start < seconds:
        writer.write(GUESS * 100)
        for _ in range(100):
            if (await reader.readline()).startswith(b"-WRONGPASS"):
                through += 1
    writer.close()
    return {"through": through, "seconds": time.monotonic() - start}


async def hold(host: str, port: int, count: int, concurrency: int) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    gate = asyncio.Semaphore(concurrency)
    served: list[asyncio.StreamWriter] = []
    refused = 0

    async def one() -> None:
        nonlocal refused
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                writer.write(PING)
                # With requirepass an unauthenticated PING gets -NOAUTH: Redis served the connection.
                line = await asyncio.wait_for(reader.readline(), 5)
            except (OSError, TimeoutError):
                refused += 1
                return
            if line.startswith((b"+PONG", b"-NOAUTH")):
                served.append(writer)
            else:
                refused += 1
                writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    result: dict[str, object] = {"served": len(served), "refused": refused}
    for writer in served:
        writer.close()
    return result


def app(host: str, port: int, seconds: float) -> dict[str, object]:
    import redis  # the application's client library (the venv's redis-py)

    client = redis.RedisCluster(host=host, port=port, password=os.environ["REDIS_PASSWORD"], socket_timeout=5)
    ops = 0
    errors: list[str] = []
    lock = threading.Lock()
    start = time.monotonic()

    def work(index: int) -> None:
        nonlocal ops
        done = 0
        while time.monotonic() - start < seconds:
            key = f"app:{index}:{done % 50}"
            try:
                client.set(key, done)
                client.get(key)
                done += 1
            except redis.RedisError as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
        with lock:
            ops += done

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    # Every pooled connection dropped at once: all of them are made again, as after a failover.
    client.disconnect_connection_pools()
    for thread in threads:
        thread.join()
    client.close()
    return {"ops": ops, "errors": errors[:5], "error_count": len(errors)}


def main(argv: list[str]) -> None:
    mode, host, port = argv[0], argv[1], int(argv[2])
    if mode == "brute":
        result = asyncio.run(brute(host, port, float(argv[3]), int(argv[4])))
    elif mode == "pipelined":
        result = asyncio.run(pipelined(host, port, float(argv[3])))
    elif mode == "hold":
        result = asyncio.run(hold(host, port, int(argv[3]), int(argv[4])))
    elif mode == "app":
        result = app(host, port, float(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: brute, pipelined, hold or app")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
