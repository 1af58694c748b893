"""What the GitHub workflows (.github/workflows/) call besides Pulumi: the rendered-file diff of a
pull request, drift-run classification and the one-issue-per-stack bookkeeping, and a pull-request
comment that is updated in place. GitHub is reached only through the `gh` CLI, so tests put a fake
`gh` on PATH. See docs/delivery.md.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cachelayer.errors import CachelayerError
from cachelayer.render.files import RENDER_MARKER

Outcome = Literal["clean", "drift", "error"]

# `pulumi preview|refresh --expect-no-changes` exits 7 when it found changes (pulumi/pulumi#5144,
# fixed by #22176); older CLIs used 255 for changes and errors alike, so only 7 means drift.
REFRESH_CHANGES_EXIT = 7
# `cachelayer drift`: 0 no drift, 1 drift, 2 could not check (docs/operations.md).
RUNTIME_DRIFT_EXIT = 1

DRIFT_LABEL = "drift"
# GitHub refuses issue and comment bodies above 65,536 characters.
BODY_LIMIT = 65_000
REPORT_LIMIT = 28_000
RENDER_DIFF_MARKER = "<!-- cachelayer:render-diff -->"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class GhError(CachelayerError):
    """`gh` failed: the message holds its stderr."""


def classify_refresh(code: int) -> Outcome:
    if code == 0:
        return "clean"
    return "drift" if code == REFRESH_CHANGES_EXIT else "error"


def classify_runtime(code: int) -> Outcome:
    if code == 0:
        return "clean"
    return "drift" if code == RUNTIME_DRIFT_EXIT else "error"


@dataclass(frozen=True)
class CheckResult:
    name: str  # "pulumi refresh" or "cachelayer drift"
    outcome: Outcome
    exit_code: int
    output: str


def overall(results: Sequence[CheckResult]) -> Outcome:
    """Drift if any check saw drift (its report is worth an issue even if the other failed);
    else error if any could not run; else clean."""
    outcomes = {r.outcome for r in results}
    if "drift" in outcomes:
        return "drift"
    return "error" if "error" in outcomes else "clean"


def clean_output(text: str, limit: int = REPORT_LIMIT) -> str:
    """Without colour codes, and cut from the front (the summary is at the end) to fit an issue."""
    text = _ANSI.sub("", text).replace("```", "`\u200b``")  # a fence inside would end ours
    if len(text) > limit:
        text = f"… ({len(text) - limit} characters cut; the full output is in the run's log)\n" + text[-limit:]
    return text


def issue_title(stack: str) -> str:
    return f"Drift detected on stack {stack}"


def drift_report(stack: str, results: Sequence[CheckResult], run_url: str) -> str:
    """The issue body (and the comment on a later run): every check's outcome and output."""
    lines = [
        f"Scheduled drift check of stack `{stack}`: **{overall(results)}** ([run]({run_url})).",
        "",
        "| check | result | exit code |",
        "|---|---|---|",
    ]
    lines += [f"| `{r.name}` | {r.outcome} | {r.exit_code} |" for r in results]
    for r in results:
        lines += ["", f"### `{r.name}`: {r.outcome}", "", "```", clean_output(r.output).rstrip(), "```"]
    lines += [
        "",
        f"Fix: run `pulumi up --stack {stack}` to bring the servers back to the code, or change the code "
        f"to what is live; `cachelayer drift --stack {stack}` names each difference and its fix. This issue "
        "is closed by the first clean run.",
    ]
    body = "\n".join(lines) + "\n"
    return body if len(body) <= BODY_LIMIT else body[: BODY_LIMIT - 40] + "\n… (cut to GitHub's limit)\n"


Runner = Callable[[Sequence[str], str | None], str]


def run_gh(args: Sequence[str], stdin: str | None = None) -> str:
    """`gh ARGS` with `stdin`; its stdout, or GhError."""
    result = subprocess.run(["gh", *args], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GhError(f"gh {' '.join(args[:3])} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class IssueAction:
    action: Literal["created", "commented", "closed", "none"]
    number: int | None


def open_drift_issue(repo: str, stack: str, gh: Runner = run_gh) -> int | None:
    """The open drift issue of this stack, if any: labelled `drift` and titled for the stack.
    The oldest wins if someone opened two by hand, so runs keep commenting on the same one."""
    listed = gh(
        ["issue", "list", "--repo", repo, "--label", DRIFT_LABEL, "--state", "open", "--limit", "100",
         "--json", "number,title"],
        None,
    )
    numbers = [int(i["number"]) for i in json.loads(listed or "[]") if i.get("title") == issue_title(stack)]
    return min(numbers) if numbers else None


def sync_drift_issue(
    repo: str, stack: str, results: Sequence[CheckResult], run_url: str, gh: Runner = run_gh
) -> IssueAction:
    """One issue per stack: open it on drift (or comment on the open one), close it when clean.
    A run that could not check leaves the issue as it is: an error is not evidence either way."""
    outcome = overall(results)
    existing = open_drift_issue(repo, stack, gh)
    if outcome == "drift":
        body = drift_report(stack, results, run_url)
        if existing is not None:
            gh(["issue", "comment", str(existing), "--repo", repo, "--body-file", "-"], body)
            return IssueAction("commented", existing)
        # --force: create the label, or leave it as it is when it exists.
        gh(["label", "create", DRIFT_LABEL, "--repo", repo, "--color", "d93f0b", "--force",
            "--description", "A scheduled run found the servers differ from the code"], None)
        url = gh(["issue", "create", "--repo", repo, "--title", issue_title(stack), "--label", DRIFT_LABEL,
                  "--body-file", "-"], body)
        number = url.strip().rsplit("/", 1)[-1]
        return IssueAction("created", int(number) if number.isdigit() else None)
    if outcome == "clean" and existing is not None:
        gh(["issue", "close", str(existing), "--repo", repo, "--comment",
            f"A later drift check of stack `{stack}` is clean ({run_url}): closing."], None)
        return IssueAction("closed", existing)
    return IssueAction("none", existing)


def upsert_pr_comment(repo: str, pr: int, marker: str, body: str, gh: Runner = run_gh) -> Literal["created", "updated"]:
    """Post `body` on the pull request, or edit our earlier comment (found by its hidden marker)
    so each push updates one comment instead of adding another."""
    text = body if marker in body else f"{marker}\n{body}"
    listed = gh(["api", "--paginate", f"repos/{repo}/issues/{pr}/comments", "--jq", ".[] | {id, body}"], None)
    for line in listed.splitlines():
        if not line.strip():
            continue
        comment = json.loads(line)
        if marker in (comment.get("body") or ""):
            gh(["api", "-X", "PATCH", f"repos/{repo}/issues/comments/{comment['id']}", "--input", "-"],
               json.dumps({"body": text}))
            return "updated"
    gh(["api", "-X", "POST", f"repos/{repo}/issues/{pr}/comments", "--input", "-"], json.dumps({"body": text}))
    return "created"


# ------------------------------------------------------------------------- rendered-file diff
def read_tree(root: Path) -> dict[str, str]:
    """Relative path -> text of every rendered file under `root` (empty when it does not exist);
    the render's own marker is not a file the servers receive."""
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != RENDER_MARKER
    }


@dataclass(frozen=True)
class FileChange:
    path: str
    kind: Literal["added", "removed", "changed"]
    diff: str


def tree_changes(base: dict[str, str], head: dict[str, str]) -> list[FileChange]:
    changes = []
    for path in sorted(set(base) | set(head)):
        before, after = base.get(path), head.get(path)
        if before == after:
            continue
        kind: Literal["added", "removed", "changed"] = (
            "added" if before is None else "removed" if after is None else "changed"
        )
        diff = "".join(
            difflib.unified_diff(
                (before or "").splitlines(keepends=True),
                (after or "").splitlines(keepends=True),
                fromfile=f"base/{path}",
                tofile=f"head/{path}",
            )
        )
        changes.append(FileChange(path, kind, diff))
    return changes


def render_diff_markdown(stacks: dict[str, tuple[dict[str, str], dict[str, str]]], limit: int = BODY_LIMIT) -> str:
    """The pull-request comment: per stack, which server files change and how."""
    parts = [RENDER_DIFF_MARKER, "## What changes on the servers (rendered files, secrets as placeholders)", ""]
    for stack, (base, head) in stacks.items():
        changes = tree_changes(base, head)
        if not base:
            parts.append(f"### `{stack}`: no rendering of the base branch to compare with ({len(head)} files now)")
            continue
        if not changes:
            parts.append(f"### `{stack}`: no change in the {len(head)} rendered files")
            continue
        counts = {k: sum(1 for c in changes if c.kind == k) for k in ("changed", "added", "removed")}
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        parts += [f"### `{stack}`: {summary}", ""]
        parts += [f"- {c.kind}: `{c.path}`" for c in changes]
        for change in changes:
            parts += ["", "<details><summary><code>" + change.path + "</code></summary>", "",
                      "```diff", change.diff.replace("```", "`\u200b``").rstrip(), "```", "", "</details>"]
        parts.append("")
    text = "\n".join(parts) + "\n"
    if len(text) > limit:
        text = text[: limit - 120] + "\n```\n\n… cut to GitHub's comment limit: run `cachelayer render` on both branches.\n"
    return text
