"""The one error type for bad stack settings."""


class SettingsError(ValueError):
    """A stack setting is wrong. The message names the stack key and how to fix it."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"stack setting '{key}': {problem}. Fix: {fix}")
