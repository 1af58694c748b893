"""The real Pulumi engine for tests: the CLI, the Python language host and the provider plugins
that scripts/engine.sh builds from their Go modules (at the venv's SDK versions), driven through
the Automation API (`pulumi.automation`, what Pulumi recommends for integration tests).

Every stack lives in a throwaway copy of the project (its own Pulumi.yaml naming this checkout's
venv, `infra/` and `policy/` linked from the checkout, its own stack file), with a local
backend (`file://`), a generated passphrase, its own PULUMI_HOME and no automatic plugin
download: nothing reaches Pulumi Cloud or the network, and nothing is written into the checkout.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from support.repo import REPO_ROOT

PROJECT = "cachelayer"


class EngineUnavailable(RuntimeError):
    """scripts/engine.sh could not build what the engine needs: its own one-line reason."""


@cache
def engine_bin() -> Path:
    """The directory holding `pulumi`, `pulumi-language-python` and the plugins (built once per
    version set, cached outside the checkout; a warm call takes a moment)."""
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "engine.sh"), str(REPO_ROOT / "venv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineUnavailable(f"scripts/engine.sh failed ({result.returncode}): {reason}")
    return Path(lines[-1])


def has_plugin(name: str) -> bool:
    return (engine_bin() / f"pulumi-resource-{name}").is_file()


@dataclass
class Steps:
    """What one `up` (or `destroy`) did, resource by resource, from the engine's own events."""

    # resource name -> the engine's steps for it, in order: create, update, same, delete,
    # create-replacement / replace / delete-replaced (a replacement), read, refresh, ...
    ops: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    stdout: str = ""

    def ran(self, *ops: str) -> list[str]:
        """Names of the resources with a step among `ops` (default: any step that changes something)."""
        return sorted(name for name, steps in self.ops.items() if any(self._wanted(op, ops) for op in steps))

    @staticmethod
    def _wanted(op: str, ops: tuple[str, ...]) -> bool:
        return op in ops if ops else op not in ("same", "read", "refresh")

    @property
    def changed(self) -> list[tuple[str, list[str]]]:
        return [(name, self.ops[name]) for name in self.ran()]


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine marks a secret value in state


def _plain(value: Any) -> Any:
    """Exported state with `--show-secrets`: each secret is {SIG: ..., "plaintext": <JSON>}."""
    if isinstance(value, dict):
        if SECRET_SIG in value and "plaintext" in value:
            return _plain(json.loads(value["plaintext"]))
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class EngineStack:
    """One stack of a throwaway project, under the real engine."""

    def __init__(self, workdir: Path, stack: str, config: dict[str, Any], secret_config: dict[str, str]) -> None:
        self.workdir = workdir
        self.name = stack
        self.project = workdir / "project"
        self.project.mkdir(parents=True)
        for linked in ("infra", "policy"):
            (self.project / linked).symlink_to(REPO_ROOT / linked)
        definition = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
        definition["runtime"]["options"]["virtualenv"] = str(REPO_ROOT / "venv")
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
        (workdir / "state").mkdir()
        bin_dir = engine_bin()
        self.environment = {
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PULUMI_HOME": str(workdir / "home"),
            "PULUMI_BACKEND_URL": f"file://{workdir / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
        }
        options = auto.LocalWorkspaceOptions(
            work_dir=str(self.project),
            pulumi_home=self.environment["PULUMI_HOME"],
            env_vars=self.environment,
            pulumi_command=auto.PulumiCommand(root=str(bin_dir.parent), skip_version_check=True),
        )
        self.stack = auto.create_stack(stack, work_dir=str(self.project), opts=options)
        self.configure(config, secret_config)

    @property
    def stack_file(self) -> Path:
        return self.project / f"Pulumi.{self.name}.yaml"

    def configure(self, config: dict[str, Any], secret_config: dict[str, str] | None = None) -> None:
        """The stack file as an operator writes it (`cachelayer:<key>` objects), secrets set
        through the engine so they are stored encrypted with the stack's passphrase."""
        document = yaml.safe_load(self.stack_file.read_text()) or {}
        kept = {k: v for k, v in (document.get("config") or {}).items() if isinstance(v, dict) and "secure" in v}
        document["config"] = {**kept, **{f"{PROJECT}:{key}": value for key, value in config.items()}}
        self.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
        for key, value in (secret_config or {}).items():
            self.stack.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value=value, secret=True))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The pulumi CLI itself, in the project, for what the Automation API does not expose."""
        result = subprocess.run(
            [str(engine_bin() / "pulumi"), *args, "--stack", self.name, "--non-interactive"],
            cwd=self.project, env={**os.environ, **self.environment}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def _collect(self) -> tuple[Steps, Any]:
        steps = Steps()

        def on_event(event: auto.EngineEvent) -> None:
            if event.res_outputs_event is not None:
                metadata = event.res_outputs_event.metadata
                steps.ops.setdefault(_name(metadata.urn), []).append(metadata.op.value)
            elif event.res_op_failed_event is not None:
                metadata = event.res_op_failed_event.metadata
                steps.ops.setdefault(_name(metadata.urn), []).append(f"failed-{metadata.op.value}")

        return steps, on_event

    def up(self, replace: Iterable[str] = (), **kwargs: Any) -> Steps:
        steps, on_event = self._collect()
        started = time.monotonic()
        urns = [self.urn(name) for name in replace]
        result = self.stack.up(on_event=on_event, color="never", replace=urns or None, **kwargs)
        steps.seconds = time.monotonic() - started
        steps.stdout = result.stdout
        return steps

    def preview(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("preview", "--diff", *args, check=False)

    def refresh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("refresh", "--yes", *args, check=False)

    def destroy(self) -> Steps:
        steps, on_event = self._collect()
        started = time.monotonic()
        result = self.stack.destroy(on_event=on_event, color="never")
        steps.seconds = time.monotonic() - started
        steps.stdout = result.stdout
        return steps

    def outputs(self) -> dict[str, Any]:
        return {key: value.value for key, value in self.stack.outputs().items()}

    def resources(self) -> dict[str, dict[str, Any]]:
        """The state's resources by name (secrets decrypted: for the test's eyes only)."""
        exported = self.cli("stack", "export", "--show-secrets").stdout
        deployment = _plain(json.loads(exported)["deployment"])
        return {_name(r["urn"]): r for r in deployment.get("resources", [])}

    def exported_without_secrets(self) -> str:
        return self.cli("stack", "export").stdout

    def urn(self, name: str) -> str:
        for resource in self.resources().values():
            if _name(resource["urn"]) == name:
                return str(resource["urn"])
        raise KeyError(f"no resource named {name} in stack {self.name}")

    def remove(self) -> None:
        """Forget the stack (its resources must be destroyed first, or be throwaway hosts)."""
        self.stack.workspace.remove_stack(self.name, force=True)
