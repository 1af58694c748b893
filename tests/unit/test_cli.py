"""The CLI behaves as one house: one exit-code table (documented), errors as JSON under --json,
one default stack, help that reads at 80 columns, tables that never split a name, and a
`--help` that does not load the heavy libraries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

from cachelayer.cli import delivery as delivery_cli
from cachelayer.cli.app import app, main
from cachelayer.cli.common import DEFAULT_STACK, ExitCode
from cachelayer.cli.ops import nodes_table
from cachelayer.ops import delivery as delivery_ops
from cachelayer.ops.health import NodeFacts, NodeStatus, SentinelFacts, SentinelStatus
from cachelayer.ops.target import Endpoint, Target
from support.repo import REPO_ROOT

OUTPUTS = Path(__file__).parent / "fixtures" / "stack-output-prod.json"


def commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the click tree typer builds (typer vendors click: duck-typed)."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += commands(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


ALL = commands(typer.main.get_command(app))


def test_the_exit_code_table_is_the_documented_one() -> None:
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = operations[operations.index("## Exit codes"):]
    documented = {int(code): name for code, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE)}
    assert documented == {int(code): code.name for code in ExitCode}


def test_usage_errors_have_their_own_code_not_could_not_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--no-such-option"]) == ExitCode.USAGE
    assert main(["backup", "--keep", "0"]) == ExitCode.USAGE  # click's range check
    assert main(["failover", "--force", "--takeover"]) == ExitCode.USAGE  # the command's own check
    assert "No such option" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["render", "--out", "{tmp}/out"],
    ["sandbox", "up", "--workdir", "{tmp}/sandbox"],
    ["cdn", "explain", "/x"],
    ["cdn", "purge", "--tag", "t"],
    ["drift", "--outputs", str(OUTPUTS)],
])
def test_a_missing_stack_file_is_the_same_code_everywhere(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_TLS_CA", "/nonexistent/ca.crt")  # the outputs fixture runs TLS
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main([*args, "--stack", "nosuch"]) == ExitCode.SETTINGS
    assert "no stack file Pulumi.nosuch.yaml" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("argv", [
    ["sandbox", "status", "--workdir", "{tmp}/none"],
    ["health", "--workdir", "{tmp}/none"],
    ["render", "--stack", "nosuch"],
    ["cdn", "explain", "/x"],
    ["health", "--max-lag", "soon"],
])
def test_errors_under_json_are_json(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([arg.replace("{tmp}", str(tmp_path)) for arg in argv] + ["--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code != 0 and document == {"ok": False, "error": document["error"], "exit_code": code}
    assert document["error"] and captured.err == ""


def test_every_stack_option_defaults_to_the_one_default_stack() -> None:
    defaults = {}
    for path, command in ALL:
        for param in command.params:
            if param.param_type_name == "option" and {"--stack", "--into"} & set(param.opts) and not param.multiple:
                defaults[" ".join(path)] = param.default
    assert "cdn purge" in defaults and "restore" in defaults and "sandbox up" in defaults
    required = {"delivery drift-issue"}  # CI names the stack explicitly
    assert {name: value for name, value in defaults.items() if name not in required} == {
        name: DEFAULT_STACK for name in defaults if name not in required
    }
    assert DEFAULT_STACK == "dev"


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=" ".join)
def test_help_reads_whole_at_80_columns(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and "…" not in out
    assert max(map(len, out.splitlines())) <= 80, out

    def words(text: str) -> str:  # click may break a line after a hyphen
        return re.sub(r"-\s+", "-", " ".join(text.split()))

    command = dict(ALL)[path]
    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text:
            assert words(help_text) in words(out), f"{' '.join(path)} {param.name}: help cut or lost:\n{out}"
    summary = (command.help or "").strip().split("\n\n")[0]
    assert words(summary) in words(out)


def test_help_loads_no_heavy_library() -> None:
    probe = ("import sys; from cachelayer.cli.app import main; code = main(['--help']); "
             "print(sorted(m for m in ('redis', 'cloudflare', 'boto3', 'jinja2', 'httpx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_the_render_diff_marker_is_the_one_ops_looks_for() -> None:
    assert delivery_cli.RENDER_DIFF_MARKER == delivery_ops.RENDER_DIFF_MARKER


def render(table: Any) -> str:
    console = Console(width=80, record=True)
    console.print(table)
    return console.export_text()


@pytest.mark.parametrize("host", ["127.0.0.1", "203.0.113.100"])
def test_node_table_never_splits_a_name_or_an_address(host: str) -> None:
    names = [f"redis-70{i:02d}" for i in range(6)]
    nodes = [
        NodeFacts(NodeStatus(name, f"{host}:70{i:02d}", True, None, "replica" if i >= 3 else "master", 5461,
                             1234567, "1.23M", "ok", "up", f"{host}:70{i - 3:02d}"))
        for i, name in enumerate(names)
    ]
    sentinels = [SentinelFacts(SentinelStatus("redis-sentinel-26379", f"{host}:26379", True, None,
                                              {f"redis-master-{g}": f"{host}:700{g - 1}" for g in (1, 2, 3)}))]
    target = Target("prod", "test", "cluster", tuple(Endpoint(n, host, 7000) for n in names))
    text = render(nodes_table(target, nodes, sentinels if host == "127.0.0.1" else []))
    for value in [*names, f"{host}:7001", f"{host}:7005"]:
        assert value in text, f"{value} split at 80 columns:\n{text}"
    if host == "127.0.0.1":
        assert "redis-sentinel-26379" in text and f"{host}:26379" in text, text


def test_drift_fixes_are_printed_whole() -> None:
    """The drift table keeps `maxmemory-policy` whole and prints each fix command on its own line."""
    from cachelayer.cli import ops as ops_cli
    from cachelayer.ops.drift import Drift

    fix = "redis-cli -h 127.0.0.1 -p 7001 CONFIG SET maxmemory-policy allkeys-lru (or re-run `pulumi up`)"
    drift = Drift("config", "redis-7001", "maxmemory-policy", "allkeys-lru", "noeviction", fix)
    console = Console(width=80, record=True)
    ops_cli.print_drift(console, "dev", [drift])
    text = console.export_text()
    assert "maxmemory-policy" in text.split("fix 1:")[0], text
    assert f"fix 1: {fix}" in " ".join(text.split()), text


# ------------------------------------------------------------------------------ guards
@pytest.fixture
def dead_seed(monkeypatch: pytest.MonkeyPatch) -> str:
    """A deployment from the environment whose only node does not listen."""
    from cachelayer.ports import free_loopback_port

    monkeypatch.setenv("REDIS_ADMIN_PASSWORD", "not-a-real-password")
    return f"127.0.0.1:{free_loopback_port()}"


def test_health_that_reached_no_node_calls_no_check_ok_and_says_so_quickly(
    dead_seed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    begin = time.monotonic()
    code = main(["health", "--seed", dead_seed, "--json"])
    seconds = time.monotonic() - begin
    document = json.loads(capsys.readouterr().out)
    assert code == ExitCode.CANNOT_CHECK and document["ok"] is False
    states = {c["name"]: (c["state"], c["ok"]) for c in document["checks"]}
    assert states["reachable"] == ("problem", False)
    assert {name: state for name, state in states.items() if name != "reachable"} == {
        name: ("not checked", False) for name in states if name != "reachable"}, states
    assert seconds < 3, f"{seconds:.1f} s: a refused connection is not retried with backoff"

    code = main(["health", "--seed", dead_seed])
    text = " ".join(capsys.readouterr().out.split())
    assert code == ExitCode.CANNOT_CHECK
    assert "cluster_state │ not checked" in text and "slots │ not checked" in text and "│ ok │" not in text


@pytest.mark.parametrize("argv", [
    ["rebalance", "--yes"],
    ["drain", "{seed}", "--yes"],
    ["failover", "{seed}", "--yes"],
    ["backup", "--to", "{tmp}"],
    ["restore", "{tmp}", "--yes"],
])
def test_a_deployment_from_the_environment_needs_its_stack_named_before_a_change(
    argv: list[str], dead_seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--seed says where, not which stack: the default `dev` label is never used for a change."""
    args = [arg.replace("{seed}", dead_seed).replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main([*args, "--seed", dead_seed, "--json"]) == ExitCode.USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    option = "--into" if argv[0] == "restore" else "--stack"
    assert f"cannot tell which stack it is: name it with {option} NAME" in error
    # Named, the command goes on (and meets the dead node: not a usage error any more).
    assert main([*args, "--seed", dead_seed, "--json", option, "dev"]) != ExitCode.USAGE
    capsys.readouterr()


def test_force_and_takeover_need_the_replica_named() -> None:
    assert main(["failover", "--force", "--yes"]) == ExitCode.USAGE
    assert main(["failover", "--takeover", "--yes"]) == ExitCode.USAGE


@pytest.mark.parametrize("interactive, answer, yes, as_json, code", [
    (False, "", False, False, ExitCode.USAGE),  # a pipe or a cron job: --yes or nothing
    (True, "", False, True, ExitCode.USAGE),  # --json never prompts
    (True, "prod", False, False, ExitCode.PROBLEM),  # the wrong stack typed
    (True, " dev ", False, False, None),  # the stack typed: go ahead
    (False, "", True, True, None),  # --yes
])
def test_the_one_confirmation(
    interactive: bool, answer: str, yes: bool, as_json: bool, code: ExitCode | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cachelayer.cli.common import Runtime, confirm_target_change

    target = Target("dev", "local sandbox /w", "cluster", (Endpoint("redis-7000", "127.0.0.1", 7000),), origin="sandbox")
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return answer

    runtime = Runtime(interactive=lambda: interactive, ask=ask)
    context = typer.Context(typer.main.get_command(app), obj=runtime)
    if code is None:
        confirm_target_change(context, "do it", target, yes=yes, as_json=as_json)
    else:
        with pytest.raises(typer.Exit) as refused:
            confirm_target_change(context, "do it", target, yes=yes, as_json=as_json)
        assert refused.value.exit_code == code
    assert bool(asked) == (interactive and not yes and not as_json)
    captured = capsys.readouterr()
    if not as_json:
        shown = " ".join(captured.err.split())
        assert "about to do it stack dev: cluster deployment from local sandbox /w (a local sandbox" in shown
