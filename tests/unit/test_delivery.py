"""The scripts the workflows call: drift exit codes, one drift issue per stack (fake `gh`),
the pull-request comment that is updated in place, the rendered-file diff."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cachelayer.cli.app import main
from cachelayer.ops.delivery import (
    RENDER_DIFF_MARKER,
    CheckResult,
    classify_refresh,
    classify_runtime,
    clean_output,
    issue_title,
    overall,
    read_tree,
    render_diff_markdown,
    tree_changes,
)
from support.fake_gh import calls, environ, install

REPO = "acme/cachelayer"
Gh = Callable[[dict[str, Any]], Path]  # the fixture: installs the fake gh with a state, returns its log


@pytest.mark.parametrize(("code", "outcome"), [(0, "clean"), (7, "drift"), (255, "error"), (1, "error"), (2, "error")])
def test_refresh_exit_codes(code: int, outcome: str) -> None:
    assert classify_refresh(code) == outcome


@pytest.mark.parametrize(("code", "outcome"), [(0, "clean"), (1, "drift"), (2, "error"), (7, "error")])
def test_runtime_drift_exit_codes(code: int, outcome: str) -> None:
    assert classify_runtime(code) == outcome


def test_drift_beats_error_and_error_beats_clean() -> None:
    def r(outcome: Any) -> CheckResult:
        return CheckResult("x", outcome, 0, "")

    assert overall([r("error"), r("drift")]) == "drift"
    assert overall([r("clean"), r("error")]) == "error"
    assert overall([r("clean"), r("clean")]) == "clean"


def test_report_output_loses_colours_and_fences_and_keeps_the_end() -> None:
    text = clean_output("\x1b[31mred\x1b[0m ```x``` " + "a" * 100 + "SUMMARY", limit=50)
    assert "\x1b" not in text and "```" not in text.split("\n", 1)[1]
    assert text.endswith("SUMMARY") and "characters cut" in text


@pytest.fixture
def gh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gh]:
    """Install the fake gh with a given state; returns a function that runs drift-issue."""

    def setup(state: dict[str, Any]) -> Path:
        log, state_file = install(tmp_path, state)
        for key, value in environ(tmp_path, log, state_file).items():
            monkeypatch.setenv(key, value)
        return log

    yield setup


def drift_issue(tmp_path: Path, refresh: int, runtime: int, stack: str = "prod") -> int:
    (tmp_path / "refresh.txt").write_text("~ cloudflare:index/ruleset:Ruleset cdn-cache-rules update [diff: ~rules]\n")
    (tmp_path / "runtime.txt").write_text("redis-7000 config maxmemory expected 2147483648 live 1073741824\n")
    return main([
        "delivery", "drift-issue", "--repo", REPO, "--stack", stack,
        "--refresh-code", str(refresh), "--refresh-output", str(tmp_path / "refresh.txt"),
        "--runtime-code", str(runtime), "--runtime-output", str(tmp_path / "runtime.txt"),
        "--run-url", "https://github.com/acme/cachelayer/actions/runs/1",
    ])


def commands(log: Path) -> list[list[str]]:
    return [c["argv"][:2] for c in calls(log)]


def test_first_drift_opens_one_labelled_issue_with_both_reports(tmp_path: Path, gh: Gh) -> None:
    log = gh({"issues": [{"number": 3, "title": issue_title("dev")}]})  # another stack's issue
    assert drift_issue(tmp_path, refresh=7, runtime=1) == 1
    assert commands(log) == [["issue", "list"], ["label", "create"], ["issue", "create"]]
    create = calls(log)[-1]
    argv = create["argv"]
    assert argv[argv.index("--title") + 1] == "Drift detected on stack prod"
    assert argv[argv.index("--label") + 1] == "drift"
    body = create["stdin"]
    assert "cdn-cache-rules update" in body and "maxmemory expected 2147483648" in body
    assert "| `pulumi refresh` | drift | 7 |" in body and "| `cachelayer drift` | drift | 1 |" in body


def test_drift_again_comments_on_the_open_issue_instead_of_a_second(tmp_path: Path, gh: Gh) -> None:
    log = gh({"issues": [{"number": 12, "title": issue_title("prod")}, {"number": 9, "title": issue_title("prod")}]})
    assert drift_issue(tmp_path, refresh=0, runtime=1) == 1
    assert commands(log) == [["issue", "list"], ["issue", "comment"]]
    assert calls(log)[-1]["argv"][2] == "9", "the oldest open issue of the stack"
    assert "| `pulumi refresh` | clean | 0 |" in calls(log)[-1]["stdin"]


def test_clean_run_closes_the_open_issue(tmp_path: Path, gh: Gh) -> None:
    log = gh({"issues": [{"number": 12, "title": issue_title("prod")}]})
    assert drift_issue(tmp_path, refresh=0, runtime=0) == 0
    assert commands(log) == [["issue", "list"], ["issue", "close"]]
    assert calls(log)[-1]["argv"][2] == "12"


def test_clean_run_without_an_issue_touches_nothing(tmp_path: Path, gh: Gh) -> None:
    log = gh({"issues": []})
    assert drift_issue(tmp_path, refresh=0, runtime=0) == 0
    assert commands(log) == [["issue", "list"]]


def test_error_is_not_drift_and_leaves_the_issue_alone(tmp_path: Path, gh: Gh) -> None:
    log = gh({"issues": [{"number": 12, "title": issue_title("prod")}]})
    assert drift_issue(tmp_path, refresh=255, runtime=0) == 2
    assert commands(log) == [["issue", "list"]], "neither closed (not proven clean) nor commented"


def test_gh_failure_is_exit_2(tmp_path: Path, gh: Gh, monkeypatch: pytest.MonkeyPatch) -> None:
    gh({"issues": []})
    monkeypatch.setenv("FAKE_GH_FAIL", "issue create")
    assert drift_issue(tmp_path, refresh=7, runtime=0) == 2


def test_pr_comment_is_created_then_updated_in_place(tmp_path: Path, gh: Gh) -> None:
    body = tmp_path / "body.md"
    body.write_text(f"{RENDER_DIFF_MARKER}\nnew text\n")
    log = gh({"comments": [{"id": 5, "body": "an unrelated review comment"}]})
    assert main(["delivery", "pr-comment", "--repo", REPO, "--pr", "8", "--body-file", str(body)]) == 0
    assert calls(log)[-1]["argv"][:4] == ["api", "-X", "POST", f"repos/{REPO}/issues/8/comments"]

    log = gh({"comments": [{"id": 5, "body": "unrelated"}, {"id": 77, "body": f"{RENDER_DIFF_MARKER}\nold"}]})
    assert main(["delivery", "pr-comment", "--repo", REPO, "--pr", "8", "--body-file", str(body)]) == 0
    last = calls(log)[-1]
    assert last["argv"][:4] == ["api", "-X", "PATCH", f"repos/{REPO}/issues/comments/77"]
    assert "new text" in last["stdin"]
    assert len(calls(log)) == 2, "one list, one edit: no second comment"


def test_tree_changes_lists_added_removed_changed() -> None:
    changes = tree_changes({"a": "x\n", "b": "same\n", "c": "gone\n"}, {"a": "y\n", "b": "same\n", "d": "new\n"})
    assert [(c.path, c.kind) for c in changes] == [("a", "changed"), ("c", "removed"), ("d", "added")]
    assert "-x\n+y\n" in changes[0].diff


def test_render_diff_of_a_changed_setting_shows_the_directive_on_every_node(tmp_path: Path) -> None:
    """Base and head rendered by the command itself; the head's stack file sets another maxmemory."""
    base, head = tmp_path / "base", tmp_path / "head"
    assert main(["render", "--stack", "dev", "--out", str(base / "dev")]) == 0
    assert main(["render", "--stack", "dev", "--out", str(head / "dev")]) == 0
    for conf in (head / "dev").rglob("*.conf"):
        conf.write_text(conf.read_text().replace("maxmemory 2gb", "maxmemory 3gb"))
    out = tmp_path / "comment.md"
    assert main(["delivery", "render-diff", "--base", str(base), "--head", str(head), "--stack", "dev",
                 "--stack", "prod", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(RENDER_DIFF_MARKER)
    assert "### `dev`: 6 changed" in text, text[:500]
    assert text.count("-maxmemory 2gb\n+maxmemory 3gb") == 6
    assert "### `prod`: no rendering of the base branch" in text


def test_render_diff_says_when_nothing_changes(tmp_path: Path) -> None:
    tree = {"hosts/a/etc/redis/redis-7000.conf": "port 7000\n"}
    text = render_diff_markdown({"prod": (tree, dict(tree))})
    assert "### `prod`: no change in the 1 rendered files" in text and "```diff" not in text


def test_render_diff_is_cut_to_githubs_limit() -> None:
    base = {f"f{i}": "a\n" * 200 for i in range(50)}
    head = {f"f{i}": "b\n" * 200 for i in range(50)}
    text = render_diff_markdown({"dev": (base, head)}, limit=5_000)
    assert len(text) <= 5_000 and "cut to GitHub's comment limit" in text


def test_render_out_refuses_a_directory_it_did_not_write_and_deletes_nothing(tmp_path: Path, capsys: Any) -> None:
    """`--out .` from a checkout must not empty the checkout (it did: the directory was removed)."""
    project = tmp_path / "checkout"
    project.mkdir()
    keep = project / "notes.md"
    keep.write_text("mine")
    assert main(["render", "--stack", "dev", "--out", str(project)]) == 64
    assert keep.read_text() == "mine" and sorted(p.name for p in project.iterdir()) == ["notes.md"]
    assert "holds files that no render wrote" in capsys.readouterr().err
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(["render", "--stack", "dev", "--out", str(a_file)]) == 64  # was a traceback
    assert a_file.read_text() == "x"


def test_render_again_replaces_only_what_the_last_render_wrote(tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    assert main(["render", "--stack", "prod", "--out", str(out)]) == 0
    prod_only = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.service"))
    assert prod_only, "the prod render ships systemd units"
    (out / "operator-notes.txt").write_text("kept")  # not the render's: never deleted
    assert main(["render", "--stack", "dev", "--out", str(out)]) == 0
    assert not list(out.rglob("*.service")), "a file the stack no longer ships lingered"
    assert (out / "operator-notes.txt").read_text() == "kept"
    assert read_tree(out)["operator-notes.txt"] == "kept"
    assert ".cachelayer-render" not in read_tree(out)
