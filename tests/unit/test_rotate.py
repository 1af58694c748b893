"""The rotation's pure parts: which phase a deployment's password counts mean, which passwords
and users are refused, and where the CLI takes the new password from (never argv). The phases
themselves run on real processes in tests/integration/test_rotate.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from cachelayer.cli.app import main
from cachelayer.cli.common import ExitCode, Runtime
from cachelayer.cli.rotate import NEW_PASSWORD_ENV, _read_new_password
from cachelayer.errors import UsageError
from cachelayer.ops.rotate import ProcessPasswords, RotationStatus, check_new_password
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.passwords import PasswordFile


def status(*counts: int | None, accepts: bool | None = None, error: str = "") -> RotationStatus:
    return RotationStatus(USERS.app, tuple(
        ProcessPasswords(f"redis-{7000 + i}", f"127.0.0.1:{7000 + i}", False, count, accepts, error if i == 0 else "")
        for i, count in enumerate(counts)
    ))


@pytest.mark.parametrize(("counts", "phase"), [
    ((1, 1, 1), "one password"),
    ((2, 2, 2), "two passwords"),
    ((3, 2, 2), "two passwords"),  # a third password left by an older, unfinished rotation
    ((2, 1, 2), "mixed"),
    ((1, 2, 1), "mixed"),
])
def test_the_phase_is_read_from_the_password_counts(counts: tuple[int, ...], phase: str) -> None:
    assert status(*counts).phase == phase


def test_a_process_that_could_not_be_read_makes_the_phase_unknown() -> None:
    assert status(None, 1, 1, error="Timeout connecting").phase == "unknown"


def test_settled_on_new_needs_one_password_that_is_the_new_one_everywhere() -> None:
    assert status(1, 1, accepts=True).settled_on_new
    assert not status(1, 1, accepts=False).settled_on_new  # still on the old password
    assert not status(2, 2, accepts=True).settled_on_new
    assert not status(1, 1).settled_on_new  # no new password given: cannot say


@pytest.mark.parametrize(("user", "password", "message"), [
    ("nobody", "x" * 24, "cannot rotate user 'nobody'"),
    (USERS.app, "x" * 15, "shorter than 16"),
    (USERS.replication, "x" * 20 + '"', "breaks the quoted config lines"),
    (USERS.sentinel, "x" * 20 + " y", "outside printable ASCII, or a space"),
])
def test_unrotatable_users_and_unusable_passwords_are_refused(user: str, password: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_new_password(user, password)


def test_a_usable_password_passes() -> None:
    check_new_password(USERS.admin, "a-Perfectly_fine.password~16+")


def test_the_new_password_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-000000000\n"))
    assert _read_new_password({NEW_PASSWORD_ENV: "from-env-0000000000"}, as_json=False) == "from-env-0000000000"
    assert _read_new_password({}, as_json=False) == "from-stdin-000000000"


def test_without_a_password_the_command_stops_before_changing_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setenv("REDIS_ADMIN_PASSWORD", "admin-password-0123456789")
    code = main(["rotate", "app", "--phase", "add", "--seed", "127.0.0.1:1", "--json"], runtime=Runtime(env={}))
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == ExitCode.USAGE and NEW_PASSWORD_ENV in document["error"], document


@pytest.mark.parametrize("phase", ["add", "remove"])
def test_on_a_pulumi_stack_the_phases_are_pulumi_up_with_previous(
    phase: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = Path(__file__).parent / "fixtures" / "stack-output-prod.json"
    monkeypatch.setenv("REDIS_TLS_CA", "/nonexistent/ca.crt")  # the outputs fixture runs TLS
    code = main(["rotate", "monitor", "--phase", phase, "--stack", "prod", "--outputs", str(outputs), "--json"],
                runtime=Runtime(env={NEW_PASSWORD_ENV: "a-new-monitor-password-0123"}))
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == ExitCode.USAGE, document
    error = document["error"]
    assert "\n" not in error and "a-new-monitor-password-0123" not in error
    for command in ("pulumi config set --secret cachelayer:monitor_password_previous --stack prod",
                    "pulumi config set --secret cachelayer:monitor_password --stack prod", "pulumi up --stack prod",
                    "pulumi config rm cachelayer:monitor_password_previous --stack prod"):
        assert command in error, error


def test_the_password_is_not_an_option_of_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate", "app", "--phase", "add", "--password", "x" * 20]) == ExitCode.USAGE
    assert main(["rotate", "--help"]) == 0
    assert "--password" not in capsys.readouterr().out


def test_the_sandbox_keeps_a_rotated_password_and_the_others(tmp_path: Path) -> None:
    file = PasswordFile(tmp_path / "sb", {})
    before = file.passwords()
    file.replace(USERS.app, "rotated-password-0000")
    after = file.passwords()
    assert after.app == "rotated-password-0000"
    assert (after.admin, after.replication, after.sentinel, after.monitor) == (
        before.admin, before.replication, before.sentinel, before.monitor)
    assert (file.path.stat().st_mode & 0o777) == 0o600
