"""A Sentinel failover seen by two clients in the same run: a plain redis-py client writing
through HAProxy's write port (no Sentinel), and a Sentinel-aware redis-py client
(`Sentinel(...).master_for`). The group's master is killed (SIGKILL); each write is SET then
`WAIT 1`, acknowledged when a replica has it. Prints per client: the time from the kill until
writes are acknowledged again, the writes refused meanwhile, and the acknowledged writes the new
master lacks (must be 0), with the ratio HAProxy / Sentinel client.

    venv/bin/python benchmarks/load_balancer.py [--runs 3]

Real processes on loopback (redis-server, redis-sentinel, haproxy) on ports 7680-7698, 27680-27682;
run it under the integration lock when tests may run: flock /tmp/cachelayer-integration.lock ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "tests")]

from cachelayer.sandbox.load_balancer import SandboxLoadBalancer  # noqa: E402
from cachelayer.sandbox.local import LocalSandbox, sandbox_settings  # noqa: E402
from support.failover_writes import FailoverWriter, Measurement, measure, plain_client, sentinel_client, table  # noqa: E402
from support.sandbox_processes import kill  # noqa: E402

BASE = 7680
CONFIG = {
    "redis": {"base_port": BASE},
    "sentinel": {"ports": [BASE + 20000 + i for i in range(3)], "down_after_milliseconds": 2000, "failover_timeout": 10000},
    "load_balancer": {"write_base_port": 7690, "read_base_port": 7694, "exporter_port": 7698, "check_interval_ms": 500},
}
GROUP = "redis-master-1"


def wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def master_port(sandbox: LocalSandbox) -> int:
    with sandbox.admin_client(sandbox.topology.sentinels[0]) as client:
        reply: Any = client.sentinel_get_master_addr_by_name(GROUP)
    return int(reply[1])


def one_run(workdir: Path) -> list[Measurement]:
    settings, config = sandbox_settings(CONFIG, "bench", topology="sentinel")
    sandbox = LocalSandbox(settings, workdir, config=config)
    balancer = SandboxLoadBalancer(sandbox)
    try:
        sandbox.up()
        balancer.up()
        old = sandbox.topology.masters[0]
        (new,) = sandbox.topology.replicas_of(old)
        writers = [
            FailoverWriter("plain redis-py through HAProxy", "lb", plain_client(balancer.address, 7690, sandbox.passwords.app)),
            FailoverWriter("redis-py Sentinel client", "sn", sentinel_client(sandbox, GROUP)),
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            wait(lambda w=writer: len(w.acknowledged) > 200, 20, f"{writer.name} to write")
        killed_at = time.monotonic()
        kill(sandbox, old.name)
        sandbox.stop([old.name])
        wait(lambda: master_port(sandbox) == new.port, 60, "the failover")
        promoted_at = time.monotonic()
        for writer in writers:
            wait(lambda w=writer: any(sent >= promoted_at for sent, _ in w.written_at), 60, f"{writer.name} to write again")
        time.sleep(1)  # a second of writes on the new master, acknowledged too
        for writer in writers:
            writer.stop()
        with sandbox.admin_client(new) as master:
            return [measure(writer, killed_at, master) for writer in writers]
    finally:
        balancer.down()
        sandbox.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: list[list[Measurement]] = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="lb-bench-") as workdir:
            rows = one_run(Path(workdir))
        runs.append(rows)
        print(f"run {index + 1}:\n{table(rows)}\n", flush=True)
    print(f"median of {args.runs} runs (HAProxy check every 500 ms, fall 2, rise 1; Sentinel down-after 2 s):")
    names = [row.client for row in runs[0]]
    medians = [
        Measurement(
            name,
            statistics.median(run[i].writes_again_seconds for run in runs),
            int(statistics.median(run[i].refused for run in runs)),
            int(statistics.median(run[i].acknowledged for run in runs)),
            max(run[i].lost for run in runs),
        )
        for i, name in enumerate(names)
    ]
    print(table(medians))
    ratio = medians[0].writes_again_seconds / medians[1].writes_again_seconds
    print(f"\nHAProxy / Sentinel client, time until writes succeed again: {ratio:.2f}x")
    if any(row.lost for run in runs for row in run):
        raise SystemExit("acknowledged writes were lost")


if __name__ == "__main__":
    main()
