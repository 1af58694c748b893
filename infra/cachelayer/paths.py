"""Where the Pulumi project an operator command works on is. Nothing assumes the checkout around
the package: a non-editable `pip install .` finds the project from the current directory (its
templates are package data, loaded by render/nodes.py's PackageLoader)."""

from __future__ import annotations

import os
from pathlib import Path

from cachelayer.errors import UsageError

PROJECT_ENV = "CACHELAYER_PROJECT"


def project_root(start: Path | None = None) -> Path:
    """The Pulumi project (the directory holding Pulumi.yaml and the stack files): $CACHELAYER_PROJECT,
    else the nearest directory holding Pulumi.yaml from the current directory upwards, as the
    pulumi CLI finds it."""
    given = os.environ.get(PROJECT_ENV)
    if given:
        root = Path(given).resolve()
        if not (root / "Pulumi.yaml").is_file():
            raise UsageError(f"{PROJECT_ENV}={given} holds no Pulumi.yaml: point it at the cachelayer project")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise UsageError(
        f"no Pulumi.yaml in {here} or above: run cachelayer from the project's directory or set {PROJECT_ENV}"
    )
