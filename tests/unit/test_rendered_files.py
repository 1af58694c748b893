"""`cachelayer render`: every file and script the program ships is in the rendering, and nothing
else; no secret reaches the output.

Both components build their resources from the rendering's own lists: per host
(render/host_files.py; its test checks that each file and script resource carries exactly one
entry of that list: name, path, mode, owner, content) and per container
(render/container_files.py; its test compares the uploaded contents with the rendering)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cachelayer.cli.app import main
from cachelayer.config.settings import PASSWORD_KEYS, Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.ops.delivery import read_tree
from cachelayer.plan.topology import build_topology
from cachelayer.render.files import mask_hashes, placeholder_passwords, rendered_files
from cachelayer.render.host_files import host_deploy_files
from cachelayer.render.hosts import run_script_command, ssh_user, write_file_command
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
    settings = settings_of(stack, overrides)
    return rendered_files(settings, build_topology(settings), harness_passwords())


def settings_of(stack: str, overrides: dict[str, Any]) -> Settings:
    config = read_stack_config(stack)
    config.update(overrides)
    return load_settings(config, stack)


def with_redis(stack: str, **changes: Any) -> dict[str, Any]:
    return {"redis": {**read_stack_config(stack)["redis"], **changes}}


DOCKER_CASES: list[tuple[str, dict[str, Any]]] = [
    ("dev", {}),
    ("dev", with_redis("dev", topology="sentinel")),
    ("dev", {"monitoring": {"enabled": True}}),
]
HOSTS_CASES: list[tuple[str, dict[str, Any]]] = [
    ("prod", {}),
    ("prod", with_redis("prod", topology="sentinel")),
    ("prod", {**with_redis("prod", tls=False), "monitoring": {"enabled": False}}),
    ("prod", {"hosts": {**read_stack_config("prod")["hosts"], "kernel_tuning": False, "ssh_user": "root"}}),
    ("prod-us", {}),  # the second region (docs/regions.md)
]


def case_id(stack: str, overrides: dict[str, Any]) -> str:
    return "-".join([stack, *(f"{key}={json.dumps(value, sort_keys=True)[:40]}" for key, value in overrides.items())])


def test_the_cases_cover_both_targets() -> None:
    assert {settings_of(s, o).redis.target for s, o in DOCKER_CASES} == {"docker"}
    assert {settings_of(s, o).redis.target for s, o in HOSTS_CASES} == {"hosts"}
    assert set(STACKS) == {"dev", "prod", "prod-us"}, "a new stack needs its cases here"


@pytest.mark.parametrize(("stack", "overrides"), DOCKER_CASES, ids=[case_id(s, o) for s, o in DOCKER_CASES])
def test_docker_rendering_is_exactly_what_the_program_ships(stack: str, overrides: dict[str, Any]) -> None:
    run = run_program(stack, overrides)
    shipped = shipped_contents(run)
    rendered = expected(stack, overrides)
    assert shipped, f"{stack}: the program shipped nothing?"
    missing = shipped - set(rendered.values())
    assert not missing, f"{stack}: shipped but not rendered: {[c[:120] for c in missing]}"
    extra = {path for path, content in rendered.items() if content not in shipped}
    assert not extra, f"{stack}: rendered but never shipped: {sorted(extra)}"


# Uploaded from pulumi-tls's outputs at deploy time: not rendered from templates.
TLS_LABELS = ("tls-ca", "tls-cert", "tls-key")


@pytest.mark.parametrize(("stack", "overrides"), HOSTS_CASES, ids=[case_id(s, o) for s, o in HOSTS_CASES])
def test_the_hosts_component_ships_exactly_the_rendered_list(stack: str, overrides: dict[str, Any]) -> None:
    """Every remote Command that writes a file or pipes a script is one entry of the per-host
    list `cachelayer render` writes, under that entry's resource name, and every entry is shipped."""
    settings = settings_of(stack, overrides)
    deploy = host_deploy_files(settings, build_topology(settings))
    passwords = harness_passwords()
    run = run_program(stack, overrides)
    (component,) = run.of_type("cachelayer:hosts:RedisHostsDeployment")
    assert settings.hosts is not None

    wanted: dict[str, tuple[str, str]] = {}  # resource name -> (create, stdin)
    for host in deploy.hosts:
        user = ssh_user(settings, host.plan.machine)
        prefix = f"{component.name}-{host.plan.name}"
        for file in host.files():
            wanted[f"{prefix}-{file.label}"] = (
                write_file_command(file.path, file.mode, file.owner, file.group, user),
                file.content(passwords),
            )
        for script in host.scripts():
            wanted[f"{prefix}-{script.label}"] = (run_script_command(user), script.content(passwords))
    first = next(h for h in deploy.hosts if h.plan.name == deploy.bootstrap_host)
    wanted[f"{component.name}-{deploy.bootstrap.label}"] = (
        run_script_command(ssh_user(settings, first.plan.machine)),
        deploy.bootstrap.content(passwords),
    )

    shipped: dict[str, tuple[str, str]] = {}
    for resource in run.of_type("command:remote:Command"):
        inputs = unwrap(resource.inputs)
        writes_a_file = 'cat > "$tmp"' in inputs["create"]
        if resource.name.endswith(TLS_LABELS) or not (writes_a_file or "stdin" in inputs):
            continue
        shipped[resource.name] = (inputs["create"], inputs.get("stdin", ""))

    assert len(wanted) > 40, f"{stack}: the rendered list is nearly empty: {sorted(wanted)}"
    assert sorted(shipped) == sorted(wanted), "resource names of the shipped files and scripts"
    for name, (create, stdin) in wanted.items():
        assert shipped[name][0] == create, f"{name}: how it is written (path, mode, owner) or run"
        assert shipped[name][1] == stdin, f"{name}: its content is not the rendered one"
    rendered = rendered_files(settings, build_topology(settings), passwords)
    assert sorted(rendered.values()) == sorted(stdin for _, stdin in wanted.values()), "`cachelayer render` writes this list"
    secret_files = [f"{component.name}-{h.plan.name}-{f.label}" for h in deploy.hosts for f in h.files() if f.secret]
    assert secret_files, "the ACLs, auth files and admin.pass hold secrets"
    for name in secret_files:
        (resource,) = [r for r in run.resources if r.name == name]
        assert resource.inputs["stdin"] != unwrap(resource.inputs["stdin"]), f"{name}: a secret shipped in plain text"


@pytest.mark.parametrize("stack", STACKS)
def test_render_command_writes_the_tree_without_secrets(stack: str, tmp_path: Path) -> None:
    out = tmp_path / stack
    # A previous render that wrote a file the stack no longer ships (its marker lists it).
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.conf").write_text("a file the stack no longer ships")
    (out / ".cachelayer-render").write_text("old/stale.conf\n")
    assert main(["render", "--stack", stack, "--out", str(out)]) == 0
    written = read_tree(out)
    assert "old/stale.conf" not in written and not (out / "old").exists(), "the previous render's file lingered"
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
