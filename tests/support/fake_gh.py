"""A stand-in for the GitHub CLI: put `install(dir)` on PATH. Each call is appended to
$FAKE_GH_LOG as JSON ({argv, stdin}); `issue list` and `api ... comments` answer from
$FAKE_GH_STATE (a JSON file: {"issues": [...], "comments": [...]}), and `issue create`
prints a new issue URL."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

SCRIPT = f"""#!{sys.executable}
import json, os, sys
argv = sys.argv[1:]
stdin = sys.stdin.read() if "-" in argv else None
with open(os.environ["FAKE_GH_LOG"], "a") as log:
    log.write(json.dumps({{"argv": argv, "stdin": stdin}}) + "\\n")
state = json.load(open(os.environ["FAKE_GH_STATE"]))
if os.environ.get("FAKE_GH_FAIL") and argv[:2] == os.environ["FAKE_GH_FAIL"].split():
    print("HTTP 403: Resource not accessible by integration", file=sys.stderr)
    sys.exit(1)
if argv[:2] == ["issue", "list"]:
    print(json.dumps(state.get("issues", [])))
elif argv[:2] == ["issue", "create"]:
    print("https://github.com/acme/cachelayer/issues/42")
elif argv[0] == "api" and "--paginate" in argv:
    for comment in state.get("comments", []):
        print(json.dumps(comment))
"""


def install(directory: Path, state: dict[str, object]) -> tuple[Path, Path]:
    """Write the fake `gh` and its state; returns (log file, state file)."""
    gh = directory / "gh"
    gh.write_text(SCRIPT)
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    log, state_file = directory / "gh.log", directory / "gh-state.json"
    log.write_text("")
    state_file.write_text(json.dumps(state))
    return log, state_file


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def environ(directory: Path, log: Path, state: Path) -> dict[str, str]:
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}", "FAKE_GH_LOG": str(log), "FAKE_GH_STATE": str(state)}
