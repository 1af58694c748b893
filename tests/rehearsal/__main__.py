"""`python -m rehearsal run|down|image` (PYTHONPATH=infra:tests): scripts/rehearse.sh's engine room,
and the host image scripts/test.sh builds in the background while the linters run."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import signal
import sys
import time

from rehearsal import test_prod_rehearsal as scenarios
from rehearsal.hosts import BRIDGE, build_image, leftovers, require_tools, run
from rehearsal.scenario import Rehearsal


def down() -> int:
    """Remove what a killed rehearsal left: only names of ours (rh-*, rhbr0)."""
    for line in run("ps", "-eo", "pid=,args=").stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "systemd-nspawn" in args and "--machine=rh-" in args:
            os.kill(int(pid), signal.SIGTERM)
    time.sleep(3)
    for item in leftovers():
        kind, _, name = item.partition(" ")
        if kind == "netns":
            run("ip", "netns", "del", name, check=False)
        elif kind == "link":
            run("ip", "link", "del", name, check=False)
    run("ip", "link", "del", BRIDGE, check=False)
    left = leftovers()
    print("clean" if not left else f"still there: {left}")
    return 1 if left else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run", "down", "image"])
    parser.add_argument("--scenario", default="")
    parser.add_argument("--keep", default="no")
    args = parser.parse_args()
    if args.command == "down":
        return down()
    if args.command == "image":
        require_tools()
        started = time.monotonic()
        print(f"host image ready: {build_image().rootfs} ({time.monotonic() - started:.0f} s)")
        return 0
    tests = [(n, f) for n, f in inspect.getmembers(scenarios, inspect.isfunction) if n.startswith("test_")]
    tests.sort(key=lambda item: item[1].__code__.co_firstlineno)
    names = [n for n, _ in tests]
    last = next((i for i, n in enumerate(names) if args.scenario in n), None) if args.scenario else len(names) - 1
    if last is None:
        print(f"no scenario matches {args.scenario!r}: {', '.join(names)}", file=sys.stderr)
        return 2
    rehearsal = Rehearsal.start()
    status = 0
    try:
        for name, test in tests[: last + 1]:
            started = time.monotonic()
            print(f"== {name}", flush=True)
            test(rehearsal)
            print(f"   ok ({time.monotonic() - started:.1f} s)", flush=True)
    except Exception as error:
        print(f"   FAILED: {error}", flush=True)
        status = 1
    finally:
        print(f"timings: {rehearsal.timings}")
        if args.keep == "yes":
            print(f"hosts up: {rehearsal.machines}; key {rehearsal.hosts.image.key_file}; state {rehearsal.hosts.workdir}")
            print("ssh example: ssh -i KEY -o StrictHostKeyChecking=no deploy@10.233.0.11. Enter tears down.")
            with contextlib.suppress(EOFError):  # no terminal: tear down at once
                input()
        rehearsal.down()
    return status


if __name__ == "__main__":
    sys.exit(main())
