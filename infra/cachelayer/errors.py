"""The one error type for bad stack settings."""

from typing import Any


class SettingsError(ValueError):
    """A stack setting is wrong. The message names the stack key and how to fix it.

    `suggested`, when set, is a value for `key` that the fix proposes and that loads (tests
    apply it to prove the fix is achievable)."""

    def __init__(self, key: str, problem: str, fix: str, suggested: Any = None) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        self.suggested = suggested
        super().__init__(f"stack setting '{key}': {problem}. Fix: {fix}")
