"""Plain Pulumi mocks for component tests that build a component directly (not the whole
program: that is support/program_harness.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import pulumi
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks


class RecordingMocks(Mocks):
    """Records every resource registration; outputs echo the inputs."""

    def __init__(self) -> None:
        self.resources: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


F = TypeVar("F", bound=Callable[..., Any])


def pulumi_test(fn: F) -> F:
    """`pulumi.runtime.test` (awaits the returned Output), typed for mypy --strict."""
    runtime_test: Callable[[F], Any] = pulumi.runtime.test  # untyped in the SDK
    return cast(F, runtime_test(fn))
