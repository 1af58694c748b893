"""The package's one exception root. Every error an operator can cause or meet derives from
`CachelayerError`, so a command reports it in one line and exits with its code instead of a
traceback; anything else is a bug and keeps its traceback."""

from typing import Any


class CachelayerError(Exception):
    """An error with a message meant for the operator: what is wrong and what to do."""


class UsageError(CachelayerError):
    """The command was asked for something it cannot do as given (a path, an option, a project)."""


class SettingsError(CachelayerError, ValueError):
    """A stack setting is wrong. The message names the stack key and how to fix it.

    `suggested`, when set, is a value for `key` that the fix proposes and that loads (tests
    apply it to prove the fix is achievable)."""

    def __init__(self, key: str, problem: str, fix: str, suggested: Any = None) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        self.suggested = suggested
        super().__init__(f"stack setting '{key}': {problem}. Fix: {fix}")
