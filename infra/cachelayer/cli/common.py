"""What every `cachelayer` command shares: the exit-code table, the common options, how an error
is reported (one line on stderr, or one JSON document under --json), tables that never split a
name, and which deployment `--stack` means.

Only light modules are imported here and in the command modules' top level: `cachelayer --help`
and the quick commands start without redis, cloudflare or boto3 (a command imports what it
needs when it runs).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cachelayer.errors import CachelayerError, SettingsError, UsageError

if TYPE_CHECKING:
    from cachelayer.ops.target import Runner, Target


class ExitCode(IntEnum):
    """Every command's exit codes (docs/operations.md#exit-codes). A script can rely on them."""

    OK = 0  # done: healthy, no drift, the action finished (and was checked)
    PROBLEM = 1  # found a problem (unhealthy, drift, a failed check), or refused or failed the action
    CANNOT_CHECK = 2  # could not check: no deployment found, nothing answered, the API unreachable
    SETTINGS = 3  # the stack file is missing, or one of its settings is wrong (the message names the key)
    USAGE = 64  # the command line is wrong: an unknown option, a bad value (EX_USAGE of sysexits.h)


DEFAULT_STACK = "dev"  # every command, `cdn` ones included (docs/operations.md#which-stack)

console = Console()
errors = Console(stderr=True)

# Help texts are rich markup: square brackets would be read as a style tag and vanish.
StackOption = Annotated[
    str, typer.Option("--stack", "-s", metavar="NAME", help="The stack: its Pulumi.NAME.yaml and its deployment.")
]
SeedOption = Annotated[
    str | None,
    typer.Option(metavar="HOST:PORT", show_default=False,
                 help="A node to start from, with the admin password in REDIS_ADMIN_PASSWORD (instead of the "
                      "sandbox or Pulumi)."),
]
WorkdirOption = Annotated[
    Path | None,
    typer.Option(metavar="DIR", show_default=False,
                 help="Where the sandbox's files, logs and PIDs live (default: .sandbox/STACK)."),
]
OutputsOption = Annotated[
    Path | None,
    typer.Option(metavar="FILE", show_default=False,
                 help="A saved `pulumi stack output --json --show-secrets` instead of running it."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, errors included (docs/operations.md).")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Go ahead without a prompt: needed when stdin is not a terminal, and "
                                           "with --json (docs/operations.md#guards).")
]


# ----------------------------------------------------------------------------------- errors
def emit_json(document: Mapping[str, Any]) -> None:
    # Plain print: rich would wrap long lines and read brackets as markup.
    print(json.dumps(document, indent=2, default=str))


def fail(message: str, as_json: bool = False, code: ExitCode = ExitCode.PROBLEM) -> typer.Exit:
    """Report an error (one line on stderr, or {"ok": false, "error": ...} under --json); the
    caller raises what this returns."""
    if as_json:
        emit_json({"ok": False, "error": message, "exit_code": int(code)})
    else:
        errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=int(code))


def exit_code_for(error: CachelayerError, default: ExitCode) -> ExitCode:
    """One code per kind of error, whichever command meets it."""
    if isinstance(error, SettingsError):
        return ExitCode.SETTINGS
    if isinstance(error, UsageError):
        return ExitCode.USAGE
    code = getattr(error, "exit_code", None)  # CdnApiError says whether it was refused or unreachable
    return ExitCode(code) if isinstance(code, int) and code in ExitCode._value2member_map_ else default


@contextmanager
def reported(as_json: bool = False, code: ExitCode = ExitCode.PROBLEM, prefix: str = "") -> Iterator[None]:
    """Turn a CachelayerError into its one-line report and exit code; anything else is a bug and
    keeps its traceback."""
    try:
        yield
    except CachelayerError as error:
        raise fail(f"{prefix}{error}", as_json, exit_code_for(error, code)) from None


def usage_error(message: str, as_json: bool = False) -> typer.Exit:
    """A bad option value found by the command itself: the same code as click's own checks."""
    return fail(message, as_json, ExitCode.USAGE)


@contextmanager
def progress(message: str, as_json: bool = False) -> Iterator[None]:
    """A spinner on stderr (stdout stays clean for --json and pipes)."""
    if as_json:
        yield
        return
    with errors.status(message):
        yield


# ----------------------------------------------------------------------------------- tables
def whole_column(table: Table, title: str, values: Iterable[str], **options: Any) -> None:
    """A column for names, addresses and numbers: as wide as its widest expected value, never
    wrapped, so `maxmemory-policy` or `127.0.0.1:7001` is never split (prose columns fold
    instead). A longer, unexpected value (an error) folds rather than breaking the table."""
    widest = max((len(line) for value in values for line in str(value).splitlines()), default=0)
    table.add_column(title, no_wrap=True, overflow="fold", min_width=max(widest, len(title)), **options)


def text_column(table: Table, title: str, **options: Any) -> None:
    """A column of prose: wraps between words."""
    table.add_column(title, overflow="fold", **options)


# -------------------------------------------------------------------------------- outside
def cloudflare_client(token: str) -> Any:
    import cloudflare  # heavy: only the cdn commands that call the API load it

    return cloudflare.Cloudflare(api_token=token, max_retries=0)  # retries are ours: paced, honouring Retry-After


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _ask(question: str) -> str:
    return str(typer.prompt(question, default="", show_default=False, err=True))


@dataclass(frozen=True)
class Runtime:
    """What the commands reach outside the process. `main(argv, runtime=...)` hands it to every
    command; tests pass fakes (an API client on a mock transport, a fake clock)."""

    cloudflare_client: Callable[[str], Any] = cloudflare_client
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = _utc_now
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    interactive: Callable[[], bool] = _stdin_is_terminal  # may a command prompt?
    ask: Callable[[str], str] = _ask  # a prompt's answer


def runtime_of(context: typer.Context) -> Runtime:
    found = context.find_object(Runtime)
    return found if found is not None else Runtime()


# --------------------------------------------------------------------------------- target
SandboxFinder = Callable[[str, Path | None], "Target | None"]


def resolve_target(
    stack: str,
    *,
    seed: str | None = None,
    workdir: Path | None = None,
    outputs_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    runner: Runner | None = None,
    find_sandbox: SandboxFinder | None = None,
) -> Target:
    """The first source that knows the stack: its running local sandbox, its Pulumi outputs
    (the CLI, or --outputs FILE), the environment (REDIS_ADMIN_PASSWORD with --seed or
    REDIS_NODE_<n>_*). A --seed skips the first two; --outputs skips the sandbox."""
    from cachelayer.ops.target import ADMIN_PASSWORD_ENV, TargetError, from_environment, from_pulumi
    from cachelayer.sandbox.state import default_workdir
    from cachelayer.sandbox.targets import from_sandbox

    sandboxes = find_sandbox or from_sandbox
    env = os.environ if env is None else env
    if outputs_file is None and seed is None:
        target = sandboxes(stack, workdir)
        if target is not None:
            return target
        if workdir is not None:
            raise TargetError(f"no running sandbox in {workdir}: start it with `cachelayer sandbox up`")
    if seed is None:
        target = from_pulumi(stack, runner, _readable(outputs_file), env.get("REDIS_TLS_CA") or None)
        if target is not None:
            return target
    target = from_environment(stack, env, seed)
    if target is not None:
        return target
    hint = ""
    if env.get("REDIS_PASSWORD"):
        hint = (f" (REDIS_PASSWORD is set, but it is the application's password, as the cache library reads it: "
                f"the operator commands take the admin user's from {ADMIN_PASSWORD_ENV})")
    raise TargetError(
        f"found no deployment of stack {stack}: no running sandbox in {default_workdir(stack)}, no Pulumi CLI "
        f"(or --outputs FILE), and no {ADMIN_PASSWORD_ENV} with --seed host:port in the environment{hint}. "
        f"Start the sandbox with `cachelayer sandbox up --stack {stack}`, or set {ADMIN_PASSWORD_ENV} and pass --seed"
    )


def _readable(outputs_file: Path | None) -> Path | None:
    """--outputs must name a JSON file: say so in one line rather than with a traceback."""
    if outputs_file is None:
        return None
    try:
        json.loads(outputs_file.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"--outputs {outputs_file}: not a readable `pulumi stack output --json` file ({error})") from None
    return outputs_file


def target_of(stack: str, seed: str | None, workdir: Path | None, outputs: Path | None, as_json: bool) -> Target:
    """The deployment a command works on; names its source on stderr (not under --json)."""
    with reported(as_json, ExitCode.CANNOT_CHECK):
        target = resolve_target(stack, seed=seed, workdir=workdir, outputs_file=outputs)
    if not as_json:
        errors.print(f"[dim]{target.kind} deployment of stack {target.stack}, from {escape(target.source)}[/]",
                     highlight=False)
    return target


# ---------------------------------------------------------------------- confirmation
# What each origin of a Target means to the operator deciding whether it is the right one.
ORIGIN_NOTES = {
    "sandbox": "a local sandbox on this machine, not a deployed stack",
    "pulumi": "the stack's Pulumi outputs",
    "environment": "the environment (REDIS_ADMIN_PASSWORD, --seed or REDIS_NODE_<n>_*): "
                   "the stack name is only the label --stack gave",
}


def stack_given(context: typer.Context, parameter: str = "stack") -> bool:
    """Whether the operator named the stack (on the command line or in an environment variable)
    rather than leaving the default."""
    # By name: typer may carry its own copy of click, whose ParameterSource is another enum.
    source = context.get_parameter_source(parameter)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def confirm_change(
    context: typer.Context, action: str, *, stack: str, where: str, yes: bool, as_json: bool
) -> None:
    """The one confirmation before a command changes data: shows what it will do, to which stack
    and where that deployment came from; goes ahead with --yes, else asks the operator to type
    the stack name. Refuses (USAGE) without --yes when it cannot ask: under --json, or when stdin
    is not a terminal. Raises typer.Exit when not confirmed."""
    runtime = runtime_of(context)
    if not as_json:
        errors.print(f"[bold]about to {escape(action)}[/]\n  stack [bold]{escape(stack)}[/]: {escape(where)}",
                     highlight=False, soft_wrap=True)
    if yes:
        return
    if as_json:
        raise fail(f"refusing to {action} without --yes: --json never prompts", as_json, ExitCode.USAGE)
    if not runtime.interactive():
        raise fail(f"refusing to {action} without --yes: stdin is not a terminal to confirm on", code=ExitCode.USAGE)
    answer = runtime.ask(f"Type the stack name ({stack}) to go ahead")
    if answer.strip() != stack:
        raise fail(f"not confirmed ({answer.strip()!r} is not {stack!r}): nothing changed", code=ExitCode.PROBLEM)


def origin_of(target: Target) -> str:
    return f"{target.kind} deployment from {target.source} ({ORIGIN_NOTES.get(target.origin, target.origin)})"


def require_named_stack(context: typer.Context, target: Target, as_json: bool, stack_option: str = "stack") -> None:
    """A deployment found from the environment or --seed does not know its stack: a command that
    changes data or names what it writes by the stack (a backup) needs it named explicitly, so
    prod data is never changed, backed up or restored under the default `dev` label."""
    if target.origin == "environment" and not stack_given(context, stack_option):
        option = "--into" if stack_option == "into" else "--stack"
        raise usage_error(f"the deployment comes from the environment or --seed, which cannot tell which stack it is: "
                          f"name it with {option} NAME", as_json)


def confirm_target_change(
    context: typer.Context, action: str, target: Target, *, yes: bool, as_json: bool, stack_option: str = "stack"
) -> None:
    """confirm_change for a live deployment (require_named_stack first)."""
    require_named_stack(context, target, as_json, stack_option)
    confirm_change(context, action, stack=target.stack, where=origin_of(target), yes=yes, as_json=as_json)
