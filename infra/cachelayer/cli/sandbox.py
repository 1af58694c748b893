"""`cachelayer sandbox up | status | down`: the stack's Redis as local redis-server processes on
127.0.0.1 (docs/sandbox.md)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cachelayer.cli.common import (
    DEFAULT_STACK,
    ExitCode,
    JsonOption,
    StackOption,
    WorkdirOption,
    YesOption,
    confirm_change,
    console,
    emit_json,
    fail,
    reported,
    text_column,
    usage_error,
    whole_column,
)

if TYPE_CHECKING:
    from cachelayer.sandbox.convergence import SandboxStatus
    from cachelayer.sandbox.local import LocalSandbox

sandbox_app = typer.Typer(
    help="The stack as local redis-server processes.\n\n"
    "The stack's Redis as local redis-server processes on 127.0.0.1 (no Docker, no Pulumi).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")


def _workdir(stack: str, workdir: Path | None) -> Path:
    from cachelayer.sandbox.state import default_workdir

    return workdir if workdir is not None else default_workdir(stack)


def _mask(password: str) -> str:
    # Not even a prefix: every character shown is one an attacker need not guess.
    return f"…({len(password)} chars, --show-password prints it)"


def _progress(message: str, as_json: bool) -> Any:
    from contextlib import nullcontext

    return nullcontext() if as_json else console.status(message)


@sandbox_app.command()
def up(
    stack: StackOption = DEFAULT_STACK,
    workdir: WorkdirOption = None,
    topology: Annotated[
        str | None, typer.Option(metavar="KIND", show_default=False, help="Override redis.topology: cluster or sentinel.")
    ] = None,
    base_port: Annotated[
        int | None, typer.Option(metavar="PORT", show_default=False, help="Override redis.base_port (the first node's port).")
    ] = None,
    show_password: Annotated[bool, typer.Option(show_default=False, help="Print the passwords in full.")] = False,
    tls_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", show_default=False,
                     help="For a stack with redis.tls: a directory with ca.crt, redis.crt and redis.key."),
    ] = None,
    monitoring: Annotated[
        bool, typer.Option(show_default=False,
                           help="Also start an exporter per process and a local Prometheus with the stack's alert rules.")
    ] = False,
    prometheus_port: Annotated[
        int, typer.Option(metavar="PORT", help="Loopback port of the local Prometheus (with --monitoring).")
    ] = 9090,
    as_json: JsonOption = False,
) -> None:
    """Start the sandbox and wait until it converged.

    Starts the nodes (and sentinels), runs the bootstrap script, and waits until converged.
    """
    from cachelayer.sandbox.load_balancer import SandboxLoadBalancer
    from cachelayer.sandbox.local import LocalSandbox, sandbox_settings
    from cachelayer.sandbox.monitoring import SandboxMonitoring
    from cachelayer.sandbox.targets import retire_sandbox_nodes

    if topology not in (None, "cluster", "sentinel"):
        raise usage_error(f"--topology must be cluster or sentinel, not {topology!r}", as_json)
    with reported(as_json):
        from cachelayer.config.stack_file import read_stack_config

        settings, config = sandbox_settings(read_stack_config(stack), stack, topology, base_port, tls_dir)
        sandbox = LocalSandbox(settings, _workdir(stack, workdir), config=config, tls_dir=tls_dir)
        sandbox.check_same_deployment()
        with _progress("Draining the nodes the stack no longer plans…", as_json):
            retired = retire_sandbox_nodes(
                sandbox, report=lambda line: None if as_json else console.print(f"  {line}", highlight=False))
        if retired and not as_json:
            console.print(f"removed {', '.join(retired)}: every slot stayed served")
        with _progress(f"Starting the {settings.redis.topology} sandbox of stack {stack}…", as_json):
            result = sandbox.up()
        balancer = SandboxLoadBalancer(sandbox)
        if balancer.wanted:
            with _progress("Starting HAProxy in front of the Sentinel groups…", as_json):
                balancer.up()
    watch = None
    if monitoring:
        with reported(as_json), _progress("Starting the exporters and Prometheus…", as_json):
            watch = SandboxMonitoring(sandbox, prometheus_port)
            watch.up()
    if as_json:
        emit_json({
            "command": "sandbox up", "ok": True, "stack": stack, "topology": settings.redis.topology,
            "workdir": str(sandbox.workdir), "seconds": round(result.seconds, 3), "started": list(result.started),
            "processes": [{"name": name, "endpoint": endpoint, "role": role} for name, endpoint, role in _planned(sandbox)],
            "passwords_file": str(sandbox.passwords_file),
            "monitoring": None if watch is None else {"prometheus": watch.url, "exporters": len(watch.targets)},
            "load_balancer": [dataclasses.asdict(e) for e in balancer.endpoints] if balancer.wanted else None,
        })
        return
    console.print(
        f"[green]ready[/] in {result.seconds:.1f} s (all slots served after {result.slots_ok_seconds:.1f} s); "
        f"started {len(result.started)} process(es)"
        if settings.redis.is_cluster
        else f"[green]ready[/] in {result.seconds:.1f} s; started {len(result.started)} process(es)"
    )
    _print_endpoints(sandbox, show_password)
    if balancer.wanted:
        console.print(
            "load balancer (HAProxy; clients without Sentinel): "
            + "; ".join(f"{e.group} writes {e.write}, reads {e.read}" for e in balancer.endpoints)
            + f"; metrics {balancer.metrics_url}",
            highlight=False,
            soft_wrap=True,
        )
    if watch is not None:
        console.print(
            f"monitoring: {len(watch.targets)} exporter(s) scraped by Prometheus at {watch.url} "
            f"(alerts: {watch.url}/alerts; rules and targets in {watch.dir})",
            highlight=False,
            soft_wrap=True,
        )


def _planned(sandbox: LocalSandbox) -> list[tuple[str, str, str]]:
    """(process, endpoint, planned role) of every process."""
    rows = []
    for node in sandbox.topology.nodes:
        # In a cluster, redis-cli pairs replicas with masters itself: `status` shows the live pairing.
        planned = node.role if sandbox.topology.kind == "cluster" else f"{node.role} in {node.group}"
        rows.append((node.name, node.endpoint, planned))
    rows += [(sentinel.name, sentinel.endpoint, "sentinel") for sentinel in sandbox.topology.sentinels]
    return rows


def _print_endpoints(sandbox: LocalSandbox, show_password: bool) -> None:
    from cachelayer.render.nodes import cli_ca_flags

    rows = _planned(sandbox)
    table = Table(title="Endpoints")
    whole_column(table, "process", [r[0] for r in rows])
    whole_column(table, "endpoint", [r[1] for r in rows])
    whole_column(table, "planned role", [r[2] for r in rows])
    for row in rows:
        table.add_row(*row)
    console.print(table)

    passwords = sandbox.passwords
    first = sandbox.topology.nodes[0]
    cluster_flag = " -c" if sandbox.topology.kind == "cluster" else ""
    if sandbox.tls_dir is not None:
        cluster_flag += " " + shlex.join(cli_ca_flags(str(sandbox.tls_dir / "ca.crt")))
    # Reads the password from the 0600 file, so it never lands in the shell history.
    read = "import json, sys; print(json.load(open(sys.argv[1]))['app'])"
    console.print(f"Passwords: {sandbox.passwords_file} (mode 0600; users app, admin, replication, sentinel, monitor)",
                  highlight=False, soft_wrap=True)
    console.print("Connect as the application user:")
    console.print(
        f'  REDISCLI_AUTH=$(python3 -c "{read}" {shlex.quote(str(sandbox.passwords_file))}) '
        f"redis-cli{cluster_flag} --user app -p {first.port}",
        highlight=False,
        soft_wrap=True,
    )
    shown = passwords.app if show_password else _mask(passwords.app)
    console.print(f"  (that is REDISCLI_AUTH={shown} redis-cli{cluster_flag} --user app -p {first.port})",
                  highlight=False, soft_wrap=True)
    if show_password:
        console.print(f"  admin password: {passwords.admin}", highlight=False)


@sandbox_app.command()
def status(stack: StackOption = DEFAULT_STACK, workdir: WorkdirOption = None, as_json: JsonOption = False) -> None:
    """Health of every process.

    Up or down, role, slots, keys, memory, cluster_state; exit 1 with each problem named.
    """
    from cachelayer.sandbox.load_balancer import SandboxLoadBalancer
    from cachelayer.sandbox.local import LocalSandbox

    with reported(as_json):
        sandbox = LocalSandbox.from_workdir(_workdir(stack, workdir))
        report = sandbox.status()
    balancer = SandboxLoadBalancer(sandbox)
    balanced = _load_balancer_rows(balancer) if balancer.wanted else None
    problems = report.problems()
    if balanced is not None and balancer.running() is None:
        problems.append("haproxy (the load balancer) is not running: `sandbox up` starts it")
    code = ExitCode.PROBLEM if problems else ExitCode.OK
    if as_json:
        emit_json({
            "command": "sandbox status", "ok": not problems, "stack": sandbox.settings.stack, "workdir": str(sandbox.workdir),
            "topology": report.topology, "problems": problems,
            "nodes": [dataclasses.asdict(n) for n in report.nodes],
            "sentinels": [dataclasses.asdict(s) for s in report.sentinels],
            "load_balancer": balanced,
        })
        raise typer.Exit(code=code)
    console.print(status_table(report))
    if balanced is not None:
        console.print(_load_balancer_table(balancer, balanced))
    for problem in problems:
        console.print(f"[red]problem:[/] {escape(problem)}", soft_wrap=True)
    raise typer.Exit(code=code)


def _load_balancer_rows(balancer: Any) -> list[dict[str, Any]]:
    """Per group: HAProxy's endpoints and the servers it has UP (none when haproxy is down)."""
    up: dict[str, list[str]] = {}
    record = balancer.running()
    if record is not None:
        try:
            up = balancer.servers_up()
        except OSError:
            up = {}
    return [
        {"group": e.group, "pid": record.pid if record else None, "write": e.write, "read": e.read,
         "write_up": up.get(f"{e.group}-write", []), "read_up": up.get(f"{e.group}-read", [])}
        for e in balancer.endpoints
    ]


def _load_balancer_table(balancer: Any, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"load balancer (haproxy, metrics {balancer.metrics_url})")
    for column in ("group", "pid", "write", "master UP", "read", "UP"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["group"], str(row["pid"] or "[red]down"), row["write"], ", ".join(row["write_up"]) or "[red]none",
                      row["read"], ", ".join(row["read_up"]) or "[red]none")
    return table


def status_table(report: SandboxStatus) -> Table:
    cluster = report.topology == "cluster"
    table = Table(title=f"{report.topology} sandbox: {'[green]healthy' if report.healthy() else '[red]not healthy'}")
    whole_column(table, "process", [n.name for n in report.nodes] + [s.name for s in report.sentinels])
    whole_column(table, "pid", [str(n.pid or "-") for n in report.nodes] + [str(s.pid or "-") for s in report.sentinels])
    text_column(table, "state")
    whole_column(table, "role", [n.role for n in report.nodes] + ["sentinel"])
    if cluster:
        whole_column(table, "slots", [str(n.slots) for n in report.nodes])
        whole_column(table, "cluster_state", [n.cluster_state for n in report.nodes])
    # A sentinel's link cell lists its groups one per line: an address is never split.
    watched = {s.name: "\n".join(f"{group}→{address}" for group, address in s.masters.items()) for s in report.sentinels}
    whole_column(table, "link", [n.master_link for n in report.nodes] + list(watched.values()))
    whole_column(table, "keys", [str(n.keys) for n in report.nodes])
    whole_column(table, "memory", [n.memory for n in report.nodes])
    for node in report.nodes:
        state = "[green]up" if node.up else f"[red]down[/] {escape(node.error)}"
        row = [node.name, str(node.pid or "-"), state, node.role]
        if cluster:
            ok = "[green]ok" if node.cluster_state == "ok" else f"[red]{node.cluster_state}"
            row += ["-" if node.slots is None else str(node.slots), ok]
        row += [node.master_link, "-" if node.keys is None else str(node.keys), node.memory]
        table.add_row(*row)
    for sentinel in report.sentinels:
        state = "[green]up" if sentinel.up else f"[red]down[/] {escape(sentinel.error)}"
        row = [sentinel.name, str(sentinel.pid or "-"), state, "sentinel"]
        if cluster:
            row += ["-", "-"]
        row += [watched[sentinel.name], "-", "-"]
        table.add_row(*row)
    return table


@sandbox_app.command()
def down(
    context: typer.Context,
    stack: StackOption = DEFAULT_STACK,
    workdir: WorkdirOption = None,
    purge: Annotated[
        bool, typer.Option(show_default=False,
                           help="Also remove the passwords (connected applications then need the new ones).")
    ] = False,
    as_json: JsonOption = False,
    yes: YesOption = False,
) -> None:
    """Stop the sandbox and remove its data.

    Stops every process the sandbox started; the passwords stay unless --purge (asked first).
    """
    from cachelayer.sandbox.load_balancer import SandboxLoadBalancer
    from cachelayer.sandbox.local import LocalSandbox
    from cachelayer.sandbox.monitoring import SandboxMonitoring

    with reported(as_json):
        sandbox = LocalSandbox.from_workdir(_workdir(stack, workdir))
    if purge:
        confirm_change(context, "stop the sandbox and delete its data and passwords (applications then need new ones)",
                       stack=sandbox.settings.stack, where=f"local sandbox in {sandbox.workdir}", yes=yes, as_json=as_json)
    with reported(as_json), _progress("Stopping…", as_json):
        SandboxMonitoring(sandbox).down()  # exporters and Prometheus, if `up --monitoring` started them
        SandboxLoadBalancer(sandbox).down()  # haproxy, if the topology has one
        result = sandbox.down(purge=purge)
    if result.not_ours:
        raise fail(
            f"{', '.join(result.not_ours)}: the recorded pid now belongs to another process, which was left alone; "
            f"the files in {sandbox.workdir} were kept", as_json
        )
    kept_passwords = sandbox.passwords_file.exists()
    if as_json:
        emit_json({"command": "sandbox down", "ok": True, "workdir": str(sandbox.workdir), "stopped": list(result.stopped),
                   "kept_passwords": str(sandbox.passwords_file) if kept_passwords else None})
        return
    message = f"stopped {len(result.stopped)} process(es); removed the node files and data in {sandbox.workdir}"
    if kept_passwords:
        message += f"; kept the passwords in {sandbox.passwords_file} for the next `up` (--purge removes them)"
    elif sandbox.workdir.exists():
        message += f"; kept {sandbox.workdir}, which holds files this sandbox did not write"
    else:
        message += f"; removed {sandbox.workdir}"
    console.print(message, soft_wrap=True, highlight=False)
