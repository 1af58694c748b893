"""`cachelayer render` and `cachelayer delivery ...`: the commands the GitHub workflows run
(docs/delivery.md). Exit codes: common.ExitCode (0 ok or clean, 1 drift or a problem, 2 could not)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cachelayer.cli.common import (
    DEFAULT_STACK,
    ExitCode,
    JsonOption,
    StackOption,
    emit_json,
    errors,
    reported,
)
from cachelayer.errors import UsageError

# The marker is the comment's identity: ops.delivery.RENDER_DIFF_MARKER, repeated here so that
# `--help` does not import ops (a test checks the two agree).
RENDER_DIFF_MARKER = "<!-- cachelayer:render-diff -->"

delivery_app = typer.Typer(help="What the CI workflows run.\n\nThe rendered-file diff, drift issues, PR comments.",
                           no_args_is_help=True, rich_markup_mode=None)

RepoOption = Annotated[str, typer.Option(metavar="OWNER/NAME", help="The GitHub repository.")]


def register(app: typer.Typer) -> None:
    app.command()(render)
    app.add_typer(delivery_app, name="delivery")


def render(
    stack: StackOption = DEFAULT_STACK,
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="DIR",
        help="Directory to write into: new, empty, or a previous render (whose files are replaced).")
                   ] = Path("rendered"),
    as_json: JsonOption = False,
) -> None:
    """Write the files the stack ships, secrets masked.

    Every file and script the stack ships to its nodes and hosts, secrets as placeholders.
    """
    from cachelayer.config.settings import load_settings
    from cachelayer.config.stack_file import read_stack_config
    from cachelayer.plan.topology import build_topology
    from cachelayer.render.files import mask_hashes, placeholder_passwords, rendered_files, write_tree

    with reported(as_json):
        settings = load_settings(read_stack_config(stack), stack)
    passwords = placeholder_passwords()
    files = mask_hashes(rendered_files(settings, build_topology(settings), passwords), passwords)
    with reported(as_json):
        write_tree(files, out)
    if as_json:
        emit_json({"command": "render", "ok": True, "stack": stack, "out": str(out), "files": sorted(files)})
        return
    errors.print(f"{len(files)} files of stack {stack} in {out}", highlight=False)


@delivery_app.command("render-diff")
def render_diff(
    base: Annotated[Path, typer.Option(metavar="DIR", help="Renderings of the base branch, one directory per stack.")],
    head: Annotated[Path, typer.Option(metavar="DIR", help="Renderings of the pull request, one directory per stack.")],
    stacks: Annotated[list[str], typer.Option("--stack", "-s", metavar="NAME", help="Stacks to compare (repeat).")],
    out: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default=False, help="Write the markdown here instead of stdout.")] = None,
) -> None:
    """The pull-request comment of rendered-file changes.

    For each stack, what changes in the files the servers receive.
    """
    from cachelayer.ops.delivery import read_tree, render_diff_markdown

    markdown = render_diff_markdown({s: (read_tree(base / s), read_tree(head / s)) for s in stacks})
    if out is None:
        print(markdown, end="")
    else:
        out.write_text(markdown)


@delivery_app.command("pr-comment")
def pr_comment(
    repo: RepoOption,
    pr: Annotated[int, typer.Option(metavar="N", help="Pull-request number.")],
    body_file: Annotated[Path, typer.Option(metavar="FILE", help="Markdown to post.")],
    marker: Annotated[str, typer.Option(metavar="TEXT", help="Hidden marker that finds our earlier comment.")
                      ] = RENDER_DIFF_MARKER,
) -> None:
    """Post the comment, or update the earlier one carrying the same marker."""
    from cachelayer.ops.delivery import upsert_pr_comment

    with reported(code=ExitCode.CANNOT_CHECK):
        try:
            body = body_file.read_text()
        except OSError as error:
            raise UsageError(f"--body-file {body_file}: {error.strerror}") from None
        done = upsert_pr_comment(repo, pr, marker, body)
    errors.print(f"comment {done} on #{pr}", highlight=False)


@delivery_app.command("drift-issue")
def drift_issue(
    repo: RepoOption,
    stack: StackOption,
    refresh_code: Annotated[int, typer.Option(
        metavar="CODE", help="Exit code of `pulumi refresh --preview-only --expect-no-changes`.")],
    refresh_output: Annotated[Path, typer.Option(metavar="FILE", help="Its output.")],
    runtime_code: Annotated[int, typer.Option(metavar="CODE", help="Exit code of `cachelayer drift`.")],
    runtime_output: Annotated[Path, typer.Option(metavar="FILE", help="Its output.")],
    run_url: Annotated[str, typer.Option(metavar="URL", help="Link to this workflow run.")] = "",
) -> None:
    """Open, comment on or close the stack's `drift` issue.

    Exit 0 clean, 1 drift, 2 a check failed.
    """
    from cachelayer.ops.delivery import CheckResult, classify_refresh, classify_runtime, overall, sync_drift_issue

    results = [
        CheckResult("pulumi refresh", classify_refresh(refresh_code), refresh_code, _read(refresh_output)),
        CheckResult("cachelayer drift", classify_runtime(runtime_code), runtime_code, _read(runtime_output)),
    ]
    with reported(code=ExitCode.CANNOT_CHECK):
        action = sync_drift_issue(repo, stack, results, run_url)
    outcome = overall(results)
    for r in results:
        errors.print(f"{r.name}: {r.outcome} (exit {r.exit_code})", highlight=False)
    errors.print(f"stack {stack}: {outcome}; issue {action.action}"
                 + (f" #{action.number}" if action.number else ""), highlight=False)
    raise typer.Exit(code={"clean": ExitCode.OK, "drift": ExitCode.PROBLEM, "error": ExitCode.CANNOT_CHECK}[outcome])


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as error:
        return f"(no output: {error})"
