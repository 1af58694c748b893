"""`cachelayer` (venv/bin/cachelayer, or `python -m cachelayer`): the one operator CLI.

One module per area, each adding its commands with `register(app)`: sandbox, ops (health,
drift, report, failover, rebalance, drain), backup (backup, restore, restore-drill), cdn,
delivery (render, delivery ...), rotate. What they share (options, exit codes, error reports, which
deployment a stack means) is in common.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer
from typer.exceptions import TyperException

from cachelayer.cli import backup, cdn, delivery, ops, rotate, sandbox
from cachelayer.cli.common import ExitCode, Runtime, emit_json, errors

CLICK_USAGE_CODE = 2  # click.UsageError.exit_code: here 2 means "could not check", so it becomes USAGE

app = typer.Typer(
    help="Caching layer (Redis + Cloudflare) tooling. Exit codes: 0 ok, 1 a problem found or refused, "
    "2 could not check, 3 a stack setting is wrong, 64 a wrong command line (docs/operations.md).",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: prose rewrapped to the terminal, no type column, nothing cut at 80 columns.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
for area in (sandbox, ops, rotate, backup, cdn, delivery):
    area.register(app)


def main(argv: Sequence[str] | None = None, runtime: Runtime | None = None) -> int:
    """Entry point; returns the exit code. Tests call it with an argv, and a Runtime of fakes."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="cachelayer", standalone_mode=False, obj=runtime)
    except TyperException as error:  # the parser's own errors: click's usage errors carry exit code 2
        code = getattr(error, "exit_code", ExitCode.PROBLEM)
        code = ExitCode.USAGE if code == CLICK_USAGE_CODE else code
        if "--json" in args:
            emit_json({"ok": False, "error": error.format_message(), "exit_code": int(code)})
        else:
            error.show()  # type: ignore[attr-defined]
        return code
    except typer.Abort:  # Ctrl-C or EOF at a confirmation prompt
        errors.print("aborted", highlight=False)
        return ExitCode.PROBLEM
    return result if isinstance(result, int) else ExitCode.OK
