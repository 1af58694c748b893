"""`cachelayer rotate USER --phase add|remove|status`: a password rotation with no downtime
(ops/rotate.py; the procedure is in docs/security.md, "Rotating a password").

The new password comes from REDIS_NEW_PASSWORD, or else from the first line of stdin (a hidden
prompt on a terminal); never from the command line. It is never printed.

`--phase add|remove` change the local sandbox; a stack Pulumi manages (the dev containers, the
prod hosts) renders every file from its settings at each `pulumi up`, which would undo them, so
there the phases are `<key>_previous` and `pulumi up` (rotation_by_pulumi_up); `--phase status`
reads any deployment.
"""

from __future__ import annotations

import sys
from enum import StrEnum
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
    console,
    emit_json,
    errors,
    reported,
    runtime_of,
    target_of,
    usage_error,
    whole_column,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cachelayer.ops.rotate import RotationStatus
    from cachelayer.ops.target import Target

NEW_PASSWORD_ENV = "REDIS_NEW_PASSWORD"


class Phase(StrEnum):
    add = "add"
    remove = "remove"
    status = "status"


def register(app: typer.Typer) -> None:
    app.command()(rotate)


def rotate(
    context: typer.Context,
    user: Annotated[str, typer.Argument(help="The ACL user: app, admin, replication, sentinel or monitor.")],
    phase: Annotated[
        Phase,
        typer.Option(help="add: every process accepts the new password too, and the deployment presents it; "
                          "remove: the old password is refused everywhere (only once the new one works "
                          "everywhere); status: where the rotation stands."),
    ] = Phase.status,
    stack: StackOption = DEFAULT_STACK,
    seed: SeedOption = None,
    workdir: WorkdirOption = None,
    outputs: OutputsOption = None,
    as_json: JsonOption = False,
) -> int:
    """Rotate USER's password with no downtime: `--phase add`, switch the application to the new
    password, then `--phase remove`. The new password is read from REDIS_NEW_PASSWORD, or stdin."""
    from cachelayer.ops.rotate import ROTATABLE_USERS, add_password, read_status, remove_old_passwords

    if user not in ROTATABLE_USERS:
        raise usage_error(f"cannot rotate user {user!r}: choose one of {', '.join(ROTATABLE_USERS)}", as_json)
    env = runtime_of(context).env
    target = target_of(stack, seed, workdir, outputs, as_json)
    if phase is not Phase.status and target.origin == "pulumi":
        raise usage_error(rotation_by_pulumi_up(user, target.stack), as_json)
    # For status the new password is optional: given, the table says which processes accept it.
    new_password = env.get(NEW_PASSWORD_ENV) or None if phase is Phase.status else _read_new_password(env, as_json)
    report = (lambda line: None) if as_json else (lambda line: errors.print(escape(line), highlight=False))
    with reported(as_json):
        if phase is Phase.add:
            assert new_password is not None
            status = add_password(target, user, new_password, report)
            _switch_sandbox_exporters(target, user, new_password, report)
            _switch_sandbox_load_balancer(target, user, new_password, report)
        elif phase is Phase.remove:
            assert new_password is not None
            status = remove_old_passwords(target, user, new_password, report)
            _keep_in_sandbox(target, user, new_password)
        else:
            status = read_status(target, user, new_password)
    code = _exit_code(status)
    if as_json:
        emit_json({"ok": code == ExitCode.OK, "exit_code": int(code), "stack": target.stack, **status.to_json()})
    else:
        _print_status(status)
    return code


def _read_new_password(env: Mapping[str, str], as_json: bool) -> str:
    password = env.get(NEW_PASSWORD_ENV)
    if password is None:
        if sys.stdin.isatty():
            import getpass

            password = getpass.getpass("new password: ")
        else:
            try:
                password = sys.stdin.readline().rstrip("\r\n")
            except OSError:  # no readable stdin (closed, or a test runner's)
                password = ""
    if not password:
        raise usage_error(f"no new password: set {NEW_PASSWORD_ENV}, or give it on stdin (never on the command line)",
                          as_json)
    return password


def rotation_by_pulumi_up(user: str, stack: str) -> str:
    """One line: how a stack Pulumi manages rotates `user` (docs/security.md, "Rotating a password")."""
    key = f"cachelayer:{user}_password"
    return (f"stack {stack} is deployed by Pulumi, which renders every file at each `pulumi up`: rotate {user} "
            f"there with phase 1 `pulumi config set --secret {key}_previous --stack {stack}` (the current password; "
            f"a generated one is the result of redis-credentials-{user}-password in `pulumi stack export "
            f"--show-secrets --stack {stack}`), `pulumi config set --secret {key} --stack {stack}` (the new one), "
            f"`pulumi up --stack {stack}`; once no client uses the old one, phase 2 `pulumi config rm "
            f"{key}_previous --stack {stack}`, `pulumi up --stack {stack}`")


def _switch_sandbox_exporters(target: Target, user: str, password: str, report: Callable[[str], None]) -> None:
    """A `monitor` rotation on a local sandbox: its exporters (if `up --monitoring` started them)
    log in with the new password from now on; every node accepts it by now."""
    from cachelayer.render.nodes import USERS
    from cachelayer.sandbox.local import LocalSandbox
    from cachelayer.sandbox.monitoring import SandboxMonitoring

    if user == USERS.monitor and isinstance(target.sandbox, LocalSandbox):
        for process in SandboxMonitoring(target.sandbox).restart_exporters(password):
            report(f"{process}: its exporter logs in with the new password")


def _switch_sandbox_load_balancer(target: Target, user: str, password: str, report: Callable[[str], None]) -> None:
    """A `monitor` rotation on a local sandbox: its HAProxy (sentinel topology) checks the nodes
    with the new password from now on, through a graceful reload; every node accepts it by now.
    Without it the checks would fail once `--phase remove` refuses the old password, and every
    write port would lose its master."""
    import dataclasses

    from cachelayer.render.nodes import USERS
    from cachelayer.sandbox.load_balancer import SandboxLoadBalancer
    from cachelayer.sandbox.local import LocalSandbox

    if user != USERS.monitor or not isinstance(target.sandbox, LocalSandbox):
        return
    balancer = SandboxLoadBalancer(target.sandbox)
    if balancer.running() is None:
        return
    balancer.reload(dataclasses.replace(target.sandbox.passwords, monitor=password))
    report("haproxy: its checks log in with the new password (reloaded; every group's master is up)")


def _keep_in_sandbox(target: Target, user: str, password: str) -> None:
    """A local sandbox renders its files from its password file at every start: keep the new one there."""
    from cachelayer.sandbox.local import LocalSandbox

    if isinstance(target.sandbox, LocalSandbox):
        target.sandbox.keep_password(user, password)


def _exit_code(status: RotationStatus) -> ExitCode:
    """0: every process agrees (one password, or two between the phases); 1: a phase stopped
    halfway, a process refuses the new password, or holds it in memory only; 2: a process could
    not be read."""
    if status.phase == "unknown":
        return ExitCode.CANNOT_CHECK
    if status.phase == "mixed" or status.unsaved or any(p.accepts_new is False for p in status.processes):
        return ExitCode.PROBLEM
    return ExitCode.OK


def _print_status(status: RotationStatus) -> None:
    table = Table(box=box.SIMPLE, title=f"user {status.user}: {status.phase}", title_justify="left")
    whole_column(table, "process", [p.name for p in status.processes])
    whole_column(table, "endpoint", [p.endpoint for p in status.processes])
    table.add_column("passwords", justify="right")
    table.add_column("accepts the new one")
    table.add_column("error", overflow="fold")
    for p in status.processes:
        accepts = "-" if p.accepts_new is None else ("yes" if p.accepts_new else "NO")
        table.add_row(p.name, p.endpoint, "-" if p.passwords is None else str(p.passwords), accepts, escape(p.error))
    console.print(table)
    hints = {
        "one password": "no rotation in progress" if not status.settled_on_new else "rotation done",
        "two passwords": "between the phases: switch the clients to the new password, then `--phase remove`",
        "mixed": "a phase stopped halfway: re-run it",
        "unknown": "a process could not be read",
    }
    console.print(hints[status.phase], highlight=False)
    if status.unsaved:
        console.print(f"in memory only (a restart drops the new password): {', '.join(status.unsaved)}",
                      highlight=False)
