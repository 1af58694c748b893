"""`cachelayer health | drift | report | failover | rebalance | drain`: operator commands on a
live deployment (docs/operations.md).

Every command takes --stack (and --seed/--workdir/--outputs to say where the deployment is, see
common.resolve_target), prints tables, or one JSON document with --json, and exits with
common.ExitCode: 0 all is well, 1 a problem found, 2 could not check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cachelayer.cli.common import (
    DEFAULT_STACK,
    ExitCode,
    JsonOption,
    OutputsOption,
    SeedOption,
    StackOption,
    WorkdirOption,
    YesOption,
    confirm_target_change,
    console,
    emit_json,
    errors,
    fail,
    progress,
    reported,
    require_named_stack,
    target_of,
    text_column,
    usage_error,
    whole_column,
)

if TYPE_CHECKING:
    from rich.console import Console

    from cachelayer.ops.drift import Drift
    from cachelayer.ops.health import Check, Limits, NodeFacts, SentinelFacts
    from cachelayer.ops.target import Target

OK, PROBLEM, CANNOT_CHECK = ExitCode.OK, ExitCode.PROBLEM, ExitCode.CANNOT_CHECK


def register(app: typer.Typer) -> None:
    for command in (health, drift, report, failover, rebalance, drain):
        app.command()(command)


# --------------------------------------------------------------------------- gathering
def planned_shape(target: Target, facts: Sequence[NodeFacts]) -> tuple[int, int]:
    """(masters, replicas per master) the stack plans; inferred from the live nodes when the
    stack file is not at hand."""
    if target.settings is not None:
        return target.settings.redis.masters, target.settings.redis.replicas_per_master
    masters = sum(1 for f in facts if f.status.role == "master" and (target.kind != "cluster" or f.status.slots))
    return masters, (len(target.nodes) - masters) // max(masters, 1)


def gather(target: Target, detail: bool = True) -> tuple[list[NodeFacts], list[SentinelFacts]]:
    from cachelayer.ops.health import node_facts, sentinel_facts

    nodes = []
    for endpoint in target.nodes:
        with target.client(endpoint, retry=False) as client:
            nodes.append(node_facts(endpoint.name, endpoint.address, client, target.kind == "cluster"))
    sentinels = []
    for endpoint in target.sentinels:
        with target.client(endpoint, retry=False) as client:
            sentinels.append(sentinel_facts(endpoint.name, endpoint.address, client, target.groups, detail=detail))
    return nodes, sentinels


def health_checks(
    target: Target, limits: Limits | None = None
) -> tuple[list[Check], list[NodeFacts], list[SentinelFacts]]:
    from cachelayer.ops.health import run_checks

    nodes, sentinels = gather(target)
    masters, replicas = planned_shape(target, nodes)
    return run_checks(target.kind, nodes, sentinels, masters, replicas, limits), nodes, sentinels


# ------------------------------------------------------------------------------ health
def health(
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    max_lag: Annotated[int, typer.Option(metavar="SECONDS", help="Seconds a replica may go without acknowledging its master.")] = 10,
    max_memory: Annotated[float, typer.Option(metavar="SHARE", help="Share of maxmemory above which a node is a problem.")] = 0.9,
    max_save_age: Annotated[int, typer.Option(metavar="SECONDS", help="Seconds changes may stay unsaved to RDB.")] = 7200,
) -> None:
    """Is the deployment healthy?

    Slots, replicas and lag, flags, open slots, placement, memory, persistence; in Sentinel
    topology also CKQUORUM, agreement and replicas per group.
    """
    from cachelayer.ops.health import Limits, facts_json

    target = target_of(stack, seed, workdir, outputs, as_json)
    begin = time.monotonic()
    with progress(f"Checking {len(target.nodes)} nodes and {len(target.sentinels)} sentinels…", as_json):
        checks, nodes, sentinels = health_checks(target, Limits(max_lag, max_memory, max_save_age))
    seconds = time.monotonic() - begin
    reachable = any(f.status.up for f in nodes)
    ok = reachable and all(c.ok for c in checks)
    code = OK if ok else (PROBLEM if reachable else CANNOT_CHECK)
    if as_json:
        emit_json({
            "command": "health",
            "target": target.describe(),
            "ok": ok,
            "seconds": round(seconds, 3),
            "checks": [c.as_json() for c in checks],
            **facts_json(nodes, sentinels),
        })
        raise typer.Exit(code=code)
    console.print(nodes_table(target, nodes, sentinels))
    verdict = "[green]ok" if ok else "[red]problems found" if reachable else "[yellow]could not check"
    table = Table(title=f"health of {target.stack}: {verdict}")
    whole_column(table, "check", [c.name for c in checks])
    whole_column(table, "result", ["not checked"])
    text_column(table, "what it checks / what is wrong")
    styles = {"ok": "[green]ok", "problem": "[red]problem", "not checked": "[yellow]not checked"}
    for check in checks:
        detail = "\n".join(escape(p) for p in check.problems) if check.problems else escape(check.description)
        table.add_row(check.name, styles[check.state], detail)
    console.print(table)
    console.print(f"checked in {seconds:.2f} s", highlight=False)
    if not reachable:
        raise fail("no node answered: check the endpoints and the password", code=CANNOT_CHECK)
    raise typer.Exit(code=code)


def nodes_table(target: Target, nodes: Sequence[NodeFacts], sentinels: Sequence[SentinelFacts]) -> Table:
    cluster = target.kind == "cluster"
    # A light box, and a replica's master and link state on two lines: the columns that must stay
    # whole (names, addresses) fit 80 terminal columns.
    table = Table(title=f"{target.kind} nodes", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    whole_column(table, "process", [f.status.name for f in nodes] + [s.status.name for s in sentinels])
    whole_column(table, "endpoint", [f.status.endpoint for f in nodes] + [s.status.endpoint for s in sentinels])
    whole_column(table, "role", ["sentinel"])
    # Address and link state, or a sentinel's groups one per line: an address is never split.
    links = [f.status.master for f in nodes if f.status.up and f.status.role == "replica"]
    links += [line for s in sentinels for g, a in s.status.masters.items() for line in (g, a)]
    whole_column(table, "master / link", links)
    columns = ["endpoint", "role", "master / link", "slots", "keys", "memory"] if cluster else [
        "endpoint", "role", "master / link", "keys", "memory"]
    for column in columns[3:]:
        table.add_column(column, overflow="fold")
    for fact in nodes:
        status = fact.status
        if not status.up:
            table.add_row(status.name, status.endpoint, "[red]down", escape(status.error), *([""] * (len(columns) - 3)))
            continue
        link = f"{status.master}\n{status.master_link}" if status.role == "replica" else "-"
        row = [status.name, status.endpoint, status.role, link]
        if cluster:
            row.append(str(status.slots))
        row += [str(status.keys), status.memory]
        table.add_row(*row)
    for sentinel in sentinels:
        state = sentinel.status
        watched = "\n".join(f"{g}\n {a}" for g, a in state.masters.items()) if state.up else f"[red]down[/] {escape(state.error)}"
        table.add_row(state.name, state.endpoint, "sentinel", watched, *([""] * (len(columns) - 3)))
    return table


# ------------------------------------------------------------------------------- drift
def drift(
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
) -> None:
    """The live deployment against what the stack renders now.

    Every redis.conf directive (CONFIG GET), ACL users and password hashes, cluster shape,
    sentinel groups. Exit 1 on drift.
    """
    from cachelayer.ops.drift import drift_json, find_drift

    target = target_of(stack, seed, workdir, outputs, as_json)
    settings = target.settings
    if settings is None:  # the stack file is missing or wrong: say which, with the settings' exit code
        from cachelayer.config.settings import load_settings
        from cachelayer.config.stack_file import read_stack_config

        with reported(as_json):
            settings = load_settings(read_stack_config(stack), stack)
    begin = time.monotonic()
    with progress("Comparing every node with the rendered files…", as_json):
        drifts, unreadable = find_drift(target, settings)
    seconds = time.monotonic() - begin
    code = CANNOT_CHECK if len(unreadable) == len(target.nodes) + len(target.sentinels) else (
        PROBLEM if drifts or unreadable else OK)
    if as_json:
        emit_json({"command": "drift", "target": target.describe(), "ok": code == OK, "seconds": round(seconds, 3),
                    "drift": drift_json(drifts), "unreadable": unreadable})
        raise typer.Exit(code=code)
    if drifts:
        print_drift(console, target.stack, drifts)
    for line in unreadable:
        console.print(f"[red]could not read[/] {escape(line)}", soft_wrap=True)
    if not drifts and not unreadable:
        console.print(f"[green]no drift[/]: {len(target.nodes)} nodes and {len(target.sentinels)} sentinels match "
                      f"what stack {target.stack} renders ({seconds:.2f} s)", highlight=False)
    raise typer.Exit(code=code)


def print_drift(out: Console, stack: str, drifts: Sequence[Drift]) -> None:
    table = Table(title=f"drift in {stack}: {len(drifts)} difference(s)")
    whole_column(table, "#", [str(len(drifts))])
    whole_column(table, "where", [d.where for d in drifts])
    whole_column(table, "kind", [d.kind for d in drifts])
    whole_column(table, "item", [d.item for d in drifts])
    for column in ("expected", "live"):
        text_column(table, column)
    for number, d in enumerate(drifts, 1):
        table.add_row(str(number), d.where, d.kind, escape(d.item), escape(d.expected), escape(d.actual))
    out.print(table)
    # Fixes are commands to copy: printed whole, one per line, never folded into a cell.
    for number, d in enumerate(drifts, 1):
        out.print(f"fix {number}: {escape(d.fix)}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------ report
def report(
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    slowlog: Annotated[int, typer.Option(metavar="N", help="SLOWLOG GET N per node.")] = 10,
    sample: Annotated[int, typer.Option(metavar="N", help="Keys sampled per master (SCAN) for the biggest keys.")] = 1000,
    top: Annotated[int, typer.Option(metavar="N", help="Biggest keys shown per master.")] = 10,
    acl_log: Annotated[int, typer.Option(metavar="N", help="ACL LOG entries (refused logins and commands) per node.")] = 10,
) -> None:
    """Memory, slow log, hit ratio, biggest keys and refused accesses.

    Memory and fragmentation, MEMORY/LATENCY DOCTOR, slow log, hit ratio, evictions, clients,
    biggest keys, the recent ACL LOG (user, client address, what was refused; never a password).
    A one-screen summary first; exit 2 only when no node answers.
    """
    from cachelayer.ops.report import node_report

    target = target_of(stack, seed, workdir, outputs, as_json)
    reports = []
    with progress("Reading every node (SCAN + MEMORY USAGE for the biggest keys)…", as_json):
        for endpoint in target.nodes:
            with target.client(endpoint, timeout=10) as client:
                reports.append(node_report(endpoint.name, endpoint.address, client, slowlog, sample, top, acl_log))
    code = OK if any(r.up for r in reports) else CANNOT_CHECK
    if as_json:
        emit_json({"command": "report", "target": target.describe(), "ok": code == OK,
                    "nodes": [r.as_json() for r in reports]})
        raise typer.Exit(code=code)
    # A light box so the ten columns fit 80 terminal columns.
    summary = Table(title=f"report of {target.stack}", box=None, padding=(0, 1), pad_edge=False)
    whole_column(summary, "process", [r.name for r in reports])
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
    whole_column(keys, "process", [r.name for r in reports])
    text_column(keys, "key")
    keys.add_column("bytes", justify="right", no_wrap=True)
    for r in reports:
        for entry in r.biggest_keys:
            keys.add_row(r.name, escape(entry["key"]), str(entry["bytes"]))
    console.print(keys)
    # A light box, as the summary's: seven columns in 80 terminal columns.
    refused = Table(title="refused access (ACL LOG, newest first)", box=None, padding=(0, 1), pad_edge=False)
    entries = [(r, entry) for r in reports for entry in r.acl_log]
    whole_column(refused, "process", [r.name for r, _ in entries])
    for column in ("reason", "user", "client"):
        whole_column(refused, column, [entry[column] for _, entry in entries])
    text_column(refused, "refused")
    refused.add_column("count", justify="right", no_wrap=True)
    refused.add_column("age", justify="right", no_wrap=True)
    for r, entry in entries:
        what = f"{entry['object']} (expected)" if entry["expected"] else entry["object"]
        refused.add_row(r.name, entry["reason"], escape(entry["user"]), escape(entry["client"]), escape(what),
                        str(entry["count"]), f"{entry['age_seconds']:.0f} s")
    console.print(refused)
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
    context: typer.Context,
    node: Annotated[
        str | None,
        typer.Argument(help="Cluster: the replica to promote (name, host:port or port); required with --force or "
                            "--takeover. Sentinel: the group.", show_default=False),
    ] = None,
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    force: Annotated[bool, typer.Option(show_default=False,
                                        help="CLUSTER FAILOVER FORCE: without the master's agreement; only when the "
                                             "cluster flags that master fail or fail?.")] = False,
    takeover: Annotated[bool, typer.Option(show_default=False,
                                           help="CLUSTER FAILOVER TAKEOVER: without any vote; can lose writes.")] = False,
    yes: YesOption = False,
    dry_run: Annotated[bool, typer.Option(show_default=False,
                                          help="Run the checks and say what would happen; change nothing.")] = False,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds to wait for the new roles.")] = 60,
    max_lag: Annotated[int, typer.Option(metavar="SECONDS", help="Seconds of replica lag a graceful failover accepts.")] = 5,
) -> None:
    """Planned failover while a probe client writes and reads.

    Reports the switch time and the errors the probe saw. Cluster: graceful CLUSTER FAILOVER on
    a replica; Sentinel: SENTINEL FAILOVER. Asks first (docs/operations.md#guards).
    """
    from cachelayer.ops.failover import cluster_failover, default_replica, sentinel_failover
    from cachelayer.ops.target import TargetError

    if force and takeover:
        raise usage_error("--force and --takeover exclude each other", as_json)
    if (force or takeover) and not node:
        # Never a guess: the first linked replica belongs to a healthy shard, not the dead master's.
        raise usage_error(f"--{'force' if force else 'takeover'} needs the replica to promote: name it "
                          f"(`cachelayer health` shows the failed master and its replicas)", as_json)
    target = target_of(stack, seed, workdir, outputs, as_json)
    if not dry_run:
        require_named_stack(context, target, as_json)
    try:
        replica = target.node(node) if node and target.kind == "cluster" else None
    except TargetError as error:
        raise usage_error(str(error), as_json) from None
    with reported(as_json, PROBLEM):
        if target.kind == "sentinel":
            group = node or (target.groups[0] if target.groups else "redis-master-1")
            result = sentinel_failover(target, group, timeout, dry_run=True, max_lag=max_lag)
            if not dry_run:
                confirm_target_change(context, f"fail over Sentinel group {group} (master {result.old_master})",
                                      target, yes=yes, as_json=as_json)
                with progress(f"SENTINEL FAILOVER {group}, probing…", as_json):
                    result = sentinel_failover(target, group, timeout, max_lag=max_lag)
        else:
            mode = "force" if force else "takeover" if takeover else "graceful"
            replica = replica or default_replica(target)
            result = cluster_failover(target, replica, mode, timeout, max_lag, dry_run=True)
            if not dry_run:
                warning = "; TAKEOVER needs no vote and can lose writes" if takeover else ""
                confirm_target_change(
                    context, f"promote {replica.name} over its master {result.old_master} "
                             f"(CLUSTER FAILOVER {mode.upper()}){warning}", target, yes=yes, as_json=as_json)
                with progress(f"CLUSTER FAILOVER {mode.upper()} on {replica.name}, probing…", as_json):
                    result = cluster_failover(target, replica, mode, timeout, max_lag, dry_run)
    if as_json:
        emit_json({"command": "failover", "target": target.describe(), "ok": True, **result.as_json()})
        raise typer.Exit(code=OK)
    if result.dry_run:
        console.print(f"dry run: would promote {result.subject} (now replica of {result.old_master}) "
                      f"({result.mode}); checks: {escape('; '.join(result.checks))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=OK)
    table = Table(title=f"{result.mode} failover of {result.subject}")
    whole_column(table, "", ["longest probe gap"])
    text_column(table, "")
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
def _moved(name: str, target: Target, as_json: bool, work: Callable[[], str]) -> float:
    begin = time.monotonic()
    with reported(as_json, PROBLEM), progress(f"{name}: redis-cli --cluster is moving slots…", as_json):
        output = work()
    seconds = time.monotonic() - begin
    if not as_json:
        console.print(escape(output.strip()[-2000:]), highlight=False, soft_wrap=True)
        console.print(f"[green]{name} done[/] in {seconds:.1f} s: all slots served, none open", highlight=False)
    else:
        emit_json({"command": name, "target": target.describe(), "ok": True, "seconds": round(seconds, 3),
                   "output": output})
    return seconds


DryRunOption = Annotated[bool, typer.Option(show_default=False, help="Run the checks and say what would happen; "
                                                                      "change nothing.")]


def rebalance(
    context: typer.Context,
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Even out slots across masters (empty masters included).

    Runs `redis-cli --cluster rebalance`, refusing when a slot is open or uncovered or a master
    would pass its maxmemory, and checks after. --dry-run: redis-cli's --cluster-simulate.
    """
    from cachelayer.ops.rebalance import rebalance as run_rebalance

    target = target_of(stack, seed, workdir, outputs, as_json)
    if dry_run:
        with reported(as_json, PROBLEM), progress("rebalance: simulating…", as_json):
            output = run_rebalance(target, dry_run=True)
        if as_json:
            emit_json({"command": "rebalance", "target": target.describe(), "ok": True, "dry_run": True, "output": output})
        else:
            console.print(escape(output.strip()[-2000:]), highlight=False, soft_wrap=True)
            console.print("dry run: nothing moved", highlight=False)
        raise typer.Exit(code=OK)
    confirm_target_change(context, "move slots and their keys between masters (redis-cli --cluster rebalance)",
                          target, yes=yes, as_json=as_json)
    _moved("rebalance", target, as_json, lambda: run_rebalance(target))
    raise typer.Exit(code=OK)


def drain(
    context: typer.Context,
    node: Annotated[str, typer.Argument(help="The node to empty and forget (name, host:port or port).")],
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    force: Annotated[bool, typer.Option(show_default=False,
                                        help="Drain a replica even when it is its master's last one.")] = False,
) -> None:
    """Empty a node, make the cluster forget it, and check health after.

    A master's slots (and keys) move to the other masters first; a replica is only forgotten
    (refused for a master's last replica unless --force). `redis-cli --cluster del-node` then
    resets the node, which keeps running alone: stop it (lower redis.node_count). Exit 1 when
    the remaining cluster is not healthy after.
    """
    from dataclasses import replace

    from cachelayer.ops.rebalance import drain as run_drain
    from cachelayer.ops.rebalance import drain_plan
    from cachelayer.ops.target import TargetError

    target = target_of(stack, seed, workdir, outputs, as_json)
    if not dry_run:
        require_named_stack(context, target, as_json)
    try:
        endpoint = target.node(node)
    except TargetError as error:
        raise usage_error(str(error), as_json) from None
    with reported(as_json, PROBLEM):
        plan = drain_plan(target, endpoint, force)
    if dry_run:
        if as_json:
            emit_json({"command": "drain", "target": target.describe(), "ok": True, "dry_run": True, "plan": plan})
        else:
            console.print(f"dry run: would {escape(plan)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=OK)
    confirm_target_change(context, f"drain {endpoint.name}: {plan}", target, yes=yes, as_json=as_json)
    if as_json:
        with reported(as_json, PROBLEM):
            output = run_drain(target, endpoint, force)
    else:
        _moved("drain", target, as_json, lambda: run_drain(target, endpoint, force))
        output = ""
    # The drained node is reset and alone (cluster_state:fail there is expected): judge the rest.
    remaining = replace(target, nodes=tuple(e for e in target.nodes if e != endpoint))
    checks, _, _ = health_checks(remaining)
    problems = [f"{c.name}: {p}" for c in checks if c.name != "masters" for p in c.problems]
    stopped = f"{endpoint.name} was forgotten and reset; it still runs alone until it is stopped"
    if as_json:
        emit_json({"command": "drain", "target": target.describe(), "ok": not problems, "plan": plan,
                   "output": output, "health_after": [c.as_json() for c in checks], "note": stopped})
        raise typer.Exit(code=PROBLEM if problems else OK)
    errors.print(f"[dim]{escape(stopped)}[/]", highlight=False)
    if problems:
        raise fail("drain done, but the remaining cluster is not healthy: " + "; ".join(problems), code=PROBLEM)
    console.print("[green]health after the drain: ok[/] (`cachelayer health` for the details)", highlight=False)
    raise typer.Exit(code=OK)
