"""Backup and restore of one mixed data set, against the raw RESTORE rate of the same machine.

    venv/bin/python benchmarks/backup_benchmark.py [--keys 500000] [--rounds 3]

1. Fills a 3-master sandbox (ports 7960-7965) with KEYS keys: strings, hashes, lists, sets,
   sorted sets, streams; a fifth of them with a TTL.
2. `backup`: one RDB per shard from the replicas (redis-cli --rdb + redis-check-rdb). The
   source sandbox is then stopped: what follows reads the backup, and the source's own
   after-fill work (its AOF rewrites and saves) must not land in one side's timing only.
3. The raw limit: the same RESTORE commands, grouped by the owning master, written as RESP
   files and streamed with `redis-cli --pipe` (one per master, concurrently) into a 3-master
   sandbox (7970-7975) with the stack's settings (AOF on, sanitize-dump-payload clients).
   Generating the files is not timed.
4. `restore` of the backup into the same sandbox, flushed. Steps 3 and 4 alternate for ROUNDS
   rounds; the table gives each side's median.
5. Steps 3 and 4 again with the CPUs split: the target sandbox's servers on CPU 1, the restore
   (or the raw redis-cli) and its children on CPU 0. That is the production layout, where the
   restore runs on an operator's machine and the cluster on its own hosts; on one shared pair of
   cores the restore's reading (the temporary servers' DUMP, Python) takes CPU from the target.
Prints a markdown table for the README's "Backups and recovery" section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import redis
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.ops.backup import read_manifest, take_backup
from cachelayer.ops.restore import Router, open_backup, read_batches, restore, temp_server
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from cachelayer.sandbox.targets import target_of_sandbox


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


def raw_commands(backup: Path, box: LocalSandbox, scratch: Path) -> tuple[int, list[int]]:
    """Writes the backup's RESTORE commands, exactly as the restore builds them, as one RESP file
    per owning master (`<port>.resp` in `scratch`); (commands, ports)."""
    router = Router(target_of_sandbox(box))
    files: dict[int, BinaryIO] = {}
    count = 0
    with open_backup(str(backup), stack=read_manifest(backup)["stack"]) as (_, shards):
        for shard in shards:
            with temp_server(shard.path) as server:
                for batch in read_batches(server.client, 1000, replace=False):
                    for key, command in zip(batch.keys, batch.commands, strict=True):
                        port = router.client_for(key, None).connection_pool.connection_kwargs["port"]
                        if port not in files:
                            files[port] = (scratch / f"{port}.resp").open("wb")
                        files[port].write(command)
                    count += len(batch.keys)
    for stream in files.values():
        stream.close()
    router.close()
    return count, list(files)


def wait_for_aof_rewrite(client: redis.Redis) -> None:
    while (state := client.info("persistence"))["aof_rewrite_in_progress"] or state["aof_rewrite_scheduled"]:
        time.sleep(0.1)


def flush(box: LocalSandbox) -> None:
    """Empties the target between runs and compacts every node's AOF, so that no run pays for
    an AOF rewrite the previous one triggered."""
    target = target_of_sandbox(box)
    router = Router(target)
    for master in router.masters():
        master.flushall()
    router.close()
    box.wait_converged()
    for node in target.nodes:
        with target.client(node, timeout=30) as client:
            wait_for_aof_rewrite(client)
            client.bgrewriteaof()
            wait_for_aof_rewrite(client)
    time.sleep(1)


def raw_seconds(box: LocalSandbox, ports: list[int], scratch: Path) -> float:
    """Seconds to stream the RESP files with `redis-cli --pipe`, one per master, concurrently."""
    flush(box)
    env = {**target_of_sandbox(box).cli_env()}
    begin = time.monotonic()
    children = [subprocess.Popen(["redis-cli", "-p", str(port), "--user", "admin", "--pipe"],
                                 stdin=(scratch / f"{port}.resp").open("rb"), stdout=subprocess.DEVNULL, env=env)
                for port in ports]
    for child in children:
        child.wait()
    return time.monotonic() - begin


def pin(box: LocalSandbox, cpus: set[int] | None) -> None:
    """The target's servers on `cpus` and this process (and so its children) on the others;
    None: every CPU for both."""
    everything = os.sched_getaffinity(0) | (cpus or set())
    for record in box.records().values():
        os.sched_setaffinity(record.pid, cpus or everything)
    os.sched_setaffinity(0, everything - cpus if cpus else everything)


def rounds(box: LocalSandbox, backup: Path, keys: int, ports: list[int], work: Path, count: int,
           layout: str) -> tuple[float, float]:
    """Median seconds of (restore, raw) over `count` alternating rounds."""
    restores, raws = [], []
    for round_ in range(count):
        raws.append(raw_seconds(box, ports, work))
        flush(box)
        with open_backup(str(backup), stack=read_manifest(backup)["stack"]) as (name, files):
            result = restore(files, target_of_sandbox(box), source=name, verify=False)  # the write path alone
        if result.restored != keys:
            raise SystemExit(f"round {round_ + 1}: restored {result.restored} keys of {keys}")
        restores.append(result.seconds)
        print(f"{layout}, round {round_ + 1}: raw {raws[-1]:.2f} s, restore {restores[-1]:.2f} s", file=sys.stderr)
    return statistics.median(restores), statistics.median(raws)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cachelayer-bench-"))
    source, target = sandbox(7960, work / "source"), sandbox(7970, work / "target")
    try:
        source.up()
        print(f"filling {args.keys} keys…", file=sys.stderr)
        fill(source, args.keys)
        source.wait_converged()
        begin = time.monotonic()
        path = take_backup(target_of_sandbox(source), work / "backups")
        backup_seconds = time.monotonic() - begin
        source.down()
        size = sum(f.stat().st_size for f in path.glob("*.rdb"))
        target.up()
        keys, ports = raw_commands(path, target, work)
        rows = [("backup (3 shards, from replicas, checked)", args.keys, backup_seconds, "-")]
        layouts: list[tuple[str, str, set[int] | None]] = [("shared", "2 shared CPUs", None)]
        if len(os.sched_getaffinity(0)) >= 2:
            layouts.append(("split", "target on CPU 1, restore on CPU 0", {max(os.sched_getaffinity(0))}))
        for layout, label, cpus in layouts:
            pin(target, cpus)
            restore_time, raw_time = rounds(target, path, keys, ports, work, args.rounds, layout)
            rows += [(f"restore into an empty 3-master cluster, {label}", keys, restore_time,
                      f"{raw_time / restore_time:.2f}"),
                     (f"raw limit: same RESTOREs, `redis-cli --pipe` per master, {label}", keys, raw_time, "1.00")]
        pin(target, None)
        print(f"backup size {size / 1e6:.1f} MB; restore and raw: median of {args.rounds} rounds", file=sys.stderr)
        print("| operation | keys | seconds | keys/s | vs raw |")
        print("|---|---:|---:|---:|---:|")
        for label, count, seconds, ratio in rows:
            print(f"| {label} | {count:,} | {seconds:.1f} | {count / seconds:,.0f} | {ratio} |")
    finally:
        target.down()
        source.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
