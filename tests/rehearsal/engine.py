"""A test harness that stands in for the Pulumi engine and the pulumi-command provider.

It is NOT the engine: it replays the `command:remote:Command` resources a program run
declared (tests/rehearsal/program.py) against real SSH servers, with the semantics of
pulumi-command 1.x (provider/pkg/provider/remote in pulumi/pulumi-command) and the engine's
step rules, so that what a `pulumi up` would run on the servers really runs:

- a resource not in the state is created: its `create` runs;
- a change of `triggers` (replaceOnChanges) replaces it: create-before-delete (the old one's
  `delete` runs after every other step), or delete-then-create with deleteBeforeReplace;
- any other input change updates it: `update` runs, or `create` when there is no `update`;
- unchanged inputs run nothing; a resource no longer declared is deleted (`delete`, if set),
  dependents first, after every other step;
- each command runs in its own SSH session: every `environment` entry is sent as an `env`
  request and a refusal fails the command (as Go's session.Setenv does); on update and
  delete the previous stdout/stderr go in PULUMI_COMMAND_STDOUT/STDERR (a refusal there is
  only a warning, so they are sent without asking for a reply); `stdin` is written and closed; a non-zero exit fails the step with the
  command's name and output, and nothing that depends on it runs.

Independent steps run in parallel, as the engine runs them. The state file (JSON, mode 0600,
it holds secrets like a Pulumi state does) records each resource's inputs and outputs after
its step succeeded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Literal

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from .program import CommandSpec

Action = Literal["create", "update", "replace", "delete"]
COMMAND_TIMEOUT = 600.0
# Handshakes sshd drops under load (MaxStartups) are retried; paramiko would print each one.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class StepFailed(RuntimeError):
    def __init__(self, name: str, action: str, detail: str) -> None:
        super().__init__(f"{name} ({action}) failed: {detail}")
        self.name = name
        self.action = action
        self.detail = detail


@dataclass
class Step:
    name: str
    action: Action
    seconds: float = 0.0


@dataclass
class Replay:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def ran(self, action: Action | None = None) -> list[str]:
        return sorted(s.name for s in self.steps if action is None or s.action == action)


def plan(state: dict[str, Any], declared: Iterable[CommandSpec]) -> dict[str, Action]:
    """What the engine would do per resource, without running anything."""
    actions: dict[str, Action] = {}
    names = set()
    for spec in declared:
        names.add(spec.name)
        old = state.get(spec.name)
        if old is None:
            actions[spec.name] = "create"
        elif old["inputs"].get("triggers") != spec.inputs.get("triggers"):
            actions[spec.name] = "replace"
        elif old["inputs"] != spec.inputs:
            actions[spec.name] = "update"
    for name in state:
        if name not in names:
            actions[name] = "delete"
    return actions


class Engine:
    def __init__(self, state_file: Path, parallelism: int = 16, dial_attempts: int | None = None) -> None:
        self.state_file = state_file
        self.parallelism = parallelism
        self.dial_attempts = dial_attempts  # at most this many dials, whatever dialErrorLimit says
        self.state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
        self._lock = threading.Lock()

    def _save(self) -> None:
        self.state_file.touch(mode=0o600)
        self.state_file.write_text(json.dumps(self.state, indent=1, sort_keys=True))

    def up(self, declared: list[CommandSpec]) -> Replay:
        """Replay `declared` as `pulumi up` would; raises StepFailed on the first failure."""
        started = time.monotonic()
        replay = Replay()
        specs = {s.name: s for s in declared}
        actions = plan(self.state, declared)
        pending = {name for name in specs if name in actions}
        # A step waits for every step pending among its dependencies, direct or through unchanged
        # resources: the program registers a resource only once what it depends on is registered,
        # so the engine never runs it before the steps of its dependencies' dependencies.
        closure = {name: _dependencies(name, specs) for name in specs}
        deferred_deletes: list[tuple[str, dict[str, Any]]] = []
        failure: StepFailed | None = None
        try:
            with ThreadPoolExecutor(self.parallelism) as pool:
                running: dict[Future[Step], str] = {}
                while pending or running:
                    if failure is None:
                        for name in sorted(pending):
                            if not (closure[name] & (pending | set(running.values()))):
                                pending.discard(name)
                                running[pool.submit(self._step, specs[name], actions[name], replay)] = name
                    if not running:
                        break
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in finished:
                        name = running.pop(future)
                        try:
                            step = future.result()
                        except StepFailed as error:
                            failure = failure or error
                            continue
                        replay.steps.append(step)
                        if step.action == "replace" and not specs[name].delete_before_replace:
                            deferred_deletes.append((name, self.state[name]["replaced"]))
                    if failure is not None:
                        pending.clear()
            if failure is not None:
                raise failure
            # Deletes last: replaced resources' old selves, then resources no longer declared,
            # dependents before what they depend on.
            for name, old in deferred_deletes:
                self._run_delete(name, old, replay)
                self.state[name].pop("replaced", None)
            gone = [n for n, a in actions.items() if a == "delete"]
            for name in _dependents_first(gone, self.state):
                self._run_delete(name, self.state[name], replay)
                del self.state[name]
                replay.steps.append(Step(name, "delete"))
        finally:
            self._save()
        replay.seconds = time.monotonic() - started
        return replay

    def _step(self, spec: CommandSpec, action: Action, replay: Replay) -> Step:
        __tracebackhide__ = True
        started = time.monotonic()
        inputs = spec.inputs
        old = self.state.get(spec.name)
        outputs: dict[str, str] = {}
        if action == "create":
            outputs = self._run(spec.name, action, inputs, inputs.get("create"), None, replay)
        elif action == "update":
            assert old is not None
            command = inputs.get("update") or inputs.get("create")
            outputs = self._run(spec.name, action, inputs, command, old["outputs"], replay)
        elif action == "replace":
            assert old is not None
            if spec.delete_before_replace:
                self._run_delete(spec.name, old, replay)
            outputs = self._run(spec.name, action, inputs, inputs.get("create"), None, replay)
        with self._lock:
            entry: dict[str, Any] = {"inputs": inputs, "outputs": outputs, "depends_on": spec.depends_on}
            if action == "replace" and not spec.delete_before_replace:
                assert old is not None
                entry["replaced"] = {k: v for k, v in old.items() if k != "replaced"}
            self.state[spec.name] = entry
            self._save()
        return Step(spec.name, action, time.monotonic() - started)

    def _run_delete(self, name: str, old: dict[str, Any], replay: Replay) -> None:
        if old["inputs"].get("delete"):
            self._run(name, "delete", old["inputs"], old["inputs"]["delete"], old["outputs"], replay)

    # --- pulumi-command's remote run ----------------------------------------------------

    def _dial(self, connection: dict[str, Any]) -> paramiko.SSHClient:
        """A new connection per command, as the provider dials one per run, retried up to
        dialErrorLimit times (sshd's MaxStartups drops some of many parallel handshakes)."""
        __tracebackhide__ = True
        host, port, user = connection["host"], int(connection.get("port", 22)), connection.get("user", "root")
        pkey = paramiko.Ed25519Key.from_private_key(StringIO(connection["privateKey"]))
        attempts = int(connection.get("dialErrorLimit", 10))
        if self.dial_attempts is not None:
            attempts = min(attempts, self.dial_attempts)
        for attempt in range(attempts):
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # checked below when hostKey is set
            try:
                client.connect(host, port=port, username=user, pkey=pkey, timeout=10, allow_agent=False, look_for_keys=False)
                break
            except (OSError, paramiko.SSHException):
                client.close()
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        pinned = connection.get("hostKey")
        if pinned:
            server = client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
            if f"{server.get_name()} {server.get_base64()}" != " ".join(pinned.split()[:2]):
                client.close()
                raise paramiko.SSHException(f"{host}: host key mismatch")
        return client

    def _run(
        self,
        name: str,
        action: str,
        inputs: dict[str, Any],
        command: str | None,
        previous: dict[str, str] | None,
        replay: Replay,
    ) -> dict[str, str]:
        __tracebackhide__ = True  # its arguments hold the SSH key and secret stdin
        if not command:
            return {"stdout": "", "stderr": ""}
        try:
            client = self._dial(inputs["connection"])
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session()
        except (OSError, paramiko.SSHException) as error:
            raise StepFailed(name, action, f"cannot connect: {error}") from None
        with client, channel:
            channel.settimeout(COMMAND_TIMEOUT)
            for key, value in (inputs.get("environment") or {}).items():
                if not _setenv(channel, key, value):
                    raise StepFailed(name, action, f'could not set environment variable "{key}" (sshd AcceptEnv)')
            if inputs.get("addPreviousOutputInEnv", True) and previous:
                for key, value in (("PULUMI_COMMAND_STDOUT", previous["stdout"]), ("PULUMI_COMMAND_STDERR", previous["stderr"])):
                    if value:
                        # The provider only warns when these are refused: ask without a reply
                        # (a refused request with a reply makes paramiko close the channel).
                        channel.set_environment_variable(key, value)
            channel.exec_command(command)
            stderr_chunks: list[bytes] = []
            reader = threading.Thread(target=lambda: stderr_chunks.append(channel.makefile_stderr("rb").read()))
            reader.start()
            if inputs.get("stdin"):
                channel.sendall(inputs["stdin"].encode())
            channel.shutdown_write()
            stdout = channel.makefile("rb").read().decode(errors="replace")
            reader.join()
            stderr = b"".join(stderr_chunks).decode(errors="replace")
            status = channel.recv_exit_status()
        if status != 0:
            raise StepFailed(name, action, f"exit {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
        return {"stdout": stdout.removesuffix("\n"), "stderr": stderr.removesuffix("\n")}


def _setenv(channel: paramiko.Channel, key: str, value: str) -> bool:
    """An `env` request with want-reply, as Go's ssh.Session.Setenv sends it: False if refused.
    (paramiko's own set_environment_variable does not ask for a reply.)"""
    message = Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("env")
    message.add_boolean(True)
    message.add_string(key)
    message.add_string(value)
    channel._event_pending()  # type: ignore[attr-defined]
    channel.transport._send_user_message(message)  # type: ignore[union-attr]
    try:
        channel._wait_for_event()  # type: ignore[attr-defined]
    except paramiko.SSHException:
        return False
    return True


def _dependencies(name: str, specs: dict[str, CommandSpec]) -> set[str]:
    found: set[str] = set()
    todo = list(specs[name].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo += specs[dep].depends_on if dep in specs else []
    return found


def _dependents_first(names: list[str], state: dict[str, Any]) -> list[str]:
    remaining, ordered = set(names), []
    while remaining:
        # A resource goes once nothing left to delete depends on it.
        ready = sorted(n for n in remaining if not any(n in state[o].get("depends_on", []) for o in remaining if o != n))
        if not ready:
            ready = sorted(remaining)
        for name in ready:
            remaining.discard(name)
            ordered.append(name)
    return ordered
