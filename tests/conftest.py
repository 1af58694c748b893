"""Shared fixtures: each stack's program run once under mocks per test session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.program_harness import ProgramRun, run_program
from support.repo import REPO_ROOT

STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in REPO_ROOT.glob("Pulumi.*.yaml"))
_runs: dict[str, ProgramRun] = {}


def stack_run(stack: str) -> ProgramRun:
    """The program's run for a stack file in the repo, loaded once and shared."""
    if stack not in _runs:
        _runs[stack] = run_program(stack)
    return _runs[stack]


@pytest.fixture(autouse=True)
def keep_event_loop() -> Iterator[None]:
    """Pulumi's runtime (the program under mocks, the CDN component, the rehearsal) keeps futures
    on the event loop that was current when it started. `asyncio.run` (the cache library's
    asyncio tests) leaves no current loop behind, and a new one would not be Pulumi's: put the
    one from before the test back."""
    policy = asyncio.get_event_loop_policy()
    try:
        before = policy.get_event_loop()
    except RuntimeError:
        before = None
    yield
    if before is not None and not before.is_closed():
        policy.set_event_loop(before)


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
    return REPO_ROOT
