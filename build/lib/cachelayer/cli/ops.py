"""Operator commands on a live deployment: health, drift, report, failover, rebalance, drain.

Every command takes --stack (and --seed/--workdir/--outputs to say where the deployment is, see
target.py), prints rich tables, or one JSON document with --json, and exits 0 when all is well,
1 when it found a problem, 2 when it could not check. cli.py registers them on the main app.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cachelayer.ops.drift import drift_json, find_drift
from cachelayer.ops.failover import FailoverError, cluster_failover, default_replica, sentinel_failover
from cachelayer.ops.health import (
    Check,
    Limits,
    NodeFacts,
    SentinelFacts,
    facts_json,
    node_facts,
    run_checks,
    sentinel_facts,
)
from cachelayer.ops.rebalance import RebalanceError
from cachelayer.ops.rebalance import drain as run_drain
from cachelayer.ops.rebalance import rebalance as run_rebalance
from cachelayer.ops.report import node_report
from cachelayer.ops.target import Target, TargetError, resolve

OK, PROBLEM, CANNOT_CHECK = 0, 1, 2

console = Console()
errors = Console(stderr=True)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="The deployment's stack.")]
SeedOption = Annotated[
    str | None,
    typer.Option(help="host:port of a node: use the environment's REDIS_PASSWORD instead of the sandbox or Pulumi.",
                 show_default=False),
]
WorkdirOption = Annotated[
    Path | None, typer.Option(help="A sandbox's workdir (default: .sandbox/STACK).", show_default=False)
]
OutputsOption = Annotated[
    Path | None,
    typer.Option(help="A saved `pulumi stack output --json --show-secrets` instead of running it.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout (shape: docs/operations.md).")]


def _emit_json(document: dict[str, Any]) -> None:
    # Plain print: rich would wrap long lines and read brackets as markup.
    print(json.dumps(document, indent=2, default=str))


def fail(message: str, as_json: bool = False, code: int = CANNOT_CHECK) -> typer.Exit:
    if as_json:
        _emit_json({"ok": False, "error": message})
    else:
        errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def target_of(stack: str, seed: str | None, workdir: Path | None, outputs: Path | None, as_json: bool) -> Target:
    try:
        target = resolve(stack, seed=seed, workdir=workdir, outputs_file=outputs)
    except (TargetError, OSError, ValueError) as error:
        raise fail(str(error), as_json) from None
    if not as_json:
        errors.print(f"[dim]{target.kind} deployment of stack {target.stack}, from {escape(target.source)}[/]", highlight=False)
    return target


@contextmanager
def progress(message: str, as_json: bool) -> Iterator[None]:
    """A spinner on stderr (stdout stays clean for --json and pipes)."""
    if as_json:
        yield
        return
    with errors.status(message):
        yield


def name_column(table: Table, title: str, names: Sequence[str]) -> None:
    """A column that never shrinks or wraps: full names at 80 columns."""
    table.add_column(title, no_wrap=True, min_width=max(map(len, names), default=len(title)))


# --------------------------------------------------------------------------- gathering
def planned_shape(target: Target, facts: Sequence[NodeFacts]) -> tuple[int, int]:
    """(masters, replicas per master) the stack plans; inferred from the live nodes when the
    stack file is not at hand."""
    if target.settings is not None:
        return target.settings.redis.masters, target.settings.redis.replicas_per_master
    masters = sum(1 for f in facts if f.status.role == "master" and (target.kind != "cluster" or f.status.slots))
    return masters, (len(target.nodes) - masters) // max(masters, 1)


def gather(target: Target, detail: bool = True) -> tuple[list[NodeFacts], list[SentinelFacts]]:
    nodes = []
    for endpoint in target.nodes:
        with target.client(endpoint) as client:
            nodes.append(node_facts(endpoint.name, endpoint.address, client, target.kind == "cluster"))
    sentinels = []
    for endpoint in target.sentinels:
        with target.client(endpoint) as client:
            sentinels.append(sentinel_facts(endpoint.name, endpoint.address, client, target.groups, detail=detail))
    return nodes, sentinels


def health_checks(
    target: Target, limits: Limits | None = None
) -> tuple[list[Check], list[NodeFacts], list[SentinelFacts]]:
    nodes, sentinels = gather(target)
    masters, replicas = planned_shape(target, nodes)
    return run_checks(target.kind, nodes, sentinels, masters, replicas, limits), nodes, sentinels


# ------------------------------------------------------------------------------ health
def health(
    stack: StackOption = "dev",
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    max_lag: Annotated[int, typer.Option(help="Seconds a replica may go without acknowledging its master.")] = 10,
    max_memory: Annotated[float, typer.Option(help="Share of maxmemory above which a node is a problem.")] = 0.9,
    max_save_age: Annotated[int, typer.Option(help="Seconds changes may stay unsaved to RDB.")] = 7200,
) -> None:
    """Is the deployment healthy? Slots, replicas and lag, flags, open slots, placement, memory,
    persistence; in Sentinel topology also CKQUORUM, agreement and replicas per group."""
    target = target_of(stack, seed, workdir, outputs, as_json)
    begin = time.monotonic()
    with progress(f"Checking {len(target.nodes)} nodes and {len(target.sentinels)} sentinels…", as_json):
        checks, nodes, sentinels = health_checks(target, Limits(max_lag, max_memory, max_save_age))
    seconds = time.monotonic() - begin
    reachable = any(f.status.up for f in nodes)
    ok = reachable and all(c.ok for c in checks)
    code = OK if ok else (PROBLEM if reachable else CANNOT_CHECK)
    if as_json:
        _emit_json({
            "command": "health",
            "target": target.describe(),
            "ok": ok,
            "seconds": round(seconds, 3),
            "checks": [{"name": c.name, "description": c.description, "ok": c.ok, "problems": list(c.problems)} for c in checks],
            **facts_json(nodes, sentinels),
        })
        raise typer.Exit(code=code)
    console.print(nodes_table(target, nodes, sentinels))
    table = Table(title=f"health of {target.stack}: {'[green]ok' if ok else '[red]problems found'}")
    name_column(table, "check", [c.name for c in checks])
    table.add_column("result", no_wrap=True)
    table.add_column("what it checks / what is wrong", overflow="fold")
    for check in checks:
        detail = escape(check.description) if check.ok else "\n".join(escape(p) for p in check.problems)
        table.add_row(check.name, "[green]ok" if check.ok else "[red]problem", detail)
    console.print(table)
    console.print(f"checked in {seconds:.2f} s", highlight=False)
    if not reachable:
        raise fail("no node answered: check the endpoints and the password", code=CANNOT_CHECK)
    raise typer.Exit(code=code)


def nodes_table(target: Target, nodes: Sequence[NodeFacts], sentinels: Sequence[SentinelFacts]) -> Table:
    cluster = target.kind == "cluster"
    table = Table(title=f"{target.kind} nodes")
    name_column(table, "process", [f.status.name for f in nodes] + [s.status.name for s in sentinels])
    columns = ["endpoint", "role", "master / link", "slots", "keys", "memory"] if cluster else [
        "endpoint", "role", "master / link", "keys", "memory"]
    for column in columns:
        table.add_column(column, no_wrap=column == "endpoint", overflow="fold")
    for fact in nodes:
        status = fact.status
        if not status.up:
            table.add_row(status.name, status.endpoint, "[red]down", escape(status.error), *([""] * (len(columns) - 3)))
            continue
        link = f"{status.master} {status.master_link}" if status.role == "replica" else "-"
        row = [status.name, status.endpoint, status.role, link]
        if cluster:
            row.append(str(status.slots))
        row += [str(status.keys), status.memory]
        table.add_row(*row)
    for sentinel in sentinels:
        state = sentinel.status
        watched = ", ".join(f"{g}→{a}" for g, a in state.masters.items()) if state.up else f"[red]down[/] {escape(state.error)}"
        table.add_row(state.name, state.endpoint, "sentinel", watched, *([""] * (len(columns) - 3)))
    return table


# ------------------------------------------------------------------------------- drift
def drift(
    stack: StackOption = "dev",
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
) -> None:
    """The live deployment against what the stack renders now: every redis.conf directive
    (CONFIG GET), ACL users and password hashes, cluster shape, sentinel groups. Exit 1 on drift."""
    target = target_of(stack, seed, workdir, outputs, as_json)
    if target.settings is None:
        raise fail(f"no Pulumi.{stack}.yaml to render the expected files from", as_json)
    begin = time.monotonic()
    with progress("Comparing every node with the rendered files…", as_json):
        drifts, unreadable = find_drift(target, target.settings)
    seconds = time.monotonic() - begin
    code = CANNOT_CHECK if len(unreadable) == len(target.nodes) + len(target.sentinels) else (
        PROBLEM if drifts or unreadable else OK)
    if as_json:
        _emit_json({"command": "drift", "target": target.describe(), "ok": code == OK, "seconds": round(seconds, 3),
                    "drift": drift_json(drifts), "unreadable": unreadable})
        raise typer.Exit(code=code)
    if drifts:
        table = Table(title=f"drift in {target.stack}: {len(drifts)} difference(s)")
        name_column(table, "where", [d.where for d in drifts])
        for column in ("kind", "item", "expected", "live", "fix"):
            table.add_column(column, overflow="fold")
        for d in drifts:
            table.add_row(d.where, d.kind, escape(d.item), escape(d.expected), escape(d.actual), escape(d.fix))
        console.print(table)
    for line in unreadable:
        console.print(f"[red]could not read[/] {escape(line)}", soft_wrap=True)
    if not drifts and not unreadable:
        console.print(f"[green]no drift[/]: {len(target.nodes)} nodes and {len(target.sentinels)} sentinels match "
                      f"what stack {target.stack} renders ({seconds:.2f} s)", highlight=False)
    raise typer.Exit(code=code)


# ------------------------------------------------------------------------------ report
def report(
    stack: StackOption = "dev",
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    slowlog: Annotated[int, typer.Option(help="SLOWLOG GET N per node.")] = 10,
    sample: Annotated[int, typer.Option(help="Keys sampled per master (SCAN) for the biggest keys.")] = 1000,
    top: Annotated[int, typer.Option(help="Biggest keys shown per master.")] = 10,
) -> None:
    """Memory and fragmentation, MEMORY/LATENCY DOCTOR, slow log, hit ratio, evictions, clients,
    biggest keys. A one-screen summary first; exit 2 only when no node answers."""
    target = target_of(stack, seed, workdir, outputs, as_json)
    reports = []
    with progress("Reading every node (SCAN + MEMORY USAGE for the biggest keys)…", as_json):
        for endpoint in target.nodes:
            with target.client(endpoint, timeout=10) as client:
                reports.append(node_report(endpoint.name, endpoint.address, client, slowlog, sample, top))
    code = OK if any(r.up for r in reports) else CANNOT_CHECK
    if as_json:
        _emit_json({"command": "report", "target": target.describe(), "ok": code == OK,
                    "nodes": [r.as_json() for r in reports]})
        raise typer.Exit(code=code)
    # A light box so the ten columns fit 80 terminal columns.
    summary = Table(title=f"report of {target.stack}", box=None, padding=(0, 1), pad_edge=False)
    name_column(summary, "process", [r.name for r in reports])
    for column in ("role", "memory", "max", "frag", "hits", "evict", "conn", "rej", "slow", "lat"):
        summary.add_column(column, no_wrap=True)
    for r in reports:
        if not r.up:
            summary.add_row(r.name, "[red]down", escape(r.error))
            continue
        ratio = "-" if r.hit_ratio is None else f"{r.hit_ratio:.1%}"
        share = f"{r.used_memory / r.maxmemory:.0%}" if r.maxmemory else "no max"
        frag = f"[yellow]{r.fragmentation_ratio:.2f}" if r.fragmentation_ratio > 1.5 else f"{r.fragmentation_ratio:.2f}"
        summary.add_row(r.name, r.role, r.used_memory_human, share, frag, ratio, str(r.evicted_keys),
                        str(r.connected_clients), str(r.rejected_connections), str(len(r.slowlog)), str(len(r.latency_latest)))
    console.print(summary)
    keys = Table(title="biggest keys (sampled)")
    name_column(keys, "process", [r.name for r in reports])
    keys.add_column("key", overflow="fold")
    keys.add_column("bytes", justify="right", no_wrap=True)
    for r in reports:
        for entry in r.biggest_keys:
            keys.add_row(r.name, escape(entry["key"]), str(entry["bytes"]))
    console.print(keys)
    for r in reports:
        if r.up:
            console.rule(f"{r.name} ({r.role})")
            for entry in r.slowlog:
                console.print(f"slow: {entry['duration_us']} µs {escape(entry['command'])}", highlight=False, soft_wrap=True)
            for event in r.latency_latest:
                console.print(f"latency: {event['event']} latest {event['latest_ms']} ms, max {event['max_ms']} ms", highlight=False)
            console.print(f"MEMORY DOCTOR: {escape(r.memory_doctor.strip())}", highlight=False)
            console.print(f"LATENCY DOCTOR: {escape(r.latency_doctor.strip())}", highlight=False)
    raise typer.Exit(code=code)


# ---------------------------------------------------------------------------- failover
def failover(
    node: Annotated[
        str | None,
        typer.Argument(help="Cluster: the replica to promote (name, host:port or port). Sentinel: the group.",
                       show_default=False),
    ] = None,
    stack: StackOption = "dev",
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    force: Annotated[bool, typer.Option(help="CLUSTER FAILOVER FORCE: without the master's agreement (it is down).")] = False,
    takeover: Annotated[bool, typer.Option(help="CLUSTER FAILOVER TAKEOVER: without any vote; can lose writes.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --takeover without a prompt.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Run the checks and say what would happen; change nothing.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new roles.")] = 60,
    max_lag: Annotated[int, typer.Option(help="Seconds of replica lag a graceful failover accepts.")] = 5,
) -> None:
    """Planned failover while a probe client writes and reads: reports the switch time and the
    errors the probe saw. Cluster: graceful CLUSTER FAILOVER on a replica; Sentinel: SENTINEL FAILOVER."""
    target = target_of(stack, seed, workdir, outputs, as_json)
    if force and takeover:
        raise fail("--force and --takeover exclude each other", as_json)
    try:
        if target.kind == "sentinel":
            group = node or (target.groups[0] if target.groups else "redis-master-1")
            with progress(f"SENTINEL FAILOVER {group}, probing…", as_json):
                result = sentinel_failover(target, group, timeout, dry_run)
        else:
            mode = "force" if force else "takeover" if takeover else "graceful"
            if takeover and not dry_run and not yes and not typer.confirm(
                "TAKEOVER promotes the replica without any vote and can lose writes. Go ahead?", err=True
            ):
                raise fail("not confirmed", as_json, code=PROBLEM)
            replica = target.node(node) if node else default_replica(target)
            with progress(f"CLUSTER FAILOVER {mode.upper()} on {replica.name}, probing…", as_json):
                result = cluster_failover(target, replica, mode, timeout, max_lag, dry_run)
    except (FailoverError, TargetError) as error:
        raise fail(str(error), as_json, code=PROBLEM) from None
    if as_json:
        _emit_json({"command": "failover", "target": target.describe(), "ok": True, **result.as_json()})
        raise typer.Exit(code=OK)
    if result.dry_run:
        console.print(f"dry run: would promote {result.subject} (now replica of {result.old_master}) "
                      f"({result.mode}); checks: {escape('; '.join(result.checks))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=OK)
    table = Table(title=f"{result.mode} failover of {result.subject}")
    table.add_column("", no_wrap=True)
    table.add_column("", overflow="fold")
    kinds = ", ".join(f"{k}×{v}" for k, v in result.probe["error_kinds"].items())
    for label, value in (
        ("old master", result.old_master),
        ("new master", result.new_master),
        ("switch time", f"{result.switch_seconds:.3f} s (command to all slots served)"),
        ("probe ops", str(result.probe["ops"])),
        ("probe errors", f"{result.probe['errors']} {kinds}".strip()),
        ("longest probe gap", f"{result.probe['longest_gap_seconds']:.3f} s"),
    ):
        table.add_row(label, escape(value))
    console.print(table)
    raise typer.Exit(code=OK)


# --------------------------------------------------------------------- rebalance, drain
def _moved(name: str, target: Target, as_json: bool, work: Callable[[], str]) -> None:
    begin = time.monotonic()
    try:
        with progress(f"{name}: redis-cli --cluster is moving slots…", as_json):
            output = work()
    except RebalanceError as error:
        raise fail(str(error), as_json, code=PROBLEM) from None
    seconds = time.monotonic() - begin
    if as_json:
        _emit_json({"command": name, "target": target.describe(), "ok": True, "seconds": round(seconds, 3),
                    "output": output})
    else:
        console.print(escape(output.strip()[-2000:]), highlight=False, soft_wrap=True)
        console.print(f"[green]{name} done[/] in {seconds:.1f} s: all slots served, none open", highlight=False)
    raise typer.Exit(code=OK)


def rebalance(
    stack: StackOption = "dev",
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Even out slots across masters (empty masters included) with `redis-cli --cluster rebalance`,
    refusing when a slot is open or uncovered, and checking after."""
    target = target_of(stack, seed, workdir, outputs, as_json)
    _moved("rebalance", target, as_json, lambda: run_rebalance(target))


def drain(
    node: Annotated[str, typer.Argument(help="The node to empty and forget (name, host:port or port).")],
    stack: StackOption = "dev",
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a master's slots (and keys) to the other masters, then make the cluster forget the
    node (`redis-cli --cluster del-node`, which also stops it)."""
    target = target_of(stack, seed, workdir, outputs, as_json)
    try:
        endpoint = target.node(node)
    except TargetError as error:
        raise fail(str(error), as_json) from None
    _moved("drain", target, as_json, lambda: run_drain(target, endpoint))


def register(app: typer.Typer) -> None:
    """Adds the operator commands to the main app."""
    commands: list[Callable[..., None]] = [health, drift, report, failover, rebalance, drain]
    for command in commands:
        app.command()(command)
