"""Operator commands on the 6-node sandbox: failover drill switch time and probe errors, and the
wall time of `health` and `drift` (medians of 5).

    venv/bin/python benchmarks/ops_benchmark.py [--base-port 7780] [--rounds 5]

Starts its own sandbox in a temporary directory (ports BASE..BASE+5) and takes it down after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cachelayer.cli.ops import health_checks
from cachelayer.ops.drift import find_drift
from cachelayer.ops.failover import cluster_failover, default_replica
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
from cachelayer.sandbox.targets import target_of_sandbox


def timed(work: object) -> float:
    begin = time.monotonic()
    work()  # type: ignore[operator]
    return time.monotonic() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-port", type=int, default=7780)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings, config = sandbox_settings({"redis": {"base_port": args.base_port}}, "bench", topology="cluster")
    with tempfile.TemporaryDirectory(prefix="cachelayer-ops-bench-") as workdir:
        sandbox = LocalSandbox(settings, Path(workdir), config=config)
        try:
            sandbox.up()
            target = target_of_sandbox(sandbox)
            health_times = [timed(lambda: health_checks(target)) for _ in range(args.rounds)]
            drift_times = [timed(lambda: find_drift(target, settings)) for _ in range(args.rounds)]
            switches, errors, gaps = [], [], []
            for _ in range(args.rounds):
                result = cluster_failover(target, default_replica(target))
                switches.append(result.switch_seconds)
                errors.append(result.probe["errors"])
                gaps.append(result.probe["longest_gap_seconds"])
                sandbox.wait_converged()
                # A master votes once per 2 x cluster-node-timeout for the same shard: a drill
                # faster than that would measure the cool-down, not the failover.
                time.sleep(2 * settings.redis.cluster_node_timeout / 1000 + 1)
        finally:
            sandbox.down()
    table = Table(title=f"operator commands on the 6-node sandbox (median of {args.rounds})")
    for column in ("measure", "median", "min", "max"):
        table.add_column(column, no_wrap=True)
    for name, values, unit in (
        ("failover switch time", switches, "s"),
        ("failover probe errors", errors, ""),
        ("failover longest probe gap", gaps, "s"),
        ("health wall time", health_times, "s"),
        ("drift wall time", drift_times, "s"),
    ):
        table.add_row(name, *(f"{v:.3f} {unit}".strip() if unit else f"{v:g}" for v in
                              (statistics.median(values), min(values), max(values))))
    Console().print(table)


if __name__ == "__main__":
    main()
