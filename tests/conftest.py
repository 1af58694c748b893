"""Shared fixtures: each stack's program run once under mocks per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cachelayer.stack_file import PROJECT_ROOT
from program_harness import ProgramRun, run_program

STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in PROJECT_ROOT.glob("Pulumi.*.yaml"))
_runs: dict[str, ProgramRun] = {}


def stack_run(stack: str) -> ProgramRun:
    """The program's run for a stack file in the repo, loaded once and shared."""
    if stack not in _runs:
        _runs[stack] = run_program(stack)
    return _runs[stack]


@pytest.fixture(params=STACKS)
def any_stack_run(request: pytest.FixtureRequest) -> ProgramRun:
    return stack_run(request.param)


@pytest.fixture
def dev_run() -> ProgramRun:
    return stack_run("dev")


@pytest.fixture
def program() -> Callable[..., ProgramRun]:
    """Run the program with overrides (not cached)."""
    return run_program


@pytest.fixture
def repo_root() -> Path:
    return PROJECT_ROOT
