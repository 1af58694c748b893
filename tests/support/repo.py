"""The repository the tests run from."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
