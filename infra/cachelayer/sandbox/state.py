"""The sandbox's workdir and its `state.json`: which deployment it holds (stack, config,
placement, TLS directory) and every process started for it (pid, start time, port), so that
`status` and `down` find them again from another command."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachelayer.config.settings import Settings, load_settings
from cachelayer.paths import project_root
from cachelayer.plan.topology import Placement

STATE_FILE = "state.json"


def default_workdir(stack: str) -> Path:
    return project_root() / ".sandbox" / stack


def make_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)


@dataclass(frozen=True)
class ProcessRecord:
    """What `down` needs to recognise a process it started."""

    name: str
    pid: int
    start_time: int  # /proc/<pid>/stat field 22: tells a recycled pid apart
    address: str
    port: int
    sentinel: bool


@dataclass(frozen=True)
class Deployment:
    """What state.json says the workdir's sandbox is, beside its processes."""

    stack: str
    config: dict[str, Any]  # the stack config with the sandbox's overrides: settings are rebuilt from it
    address: str
    placement: Placement
    tls_dir: Path | None

    def settings(self) -> Settings:
        return load_settings(self.config, self.stack)


class StateFile:
    """`<workdir>/state.json`, replaced whole on every write (written to a temporary file first)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / STATE_FILE

    def _read(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        state: dict[str, Any] = json.loads(self.path.read_text())
        return state

    def deployment(self) -> Deployment | None:
        state = self._read()
        if state is None:
            return None
        placement = Placement(
            tuple((h, a) for h, a in state["placement"]["nodes"]),
            tuple((h, a) for h, a in state["placement"]["sentinels"]),
        )
        tls_dir = Path(state["tls_dir"]) if state.get("tls_dir") else None
        return Deployment(state["stack"], state["config"], state["address"], placement, tls_dir)

    def records(self) -> dict[str, ProcessRecord]:
        state = self._read()
        if state is None:
            return {}
        return {name: ProcessRecord(**record) for name, record in state.get("processes", {}).items()}

    def write(self, deployment: Deployment, records: Mapping[str, ProcessRecord]) -> None:
        state = {
            "stack": deployment.stack,
            "config": deployment.config,
            "address": deployment.address,
            "placement": {"nodes": list(deployment.placement.nodes), "sentinels": list(deployment.placement.sentinels)},
            "tls_dir": str(deployment.tls_dir) if deployment.tls_dir else None,
            "processes": {name: record.__dict__ for name, record in records.items()},
        }
        make_workdir(self.workdir)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.path)
