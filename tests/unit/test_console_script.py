"""The `cachelayer` command that `pip install -e .` installs, and the hints that name it."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from support.repo import REPO_ROOT


def test_console_script_points_at_main_and_runs() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    module, _, function = project["project"]["scripts"]["cachelayer"].partition(":")
    entry = getattr(importlib.import_module(module), function)
    assert entry(["--help"]) == 0
    assert project["tool"]["setuptools"]["package-dir"] == {"": "infra"}


def test_python_dash_m_still_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cachelayer", "sandbox", "--help"],
        cwd=REPO_ROOT / "infra", capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: cachelayer sandbox" in " ".join(result.stdout.split())


def test_a_non_editable_install_renders_and_runs_without_the_checkout(tmp_path: Path) -> None:
    """`pip install .` into a fresh venv (dependencies borrowed from ours, not the checkout's
    code): the wheel carries the templates, and the command finds the project from the current
    directory, as the pulumi CLI does."""
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    site = next((fresh / "lib").glob("python3*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "jinja2").is_dir())
    (site / "dependencies.pth").write_text(f"{ours}\n")
    # Built from a copy: a build in place would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", source)
    for folder in ("infra", "templates"):
        shutil.copytree(REPO_ROOT / folder, source / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "-q", "--no-deps", str(source)],
        capture_output=True, text=True, check=False,
    )
    assert install.returncode == 0, install.stderr
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        (project / name).write_text((REPO_ROOT / name).read_text())
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def cachelayer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(fresh / "bin" / "cachelayer"), *args], cwd=project, env=environment,
                              capture_output=True, text=True, check=False)

    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import cachelayer; print(cachelayer.__file__)"],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site), f"imported the checkout, not the wheel: {where.stdout}"
    assert cachelayer("--help").returncode == 0
    rendered = cachelayer("render", "--stack", "dev", "--out", "rendered")
    assert rendered.returncode == 0, rendered.stderr
    confs = sorted((project / "rendered").rglob("redis-700?.conf"))
    assert len(confs) == 6, rendered.stdout
    assert "maxmemory-policy allkeys-lru" in confs[0].read_text()


def test_no_hint_uses_pythonpath() -> None:
    stale: list[str] = []
    for folder in ("docs", "scripts", "infra", "benchmarks", "templates"):
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".md", ".sh", ".py", ".j2", ""}:
                text = path.read_text(errors="replace")
                if "PYTHONPATH=infra" in text:
                    stale.append(str(path.relative_to(REPO_ROOT)))
    assert stale == [], f"use venv/bin/cachelayer instead of PYTHONPATH=infra in {stale}"


def test_setup_installs_the_project_after_the_requirements() -> None:
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    assert setup.index("--require-hashes -r requirements.lock") < setup.index("install -q --disable-pip-version-check -e cache_library -e .")
    assert Path(REPO_ROOT / "scripts" / "up.sh").read_text().count("venv/bin/cachelayer sandbox up") == 1


def test_the_lock_pins_every_requirement_within_its_range_and_is_what_the_venv_has() -> None:
    """requirements.lock is requirements.txt resolved: a requirement edited without refreshing
    the lock fails here, and so does a venv installed from something else."""
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            pinned[canonicalize_name(name)] = rest.split()[0].split(";")[0]
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        text = line.split("#")[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in requirements.lock: refresh it (scripts/setup.sh says how)"
        assert requirement.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} vs {requirement}"
        assert version(requirement.name) == pinned[name], f"the venv has {requirement.name} {version(requirement.name)}"
