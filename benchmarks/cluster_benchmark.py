"""Benchmark the rendered cluster against stock Redis on the same machine, in the same run.

    venv/bin/python benchmarks/cluster_benchmark.py [--write-readme]

Prints a table of ratios (ours / stock), failover times (ours vs Redis's default
cluster-node-timeout 15000) and the sandbox bring-up time. `--write-readme` puts the table into
README.md between `<!-- benchmark:start -->` and `<!-- benchmark:end -->`. Takes ~4 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra"))

import redis

from cachelayer.config.stack_file import read_stack_config
from cachelayer.ops.health import TOTAL_SLOTS
from cachelayer.ports import free_port_block
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from cachelayer.sandbox.processes import require_binaries

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
# Free ports above the tests' fixed ones (7000-7990): a benchmark never takes a port a test is about to use.
BENCH_PORTS = (8100, 8900)
REDIS_DEFAULT_NODE_TIMEOUT = 15000


def free_base() -> int:
    """Six free node ports and their bus ports (+10000)."""
    return free_port_block(*BENCH_PORTS, offsets=(10000,), step=10)


@dataclass(frozen=True)
class Row:
    metric: str
    ours: str
    baseline: str
    ratio: str
    target: str


def stack_config(stack: str, **redis_overrides: object) -> dict[str, object]:
    config = read_stack_config(stack)
    config["redis"] = {**dict(config.get("redis") or {}), **redis_overrides}
    return config


def new_sandbox(stack: str, workdir: Path, **redis_overrides: object) -> LocalSandbox:
    settings, config = sandbox_settings(stack_config(stack, **redis_overrides), stack, topology="cluster")
    return LocalSandbox(settings, workdir, config=config)


@contextmanager
def stock_cluster(workdir: Path, base_port: int, appendonly: bool = False) -> Iterator[list[int]]:
    """Six redis-server processes with Redis's defaults (only what a cluster needs), no auth;
    with `appendonly`, also the AOF our nodes write (appendfsync everysec, Redis's default)."""
    ports = [base_port + i for i in range(6)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            data = workdir / f"stock-{port}"
            data.mkdir(parents=True)
            processes.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(port), "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}.conf", "--appendonly", "yes" if appendonly else "no",
                     "--dir", str(data),
                     "--logfile", str(data / "redis.log")],
                    stdout=subprocess.DEVNULL,
                )
            )
        for port in ports:
            wait_for(lambda p=port: redis.Redis(port=p).ping(), 10)
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True, capture_output=True, env=env,
        )
        wait_for(lambda: all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in ports), 30)
        yield ports
    finally:
        for process in processes:
            process.send_signal(signal.SIGKILL)
            process.wait()


def wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"condition not met within {timeout} s")


def redis_benchmark(port: int, pipeline: int, requests: int, auth: tuple[str, str] | None) -> dict[str, float]:
    """Requests per second of SET and GET through redis-benchmark --cluster."""
    argv = ["redis-benchmark", "--cluster", "-p", str(port), "-t", "set,get", "-n", str(requests),
            "-c", "50", "-P", str(pipeline), "-r", "100000", "--csv", "-q"]
    if auth is not None:
        # redis-benchmark does not read REDISCLI_AUTH (checked: no such string in the 7.0 binary),
        # so `-a` is unavoidable here. It is a benchmark-only cluster on loopback with a throwaway
        # password generated for this run, removed when the run ends.
        argv += ["--user", auth[0], "-a", auth[1]]
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = {}
    for line in output.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0] in ("SET", "GET"):
            result[cells[0]] = float(cells[1])
    if set(result) != {"SET", "GET"}:
        raise RuntimeError(f"unexpected redis-benchmark output:\n{output}")
    return result


def throughput_rows(ours: LocalSandbox, baselines: dict[str, int], rounds: int) -> list[Row]:
    """Median requests/s of ours and of each baseline cluster (label -> first port), interleaved
    round by round so drift on the machine hits all alike."""
    rows: list[Row] = []
    clusters: dict[str, tuple[int, tuple[str, str] | None]] = {
        "ours": (ours.topology.nodes[0].port, ("admin", ours.passwords.admin))
    }
    clusters |= {label: (port, None) for label, port in baselines.items()}
    # redis-benchmark's rps moves in steps of ~0.25 s of run time: long runs keep that step small.
    for pipeline, requests in ((1, 200000), (16, 1000000)):
        samples: dict[str, dict[str, list[float]]] = {name: {"SET": [], "GET": []} for name in clusters}
        for _ in range(rounds):
            for name, (port, credentials) in clusters.items():
                for test, rps in redis_benchmark(port, pipeline, requests, credentials).items():
                    samples[name][test].append(rps)
        for label in baselines:
            for test in ("SET", "GET"):
                mine, theirs = statistics.median(samples["ours"][test]), statistics.median(samples[label][test])
                rows.append(Row(f"{test} rps, -P {pipeline}, vs {label}", f"{mine:,.0f}", f"{theirs:,.0f}",
                                f"{mine / theirs:.2f}", ">= 0.90"))
    return rows


@dataclass(frozen=True)
class Failover:
    """Seconds from kill -9 of a master until each step of Redis Cluster's failover."""

    suspected: float  # a surviving master flags it PFAIL (no pong for cluster-node-timeout)
    failed: float  # flagged FAIL: a majority of masters agreed
    promoted: float  # its replica is a master
    recovered: float  # every survivor serves all 16384 slots


def failover_timeline(sandbox: LocalSandbox) -> Failover:
    victim = sandbox.topology.nodes[0]
    replicas: list[int] = []

    def replica_known() -> bool:
        # The victim's view may not list its replica yet right after bring-up: gossip is still spreading.
        with sandbox.admin_client(victim) as admin:
            nodes = admin.execute_command("CLUSTER NODES")
        victim_id = nodes[victim.endpoint]["node_id"]
        replicas[:] = [int(e.rsplit(":", 1)[1]) for e, d in nodes.items() if d["master_id"] == victim_id]
        return len(replicas) == 1

    wait_for(replica_known, 30)
    (replica,) = replicas
    survivors = [n.port for n in sandbox.topology.nodes if n.port != victim.port]
    witness = next(port for port in survivors if port != replica)
    seen: dict[str, float] = {}
    killed = time.monotonic()
    os.kill(sandbox.running()[victim.name].pid, signal.SIGKILL)

    def step(name: str, reached: bool) -> bool:
        if reached and name not in seen:
            seen[name] = time.monotonic() - killed
        return name in seen

    def recovered() -> bool:
        with sandbox.admin_client(witness) as admin:
            flags = admin.execute_command("CLUSTER NODES")[victim.endpoint]["flags"]
        step("suspected", "fail" in flags)
        step("failed", "fail" in flags.replace("fail?", ""))
        with sandbox.admin_client(replica) as admin:
            if not step("promoted", admin.info("replication")["role"] == "master"):
                return False
        for port in survivors:
            with sandbox.admin_client(port) as admin:
                info = admin.execute_command("CLUSTER INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != TOTAL_SLOTS:
                    return False
        return step("recovered", True)

    wait_for(recovered, 60)
    return Failover(seen["suspected"], seen["failed"], seen["promoted"], seen["recovered"])


def run(stack: str, rounds: int) -> list[Row]:
    require_binaries("redis-server", "redis-cli", "redis-benchmark")
    rows: list[Row] = []
    bring_up: list[float] = []
    ready: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cachelayer-bench-") as tmp:
        work = Path(tmp)
        ours = new_sandbox(stack, work / "ours", base_port=free_base())
        try:
            result = ours.up()
            bring_up.append(result.slots_ok_seconds)
            ready.append(result.seconds)
            print(f"our cluster up: all slots served in {result.slots_ok_seconds:.2f} s", file=sys.stderr)
            with stock_cluster(work, free_base()) as stock, stock_cluster(work, free_base(), appendonly=True) as aof:
                rows += throughput_rows(ours, {"stock": stock[0], "stock + AOF": aof[0]}, rounds)
        finally:
            ours.down()

        timeout = int(ours.settings.redis.cluster_node_timeout)
        measured: dict[int, Failover] = {}
        for node_timeout in (timeout, REDIS_DEFAULT_NODE_TIMEOUT):
            sandbox = new_sandbox(stack, work / f"failover-{node_timeout}", base_port=free_base(),
                                  cluster_node_timeout=node_timeout)
            try:
                result = sandbox.up()
                bring_up.append(result.slots_ok_seconds)
                ready.append(result.seconds)
                measured[node_timeout] = failover_timeline(sandbox)
                print(f"failover with cluster-node-timeout {node_timeout}: {measured[node_timeout]}", file=sys.stderr)
            finally:
                sandbox.down()
    ours_failover, default_failover = measured[timeout], measured[REDIS_DEFAULT_NODE_TIMEOUT]
    steps = (
        ("suspected", "master flagged PFAIL"),
        ("failed", "flagged FAIL by a majority"),
        ("promoted", "replica promoted"),
        ("recovered", "all slots served again"),
    )
    for field_name, what in steps:
        mine, theirs = getattr(ours_failover, field_name), getattr(default_failover, field_name)
        target = f"<= {timeout / 1000 + 1.5:.1f} s" if field_name == "recovered" else "-"
        rows.append(Row(f"failover: kill -9 -> {what}, s (node timeout {timeout} vs {REDIS_DEFAULT_NODE_TIMEOUT} ms)",
                        f"{mine:.2f}", f"{theirs:.2f}", f"{mine / theirs:.2f}", target))
    rows.append(Row("sandbox bring-up s (start -> all slots ok; median of 3)", f"{statistics.median(bring_up):.2f}",
                    "-", "-", "<= 4 s"))
    # What `sandbox up` prints as "ready": also every master with its replicas linked.
    rows.append(Row("sandbox ready s (start -> every replica linked, `up`'s \"ready\"; median of 3)",
                    f"{statistics.median(ready):.2f}", "-", "-", "<= 4 s"))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| metric | ours | baseline | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r.metric} | {r.ours} | {r.baseline} | {r.ratio} | {r.target} |" for r in rows]
    machine = f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, " + subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split(" sha=")[0]
    lines += ["", "Baselines: six stock `redis-server` with Redis's defaults (`--appendonly no`), and the same "
              "with the AOF our nodes write (`--appendonly yes`, everysec); same machine, same run, medians of "
              "interleaved rounds. "
              f"Measured {time.strftime('%Y-%m-%d')} on {machine} with "
              "`venv/bin/python benchmarks/cluster_benchmark.py --write-readme`."]
    return "\n".join(lines)


def write_readme(table: str) -> bool:
    text = README.read_text() if README.exists() else ""
    if START not in text or END not in text or text.index(START) > text.index(END):
        print(f"{README} has no {START} ... {END} markers: left unchanged", file=sys.stderr)
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", default="dev", help="stack whose settings are 'ours' (default: dev)")
    parser.add_argument("--rounds", type=int, default=3, help="redis-benchmark rounds per case (median)")
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark not found: run scripts/setup.sh (it installs redis-tools)", file=sys.stderr)
        return 1
    started = time.monotonic()
    table = markdown(run(args.stack, args.rounds))
    print(table)
    print(f"(benchmark took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.write_readme and write_readme(table):
        print(f"written to {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
