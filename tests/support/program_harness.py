"""Run the Pulumi program under mocks exactly as Pulumi's language host runs it.

The language host calls `pulumi.runtime.run_in_stack(lambda: runpy.run_path(<main dir>,
run_name="__main__"))` with the main directory as the working directory and first on
sys.path. We do the same after setting the stack's config and the mocks, so a program that
imports differently under `pulumi up` fails here too. Every registered resource is recorded
with the inputs the provider would have received (wire names, secrets still wrapped).
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from cachelayer import PROJECT
from cachelayer.config.stack_file import engine_config
from cachelayer.paths import PROJECT_ENV
from support.repo import REPO_ROOT

MAIN_DIR = REPO_ROOT / "infra"
# How the engine wraps a secret value on the wire (and how Mocks.new_resource receives it).
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_MARKER = "1b47061264138c4ac30d75fd1eb44270"

# Secrets a user sets with `pulumi config set --secret`; tests stand in for them.
FAKE_SECRETS = {
    "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nfake-test-key-material-0123456789\n-----END OPENSSH PRIVATE KEY-----\n",
    "cloudflare_api_token": "cf-test-token-0123456789abcdefghijklmnop",
}


def is_secret_value(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARKER


def contains_plain(value: Any, needle: str) -> bool:
    """True when `needle` appears anywhere in `value` outside a secret wrapper."""
    if is_secret_value(value):
        return False
    if isinstance(value, str):
        return needle in value
    if isinstance(value, dict):
        return any(contains_plain(k, needle) or contains_plain(v, needle) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains_plain(v, needle) for v in value)
    return False


def unwrap(value: Any) -> Any:
    """The value with secret wrappers removed (to read a secret file's content in a test)."""
    if is_secret_value(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict[str, Any]
    provider: str | None


@dataclass
class Export:
    value: Any
    secret: bool


@dataclass
class ProgramRun:
    stack: str
    resources: list[Recorded] = field(default_factory=list)
    exports: dict[str, Export] = field(default_factory=dict)
    # Options as the engine receives them, by resource name.
    depends_on: dict[str, list[str]] = field(default_factory=dict)
    ignore_changes: dict[str, list[str]] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    additional_secret_outputs: dict[str, list[str]] = field(default_factory=dict)
    delete_before_replace: dict[str, bool] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    protect: dict[str, bool] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> Recorded:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource; returns the inputs as state plus the few outputs providers compute."""

    def __init__(self, run: ProgramRun) -> None:
        self.run = run

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.run.resources.append(Recorded(args.typ, args.name, dict(args.inputs), args.provider))
        state = dict(args.inputs)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = f"sha256:{args.name}"
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = f"generated-{args.name}-0123456789abcdef"
        if args.typ.startswith("command:"):
            state.setdefault("stdout", "")
            state.setdefault("stderr", "")
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


@contextlib.contextmanager
def _as_language_host() -> Iterator[None]:
    """cwd = main dir, main dir first on sys.path, as under `pulumi up`."""
    cwd, path = os.getcwd(), list(sys.path)
    os.chdir(MAIN_DIR)
    sys.path.insert(0, str(MAIN_DIR))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path


@contextlib.contextmanager
def _project(root: Path) -> Iterator[None]:
    before = os.environ.get(PROJECT_ENV)
    os.environ[PROJECT_ENV] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ[PROJECT_ENV]
        else:
            os.environ[PROJECT_ENV] = before


def run_program(
    stack: str,
    config_overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    root: Path = REPO_ROOT,
    into: ProgramRun | None = None,
    mocks_factory: Callable[[ProgramRun], RecordingMocks] | None = None,
) -> ProgramRun:
    """Load the program for `stack` (its Pulumi.<stack>.yaml) under mocks and record what it declares.

    config_overrides replace whole keys (`cachelayer:redis`, ...); secrets are set as secret keys.
    `into` receives the records, so a test can look at them when the program stops with an error.
    `mocks_factory` makes the mocks (a subclass of RecordingMocks that computes more outputs).
    """
    run = into if into is not None else ProgramRun(stack=stack)
    config = engine_config(stack, root)
    for key, value in (config_overrides or {}).items():
        config[f"{PROJECT}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    secret_values = dict(FAKE_SECRETS if (secrets is None) else secrets)
    for key, value in secret_values.items():
        config[f"{PROJECT}:{key}"] = value
    run.secrets = secret_values

    # Order matters: config and mocks before any resource exists (see DESIGN.md).
    runtime_settings.reset_options(project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(config, [f"{PROJECT}:{key}" for key in secret_values])
    mocks = (mocks_factory or RecordingMocks)(run)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks, run))
    runtime_settings.ROOT.set(None)  # run_in_stack makes the root stack, as under the language host

    stacks: list[Any] = []

    def program() -> None:
        runpy.run_path(str(MAIN_DIR), run_name="__main__")
        stacks.append(runtime_settings.get_root_resource())

    # The program reads its sibling stack files from the project (config/siblings.py): this one.
    with _as_language_host(), _project(root):
        _sync_await(run_in_stack(program))

    root_stack = stacks[0]
    outputs: dict[str, Any] = getattr(root_stack, "outputs", {})
    for name, value in outputs.items():
        output = pulumi.Output.from_input(value)
        run.exports[name] = Export(_sync_await(output.future()), bool(_sync_await(output.is_secret())))
    return run


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class RecordingMonitor(MockMonitor):
    """Also records the resource options the engine receives: dependencies, parent, ignore_changes."""

    def __init__(self, mocks: pulumi.runtime.Mocks, run: ProgramRun) -> None:
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        self.run.depends_on[request.name] = sorted(urn_name(u) for u in request.dependencies)
        self.run.ignore_changes[request.name] = list(request.ignoreChanges)
        self.run.parents[request.name] = urn_name(request.parent) if request.parent else None
        self.run.additional_secret_outputs[request.name] = list(request.additionalSecretOutputs)
        self.run.delete_before_replace[request.name] = bool(request.deleteBeforeReplace)
        self.run.protect[request.name] = bool(request.protect)
        return super().RegisterResource(request)
