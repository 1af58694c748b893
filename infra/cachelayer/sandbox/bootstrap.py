"""The program's bootstrap script (form the cluster, or check the sentinels), run exactly as the
program runs it but without `docker exec`: `sh -s` with the script on stdin and the admin
password in REDISCLI_AUTH."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Topology
from cachelayer.render.nodes import render_bootstrap_script
from cachelayer.sandbox.errors import SandboxError

BOOTSTRAP_FILE = "bootstrap.sh"


def bootstrap_script(settings: Settings, topology: Topology, tls_dir: Path | None, wait_seconds: int) -> str:
    return render_bootstrap_script(settings, topology, str(tls_dir) if tls_dir else "", wait_seconds=wait_seconds)


def run_bootstrap(script: str, argv_prefix: Sequence[str], admin_password: str, limit: int) -> str:
    """Its output; a SandboxError with the output's end when it fails or runs past `limit` s."""
    try:
        result = subprocess.run(
            [*argv_prefix, "sh", "-s"],
            input=script,
            text=True,
            capture_output=True,
            env={**os.environ, "REDISCLI_AUTH": admin_password},
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        output = _text(expired.stdout) + _text(expired.stderr)
        raise SandboxError(
            f"the bootstrap script did not finish within {limit} s; its output so far:\n{output[-3000:]}"
        ) from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SandboxError(f"the bootstrap script failed (exit {result.returncode}):\n{output[-3000:]}")
    return output


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")
