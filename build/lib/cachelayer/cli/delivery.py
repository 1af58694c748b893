"""`cachelayer render` and `cachelayer delivery ...`: the commands the GitHub workflows run
(docs/delivery.md). Exit codes as the ops commands: 0 ok/clean, 1 drift or a problem, 2 could not."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cachelayer.config.settings import load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.ops.delivery import (
    RENDER_DIFF_MARKER,
    CheckResult,
    GhError,
    classify_refresh,
    classify_runtime,
    overall,
    read_tree,
    render_diff_markdown,
    sync_drift_issue,
    upsert_pr_comment,
)
from cachelayer.plan.topology import build_topology
from cachelayer.render.files import mask_hashes, placeholder_passwords, rendered_files, write_tree

OK, PROBLEM, CANNOT = 0, 1, 2

errors = Console(stderr=True)
delivery_app = typer.Typer(help="What the CI workflows run: rendered-file diff, drift issues, PR comments.",
                           no_args_is_help=True)

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack whose Pulumi.<stack>.yaml is read.")]
RepoOption = Annotated[str, typer.Option(help="owner/name of the GitHub repository.")]


def _fail(message: str, code: int = CANNOT) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def render(
    stack: StackOption = "dev",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into (emptied first).")] = Path("rendered"),
) -> None:
    """Write every file and script the stack ships to its nodes and hosts, secrets as placeholders."""
    try:
        settings = load_settings(read_stack_config(stack), stack)
    except SettingsError as error:
        raise _fail(str(error)) from None
    passwords = placeholder_passwords()
    files = mask_hashes(rendered_files(settings, build_topology(settings), passwords), passwords)
    if out.exists():
        shutil.rmtree(out)  # a file the stack no longer ships must not linger in the diff
    write_tree(files, out)
    errors.print(f"{len(files)} files of stack {stack} in {out}", highlight=False)


@delivery_app.command("render-diff")
def render_diff(
    base: Annotated[Path, typer.Option(help="Renderings of the base branch, one directory per stack.")],
    head: Annotated[Path, typer.Option(help="Renderings of the pull request, one directory per stack.")],
    stacks: Annotated[list[str], typer.Option("--stack", "-s", help="Stacks to compare (repeat).")],
    out: Annotated[Path | None, typer.Option(help="Write the markdown here instead of stdout.")] = None,
) -> None:
    """The pull-request comment: for each stack, what changes in the files the servers receive."""
    markdown = render_diff_markdown({s: (read_tree(base / s), read_tree(head / s)) for s in stacks})
    if out is None:
        print(markdown, end="")
    else:
        out.write_text(markdown)


@delivery_app.command("pr-comment")
def pr_comment(
    repo: RepoOption,
    pr: Annotated[int, typer.Option(help="Pull-request number.")],
    body_file: Annotated[Path, typer.Option(help="Markdown to post.")],
    marker: Annotated[str, typer.Option(help="Hidden marker that finds our earlier comment.")] = RENDER_DIFF_MARKER,
) -> None:
    """Post the comment, or update the earlier one carrying the same marker."""
    try:
        done = upsert_pr_comment(repo, pr, marker, body_file.read_text())
    except (GhError, OSError) as error:
        raise _fail(str(error)) from None
    errors.print(f"comment {done} on #{pr}", highlight=False)


@delivery_app.command("drift-issue")
def drift_issue(
    repo: RepoOption,
    stack: StackOption,
    refresh_code: Annotated[int, typer.Option(help="Exit code of `pulumi refresh --preview-only --expect-no-changes`.")],
    refresh_output: Annotated[Path, typer.Option(help="Its output.")],
    runtime_code: Annotated[int, typer.Option(help="Exit code of `cachelayer drift`.")],
    runtime_output: Annotated[Path, typer.Option(help="Its output.")],
    run_url: Annotated[str, typer.Option(help="Link to this workflow run.")] = "",
) -> None:
    """Open, comment on or close the stack's `drift` issue. Exit 0 clean, 1 drift, 2 a check failed."""
    results = [
        CheckResult("pulumi refresh", classify_refresh(refresh_code), refresh_code, _read(refresh_output)),
        CheckResult("cachelayer drift", classify_runtime(runtime_code), runtime_code, _read(runtime_output)),
    ]
    try:
        action = sync_drift_issue(repo, stack, results, run_url)
    except GhError as error:
        raise _fail(str(error)) from None
    outcome = overall(results)
    for r in results:
        errors.print(f"{r.name}: {r.outcome} (exit {r.exit_code})", highlight=False)
    errors.print(f"stack {stack}: {outcome}; issue {action.action}"
                 + (f" #{action.number}" if action.number else ""), highlight=False)
    raise typer.Exit(code={"clean": OK, "drift": PROBLEM, "error": CANNOT}[outcome])


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as error:
        return f"(no output: {error})"


def register(app: typer.Typer) -> None:
    app.command()(render)
    app.add_typer(delivery_app, name="delivery")
