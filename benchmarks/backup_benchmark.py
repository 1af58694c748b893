"""Backup and restore of one mixed data set, against the raw RESTORE rate of the same machine.

    venv/bin/python benchmarks/backup_benchmark.py [--keys 500000]

1. Fills a 3-master sandbox (ports 7960-7965) with KEYS keys: strings, hashes, lists, sets,
   sorted sets, streams; a fifth of them with a TTL.
2. `backup`: one RDB per shard from the replicas (redis-cli --rdb + redis-check-rdb).
3. `restore` into an empty 3-master sandbox (7970-7975), the stack's settings (AOF on,
   sanitize-dump-payload clients).
4. The raw limit: the same RESTORE commands, grouped by the owning master, written as RESP
   files and streamed with `redis-cli --pipe` (one per master, concurrently) into the same
   flushed sandbox. Generating the files is not timed.
Prints a markdown table for the README's "Backups and recovery" section.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis.cluster import ClusterNode, RedisCluster

from cachelayer.backup import take_backup
from cachelayer.restore import Router, open_backup, restore, temp_server
from cachelayer.sandbox import LocalSandbox, sandbox_settings
from cachelayer.target import target_of_sandbox


def sandbox(base_port: int, workdir: Path) -> LocalSandbox:
    settings, config = sandbox_settings({"redis": {"maxmemory": "1gb"}}, "bench", "cluster", base_port)
    return LocalSandbox(settings, workdir, config=config)


def fill(box: LocalSandbox, keys: int) -> None:
    client = RedisCluster(startup_nodes=[ClusterNode(n.address, n.port) for n in box.topology.nodes],
                          username="admin", password=box.passwords.admin, socket_timeout=30)
    value = "v" * 100
    for start in range(0, keys, 5000):
        pipe = client.pipeline()
        for i in range(start, min(start + 5000, keys)):
            kind, key = i % 10, f"bench:{i}"
            if kind < 6:
                pipe.set(key, value)
            elif kind == 6:
                pipe.hset(key, mapping={f"f{j}": value[:20] for j in range(5)})
            elif kind == 7:
                pipe.rpush(key, *[value[:20]] * 5)
            elif kind == 8:
                pipe.sadd(key, *[f"m{j}" for j in range(5)])
            elif i % 20 == 9:
                pipe.zadd(key, {f"m{j}": j for j in range(5)})
            else:
                pipe.xadd(key, {"f": value[:20]})
            if i % 5 == 0:
                pipe.expire(key, 86400)
        pipe.execute()
    client.close()


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def raw_rate(backup: Path, box: LocalSandbox, scratch: Path) -> tuple[int, float]:
    """(keys, seconds) of `redis-cli --pipe` with the same RESTORE commands, per master."""
    target = target_of_sandbox(box)
    router = Router(target)
    files: dict[int, tuple[object, object]] = {}
    count = 0
    with open_backup(str(backup)) as (_, shards):
        for shard in shards:
            with temp_server(shard.path) as server:
                cursor = 0
                while True:
                    cursor, keys = server.client.scan(cursor, count=1000)
                    pipe = server.client.pipeline(transaction=False)
                    for key in keys:
                        pipe.dump(key)
                        pipe.execute_command("PEXPIRETIME", key)
                    answers = pipe.execute()
                    for i, name in enumerate(keys):
                        key = name if isinstance(name, bytes) else name.encode()
                        payload, expires = answers[2 * i], int(answers[2 * i + 1])
                        client = router.client_for(key, None)
                        port = client.connection_pool.connection_kwargs["port"]
                        if port not in files:
                            files[port] = (client, (scratch / f"{port}.resp").open("wb"))
                        extra = (b"ABSTTL",) if expires > 0 else ()
                        files[port][1].write(resp(b"RESTORE", key, str(max(expires, 0)).encode(), payload, *extra))  # type: ignore[attr-defined]
                        count += 1
                    if cursor == 0:
                        break
    for _, stream in files.values():
        stream.close()  # type: ignore[attr-defined]
    for master in router.masters():
        master.flushall()
    router.close()
    env = {**target.cli_env()}
    begin = time.monotonic()
    children = [subprocess.Popen(["redis-cli", "-p", str(port), "--user", "admin", "--pipe"],
                                 stdin=(scratch / f"{port}.resp").open("rb"), stdout=subprocess.DEVNULL, env=env)
                for port in files]
    for child in children:
        child.wait()
    return count, time.monotonic() - begin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=500_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cachelayer-bench-"))
    source, target = sandbox(7960, work / "source"), sandbox(7970, work / "target")
    try:
        source.up()
        target.up()
        print(f"filling {args.keys} keys…", file=sys.stderr)
        fill(source, args.keys)
        source.wait_converged()
        begin = time.monotonic()
        path = take_backup(target_of_sandbox(source), work / "backups")
        backup_seconds = time.monotonic() - begin
        size = sum(f.stat().st_size for f in path.glob("*.rdb"))
        with open_backup(str(path)) as (name, files):
            result = restore(files, target_of_sandbox(target), source=name)
        keys, raw_seconds = raw_rate(path, target, work)
        restore_rate, raw = result.restored / result.seconds, keys / raw_seconds
        rows = [
            ("backup (3 shards, from replicas, checked)", args.keys, backup_seconds, args.keys / backup_seconds, "-"),
            ("restore into an empty 3-master cluster", result.restored, result.seconds, restore_rate,
             f"{restore_rate / raw:.2f}"),
            ("raw limit: same RESTOREs, `redis-cli --pipe` per master", keys, raw_seconds, raw, "1.00"),
        ]
        print(f"backup size {size / 1e6:.1f} MB", file=sys.stderr)
        print("| operation | keys | seconds | keys/s | vs raw |")
        print("|---|---:|---:|---:|---:|")
        for label, count, seconds, rate, ratio in rows:
            print(f"| {label} | {count:,} | {seconds:.1f} | {rate:,.0f} | {ratio} |")
    finally:
        target.down()
        source.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
