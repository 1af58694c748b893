"""The type checker, as configured for this repo, rejects a misspelt provider argument key.

At runtime an unknown key in a provider's input dict reaches the provider silently; the
`*ArgsDict` TypedDicts plus mypy make it an error before `pulumi up`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.repo import REPO_ROOT

CASES = {
    "docker": ("from pulumi_docker import ContainerPortArgsDict", "ContainerPortArgsDict", '"internal": 7000, "{key}": 7000', "external"),
    "cloudflare": (
        "from pulumi_cloudflare import RulesetRuleArgsDict",
        "RulesetRuleArgsDict",
        '"expression": "true", "action": "set_cache_settings", "{key}": "static"',
        "description",
    ),
}


def mypy(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "snippet.py"
    path.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO_ROOT / "pyproject.toml"), str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def snippet(case: str, key: str) -> str:
    imports, type_name, body, _ = CASES[case]
    return f"{imports}\n\nvalue: {type_name} = {{{body.format(key=key)}}}\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_misspelt_key_is_a_type_error(case: str, tmp_path: Path) -> None:
    right = CASES[case][3]
    misspelt = right[:-1]
    result = mypy(snippet(case, misspelt), tmp_path)
    assert result.returncode == 1 and f'Extra key "{misspelt}"' in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_correct_key_passes(case: str, tmp_path: Path) -> None:
    result = mypy(snippet(case, CASES[case][3]), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
