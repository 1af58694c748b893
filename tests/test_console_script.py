"""The `cachelayer` command that `pip install -e .` installs, and the hints that name it."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

from cachelayer import render
from cachelayer.stack_file import PROJECT_ROOT


def test_console_script_points_at_main_and_runs() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    module, _, function = project["project"]["scripts"]["cachelayer"].partition(":")
    entry = getattr(importlib.import_module(module), function)
    assert entry(["--help"]) == 0
    assert project["tool"]["setuptools"]["package-dir"] == {"": "infra"}


def test_python_dash_m_still_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cachelayer", "sandbox", "--help"],
        cwd=PROJECT_ROOT / "infra", capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: cachelayer sandbox" in " ".join(result.stdout.split())


def test_templates_resolve_from_the_package_location() -> None:
    # An editable install runs the code in place: templates/ sits two levels above the package.
    assert (render.TEMPLATES_DIR / "redis.conf.j2").is_file()


def test_no_hint_uses_pythonpath() -> None:
    stale: list[str] = []
    for folder in ("docs", "scripts", "infra", "benchmarks", "templates"):
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".md", ".sh", ".py", ".j2", ""}:
                text = path.read_text(errors="replace")
                if "PYTHONPATH=infra" in text:
                    stale.append(str(path.relative_to(PROJECT_ROOT)))
    assert stale == [], f"use venv/bin/cachelayer instead of PYTHONPATH=infra in {stale}"


def test_setup_installs_the_project_after_the_requirements() -> None:
    setup = (PROJECT_ROOT / "scripts" / "setup.sh").read_text()
    assert setup.index("-r requirements.txt") < setup.index("install -q --disable-pip-version-check -e .")
    assert Path(PROJECT_ROOT / "scripts" / "up.sh").read_text().count("venv/bin/cachelayer sandbox up") == 1
