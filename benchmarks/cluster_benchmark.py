"""Benchmark the rendered cluster against stock Redis on the same machine, in the same run.

    PYTHONPATH=infra venv/bin/python benchmarks/cluster_benchmark.py [--write-readme]

Prints a table of ratios (ours / stock), failover times (ours vs Redis's default
cluster-node-timeout 15000) and the sandbox bring-up time. `--write-readme` puts the table into
README.md between `<!-- benchmark:start -->` and `<!-- benchmark:end -->`. Takes ~2 minutes.
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

from cachelayer.sandbox import TOTAL_SLOTS, LocalSandbox, require_binaries, sandbox_settings
from cachelayer.stack_file import PROJECT_ROOT, read_stack_config

README = PROJECT_ROOT / "README.md"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
OURS_PORT, STOCK_PORT, FAILOVER_PORTS = 7200, 7300, (7210, 7220)
REDIS_DEFAULT_NODE_TIMEOUT = 15000


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
def stock_cluster(workdir: Path, base_port: int) -> Iterator[list[int]]:
    """Six redis-server processes with Redis's defaults (only what a cluster needs), no auth."""
    ports = [base_port + i for i in range(6)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            data = workdir / f"stock-{port}"
            data.mkdir(parents=True)
            processes.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(port), "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}.conf", "--appendonly", "no", "--dir", str(data),
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


def throughput_rows(ours: LocalSandbox, stock_port: int, rounds: int) -> list[Row]:
    rows: list[Row] = []
    auth = ("admin", ours.passwords.admin)
    for pipeline, requests in ((1, 50000), (16, 200000)):
        samples: dict[str, dict[str, list[float]]] = {"ours": {"SET": [], "GET": []}, "stock": {"SET": [], "GET": []}}
        for _ in range(rounds):  # interleaved, so drift on the machine hits both alike
            for name, port, credentials in (("ours", ours.topology.nodes[0].port, auth), ("stock", stock_port, None)):
                for test, rps in redis_benchmark(port, pipeline, requests, credentials).items():
                    samples[name][test].append(rps)
        for test in ("SET", "GET"):
            mine, theirs = statistics.median(samples["ours"][test]), statistics.median(samples["stock"][test])
            rows.append(Row(f"{test} rps, -P {pipeline}", f"{mine:,.0f}", f"{theirs:,.0f}", f"{mine / theirs:.2f}",
                            ">= 0.90"))
    return rows


def failover_seconds(sandbox: LocalSandbox) -> float:
    """kill -9 the first master; seconds until its replica serves and every survivor is ok."""
    victim = sandbox.topology.nodes[0]
    with sandbox.admin_client(victim) as admin:
        nodes = admin.execute_command("CLUSTER NODES")
    victim_id = nodes[victim.endpoint]["node_id"]
    (replica,) = [int(e.rsplit(":", 1)[1]) for e, d in nodes.items() if d["master_id"] == victim_id]
    survivors = [n.port for n in sandbox.topology.nodes if n.port != victim.port]
    killed = time.monotonic()
    sandbox.signal(victim.name)

    def recovered() -> bool:
        with sandbox.admin_client(replica) as admin:
            if admin.info("replication")["role"] != "master":
                return False
        for port in survivors:
            with sandbox.admin_client(port) as admin:
                info = admin.execute_command("CLUSTER INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != TOTAL_SLOTS:
                    return False
        return True

    wait_for(recovered, 60)
    return time.monotonic() - killed


def run(stack: str, rounds: int) -> list[Row]:
    require_binaries("redis-server", "redis-cli", "redis-benchmark")
    rows: list[Row] = []
    bring_up: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cachelayer-bench-") as tmp:
        work = Path(tmp)
        ours = new_sandbox(stack, work / "ours", base_port=OURS_PORT)
        try:
            result = ours.up()
            bring_up.append(result.slots_ok_seconds)
            print(f"our cluster up: all slots served in {result.slots_ok_seconds:.2f} s", file=sys.stderr)
            with stock_cluster(work, STOCK_PORT) as stock_ports:
                rows += throughput_rows(ours, stock_ports[0], rounds)
        finally:
            ours.down()

        timeout = int(ours.settings.redis.cluster_node_timeout)
        measured: dict[int, float] = {}
        for port, node_timeout in zip(FAILOVER_PORTS, (timeout, REDIS_DEFAULT_NODE_TIMEOUT), strict=True):
            sandbox = new_sandbox(stack, work / f"failover-{node_timeout}", base_port=port,
                                  cluster_node_timeout=node_timeout)
            try:
                result = sandbox.up()
                bring_up.append(result.slots_ok_seconds)
                measured[node_timeout] = failover_seconds(sandbox)
                print(f"failover with cluster-node-timeout {node_timeout}: {measured[node_timeout]:.2f} s",
                      file=sys.stderr)
            finally:
                sandbox.down()
    ours_failover, default_failover = measured[timeout], measured[REDIS_DEFAULT_NODE_TIMEOUT]
    rows.append(Row(f"failover s (node timeout {timeout} vs {REDIS_DEFAULT_NODE_TIMEOUT} ms)",
                    f"{ours_failover:.2f}", f"{default_failover:.2f}", f"{ours_failover / default_failover:.2f}",
                    f"<= {timeout / 1000 + 1.5:.1f} s"))
    rows.append(Row("sandbox bring-up s (start -> all slots ok; median of 3)", f"{statistics.median(bring_up):.2f}",
                    "-", "-", "<= 4 s"))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| metric | ours | baseline | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r.metric} | {r.ours} | {r.baseline} | {r.ratio} | {r.target} |" for r in rows]
    machine = f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, " + subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split(" sha=")[0]
    lines += ["", f"Baseline: six stock `redis-server` (defaults, `--appendonly no`), same machine, same run. "
              f"Measured {time.strftime('%Y-%m-%d')} on {machine} with "
              "`PYTHONPATH=infra venv/bin/python benchmarks/cluster_benchmark.py --write-readme`."]
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
