"""`cachelayer` (venv/bin/cachelayer, or `python -m cachelayer`): operator commands. `sandbox` runs the stack locally; more sub-apps
(e.g. `ops`) are added with `app.add_typer(...)`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cachelayer.cli import backup as backup_cli
from cachelayer.cli import delivery as delivery_cli
from cachelayer.cli import ops as ops_cli
from cachelayer.cli.cdn import cdn_app
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.ops.rebalance import RebalanceError
from cachelayer.ops.scale_in import retire_sandbox_nodes
from cachelayer.render.nodes import cli_ca_flags
from cachelayer.sandbox.local import (
    LocalSandbox,
    SandboxError,
    SandboxStatus,
    default_workdir,
    sandbox_settings,
)
from cachelayer.sandbox.monitoring import SandboxMonitoring

app = typer.Typer(help="Caching layer (Redis + Cloudflare) tooling.", no_args_is_help=True, add_completion=False)
sandbox_app = typer.Typer(
    help="The stack's Redis as local redis-server processes on 127.0.0.1 (no Docker, no Pulumi).",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(cdn_app, name="cdn")
ops_cli.register(app)  # health, drift, report, failover, rebalance, drain
delivery_cli.register(app)  # render, delivery render-diff|pr-comment|drift-issue
backup_cli.register(app)  # backup, restore, restore-drill

console = Console()
errors = Console(stderr=True)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack whose Pulumi.<stack>.yaml is read.")]
# Help texts are rich markup: square brackets would be read as a style tag and vanish.
WorkdirOption = Annotated[
    Path | None,
    typer.Option("--workdir", help="Where files, logs and PIDs live (default: .sandbox/STACK).", show_default=False),
]


def _fail(message: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=1)


def _workdir(stack: str, workdir: Path | None) -> Path:
    return workdir if workdir is not None else default_workdir(stack)


def _mask(password: str) -> str:
    return f"{password[:3]}…({len(password)} chars)"


@sandbox_app.command()
def up(
    stack: StackOption = "dev",
    workdir: WorkdirOption = None,
    topology: Annotated[
        str | None, typer.Option(help="Override redis.topology: cluster or sentinel.", show_default=False)
    ] = None,
    base_port: Annotated[int | None, typer.Option(help="Override redis.base_port (first node's port).")] = None,
    show_password: Annotated[bool, typer.Option(help="Print the passwords in full.")] = False,
    tls_dir: Annotated[
        Path | None,
        typer.Option(help="For a stack with redis.tls: a directory with ca.crt, redis.crt, redis.key.", show_default=False),
    ] = None,
    monitoring: Annotated[
        bool, typer.Option(help="Also start an exporter per process and a local Prometheus with the stack's alert rules.")
    ] = False,
    prometheus_port: Annotated[int, typer.Option(help="Loopback port of the local Prometheus (with --monitoring).")] = 9090,
) -> None:
    """Start the nodes (and sentinels), run the bootstrap script, wait until converged."""
    if topology not in (None, "cluster", "sentinel"):
        raise _fail(f"--topology must be cluster or sentinel, not {topology!r}")
    try:
        settings, config = sandbox_settings(read_stack_config(stack), stack, topology, base_port, tls_dir)
        sandbox = LocalSandbox(settings, _workdir(stack, workdir), config=config, tls_dir=tls_dir)
        sandbox.check_same_deployment()
        with console.status("Draining the nodes the stack no longer plans…"):
            retired = retire_sandbox_nodes(sandbox, report=lambda line: console.print(f"  {line}", highlight=False))
        if retired:
            console.print(f"removed {', '.join(retired)}: every slot stayed served")
        with console.status(f"Starting the {settings.redis.topology} sandbox of stack {stack}…"):
            result = sandbox.up()
    except (SandboxError, SettingsError, RebalanceError) as error:
        raise _fail(str(error)) from None
    console.print(
        f"[green]ready[/] in {result.seconds:.1f} s (all slots served after {result.slots_ok_seconds:.1f} s); "
        f"started {len(result.started)} process(es)"
        if settings.redis.is_cluster
        else f"[green]ready[/] in {result.seconds:.1f} s; started {len(result.started)} process(es)"
    )
    _print_endpoints(sandbox, show_password)
    if monitoring:
        try:
            with console.status("Starting the exporters and Prometheus…"):
                watch = SandboxMonitoring(sandbox, prometheus_port)
                watch.up()
        except SandboxError as error:
            raise _fail(str(error)) from None
        console.print(
            f"monitoring: {len(watch.targets)} exporter(s) scraped by Prometheus at {watch.url} "
            f"(alerts: {watch.url}/alerts; rules and targets in {watch.dir})",
            highlight=False,
            soft_wrap=True,
        )


def _print_endpoints(sandbox: LocalSandbox, show_password: bool) -> None:
    table = Table(title="Endpoints")
    for column in ("process", "endpoint", "planned role"):
        table.add_column(column)
    for node in sandbox.topology.nodes:
        # In a cluster, redis-cli pairs replicas with masters itself: `status` shows the live pairing.
        planned = node.role if sandbox.topology.kind == "cluster" else f"{node.role} in {node.group}"
        table.add_row(node.name, node.endpoint, planned)
    for sentinel in sandbox.topology.sentinels:
        table.add_row(sentinel.name, sentinel.endpoint, "sentinel")
    console.print(table)

    passwords = sandbox.passwords
    first = sandbox.topology.nodes[0]
    cluster_flag = " -c" if sandbox.topology.kind == "cluster" else ""
    if sandbox.tls_dir is not None:
        cluster_flag += " " + shlex.join(cli_ca_flags(str(sandbox.tls_dir / "ca.crt")))
    # Reads the password from the 0600 file, so it never lands in the shell history.
    read = "import json, sys; print(json.load(open(sys.argv[1]))['app'])"
    console.print(f"Passwords: {sandbox.passwords_file} (mode 0600; users app, admin, replication, sentinel, monitor)")
    console.print("Connect as the application user:")
    console.print(
        f'  REDISCLI_AUTH=$(python3 -c "{read}" {shlex.quote(str(sandbox.passwords_file))}) '
        f"redis-cli{cluster_flag} --user app -p {first.port}",
        highlight=False,
        soft_wrap=True,
    )
    shown = passwords.app if show_password else _mask(passwords.app)
    console.print(f"  (that is REDISCLI_AUTH={shown} redis-cli{cluster_flag} --user app -p {first.port})", highlight=False)
    if show_password:
        console.print(f"  admin password: {passwords.admin}", highlight=False)


@sandbox_app.command()
def status(stack: StackOption = "dev", workdir: WorkdirOption = None) -> None:
    """Health of every process: up/down, role, slots, keys, memory, cluster_state."""
    try:
        sandbox = LocalSandbox.from_workdir(_workdir(stack, workdir))
        report = sandbox.status()
    except (SandboxError, SettingsError) as error:
        raise _fail(str(error)) from None
    console.print(status_table(report))
    problems = report.problems()
    for problem in problems:
        console.print(f"[red]problem:[/] {escape(problem)}", soft_wrap=True)
    if problems:
        raise typer.Exit(code=1)


def status_table(report: SandboxStatus) -> Table:
    cluster = report.topology == "cluster"
    table = Table(title=f"{report.topology} sandbox: {'[green]healthy' if report.healthy() else '[red]not healthy'}")
    columns = ["process", "pid", "state", "role", "link", "keys", "memory"]
    if cluster:
        columns[4:4] = ["slots", "cluster_state"]
    # Full names at any terminal width: the name column never shrinks or wraps.
    names = [n.name for n in report.nodes] + [s.name for s in report.sentinels]
    for column in columns:
        if column == "process":
            table.add_column(column, no_wrap=True, min_width=max(map(len, names), default=7))
        else:
            table.add_column(column, overflow="fold")
    for node in report.nodes:
        state = "[green]up" if node.up else f"[red]down[/] {node.error}"
        row = [node.name, str(node.pid or "-"), state, node.role, node.master_link,
               "-" if node.keys is None else str(node.keys), node.memory]
        if cluster:
            ok = "[green]ok" if node.cluster_state == "ok" else f"[red]{node.cluster_state}"
            row[4:4] = ["-" if node.slots is None else str(node.slots), ok]
        table.add_row(*row)
    for sentinel in report.sentinels:
        state = "[green]up" if sentinel.up else f"[red]down[/] {sentinel.error}"
        watched = ", ".join(f"{group}→{address}" for group, address in sentinel.masters.items())
        row = [sentinel.name, str(sentinel.pid or "-"), state, "sentinel", watched, "-", "-"]
        table.add_row(*row)
    return table


@sandbox_app.command()
def down(
    stack: StackOption = "dev",
    workdir: WorkdirOption = None,
    purge: Annotated[
        bool, typer.Option(help="Also remove the passwords (connected applications then need the new ones).")
    ] = False,
) -> None:
    """Stop every process the sandbox started and remove its data; the passwords stay unless --purge."""
    try:
        sandbox = LocalSandbox.from_workdir(_workdir(stack, workdir))
        with console.status("Stopping…"):
            SandboxMonitoring(sandbox).down()  # exporters and Prometheus, if `up --monitoring` started them
            result = sandbox.down(purge=purge)
    except (SandboxError, SettingsError) as error:
        raise _fail(str(error)) from None
    if result.not_ours:
        raise _fail(
            f"{', '.join(result.not_ours)}: the recorded pid now belongs to another process, which was left alone; "
            f"the files in {sandbox.workdir} were kept"
        )
    message = f"stopped {len(result.stopped)} process(es); removed the node files and data in {sandbox.workdir}"
    if sandbox.passwords_file.exists():
        message += f"; kept the passwords in {sandbox.passwords_file} for the next `up` (--purge removes them)"
    elif sandbox.workdir.exists():
        message += f"; kept {sandbox.workdir}, which holds files this sandbox did not write"
    else:
        message += f"; removed {sandbox.workdir}"
    console.print(message, soft_wrap=True, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it with an argv)."""
    try:
        app(args=argv, prog_name="cachelayer")
    except SystemExit as exit_:  # typer's standalone mode reports usage errors and exits
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0
