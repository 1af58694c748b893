"""`cachelayer render`: every file and script the program ships is in the rendering, and nothing
else; no secret reaches the output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cachelayer.cli.app import main
from cachelayer.config.settings import PASSWORD_KEYS, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import build_topology
from cachelayer.render.files import mask_hashes, placeholder_passwords, rendered_files
from cachelayer.render.nodes import Passwords
from conftest import STACKS
from support.program_harness import FAKE_SECRETS, ProgramRun, run_program, unwrap


def harness_passwords() -> Passwords:
    """What RecordingMocks returns for each generated password."""
    return Passwords(*(f"generated-redis-credentials-{k.replace('_', '-')}-0123456789abcdef" for k in PASSWORD_KEYS))


def shipped_contents(run: ProgramRun) -> set[str]:
    """Every file content the program hands to a container or pipes over SSH/a local shell."""
    contents: set[str] = set()
    for resource in run.resources:
        inputs = unwrap(resource.inputs)
        if resource.type == "docker:index/container:Container":
            contents |= {u["content"] for u in inputs.get("uploads", [])}
        elif resource.type.startswith("command:") and inputs.get("stdin"):
            if "BEGIN CERTIFICATE" in inputs["stdin"] or "PRIVATE KEY" in inputs["stdin"]:
                continue  # TLS material comes from pulumi-tls at deploy time, not from templates
            contents.add(inputs["stdin"])
    return contents


def expected(stack: str, overrides: dict[str, Any]) -> dict[str, str]:
    config = read_stack_config(stack)
    config.update(overrides)
    settings = load_settings(config, stack)
    return rendered_files(settings, build_topology(settings), harness_passwords())


CASES: list[tuple[str, dict[str, Any]]] = [(stack, {}) for stack in STACKS] + [
    ("dev", {"redis": {**read_stack_config("dev")["redis"], "topology": "sentinel"}}),
    ("prod", {"redis": {**read_stack_config("prod")["redis"], "topology": "sentinel"}}),
    ("dev", {"monitoring": {"enabled": True}}),
]


def case_id(stack: str, overrides: dict[str, Any]) -> str:
    return f"{stack}-{overrides.get('redis', {}).get('topology', 'file')}" + ("-monitoring" if "monitoring" in overrides else "")


@pytest.mark.parametrize(("stack", "overrides"), CASES, ids=[case_id(s, o) for s, o in CASES])
def test_rendering_is_exactly_what_the_program_ships(stack: str, overrides: dict[str, Any]) -> None:
    run = run_program(stack, overrides)
    shipped = shipped_contents(run)
    rendered = expected(stack, overrides)
    assert shipped, f"{stack}: the program shipped nothing?"
    missing = shipped - set(rendered.values())
    assert not missing, f"{stack}: shipped but not rendered: {[c[:120] for c in missing]}"
    extra = {path for path, content in rendered.items() if content not in shipped}
    assert not extra, f"{stack}: rendered but never shipped: {sorted(extra)}"


@pytest.mark.parametrize("stack", STACKS)
def test_render_command_writes_the_tree_without_secrets(stack: str, tmp_path: Path) -> None:
    out = tmp_path / stack
    (out / "stale.conf").parent.mkdir(parents=True)
    (out / "stale.conf").write_text("a file the stack no longer ships")
    assert main(["render", "--stack", stack, "--out", str(out)]) == 0
    written = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert "stale.conf" not in written, "the output directory is emptied first"
    settings = load_settings(read_stack_config(stack), stack)
    passwords = placeholder_passwords()
    assert written == mask_hashes(rendered_files(settings, build_topology(settings), passwords), passwords)
    text = "\n".join(written.values())
    acl = next(content for path, content in written.items() if path.endswith(".acl"))
    assert "user app on #<sha256 of app_password> " in acl, acl
    for secret in FAKE_SECRETS.values():
        assert secret not in text
    assert "<secret:" in text or stack == "dev", "prod ships admin.pass: its placeholder shows"


def test_render_refuses_an_unknown_stack(tmp_path: Path) -> None:
    assert main(["render", "--stack", "nosuch", "--out", str(tmp_path / "x")]) == 3  # ExitCode.SETTINGS
    assert not (tmp_path / "x").exists()


def test_placeholders_survive_config_quoting() -> None:
    """auth.conf quotes the password: a placeholder must come out as itself."""
    settings = load_settings(read_stack_config("dev"), "dev")
    files = rendered_files(settings, build_topology(settings), placeholder_passwords())
    auth = next(c for p, c in files.items() if p.endswith("-auth.conf"))
    assert '"<secret:replication_password>"' in auth, auth
    json.dumps(files)  # plain text only
