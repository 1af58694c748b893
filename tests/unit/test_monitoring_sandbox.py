"""The sandbox's monitor password: generated like the others, and added to a passwords file
written before the user existed without changing the other users' passwords."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cachelayer.sandbox.local import LocalSandbox, sandbox_settings


def sandbox(workdir: Path) -> LocalSandbox:
    settings, config = sandbox_settings({"redis": {"base_port": 8040}}, "test")
    return LocalSandbox(settings, workdir, config=config)


def test_an_old_passwords_file_gets_a_monitor_password_and_keeps_the_rest(tmp_path: Path) -> None:
    old = {"app": "a" * 20, "admin": "b" * 20, "replication": "c" * 20, "sentinel": "d" * 20}
    (tmp_path / "passwords.json").write_text(json.dumps(old))
    (tmp_path / "passwords.json").chmod(0o600)
    passwords = sandbox(tmp_path).passwords
    assert (passwords.app, passwords.admin, passwords.replication, passwords.sentinel) == tuple(old.values())
    assert len(passwords.monitor) >= 16 and passwords.monitor not in old.values()
    saved = json.loads((tmp_path / "passwords.json").read_text())
    assert saved == {**old, "monitor": passwords.monitor}
    assert stat.S_IMODE((tmp_path / "passwords.json").stat().st_mode) == 0o600
    assert sandbox(tmp_path).passwords == passwords  # stable from then on


def test_a_new_sandbox_generates_five_distinct_passwords(tmp_path: Path) -> None:
    passwords = sandbox(tmp_path / "new").passwords
    values = [passwords.app, passwords.admin, passwords.replication, passwords.sentinel, passwords.monitor]
    assert len(set(values)) == 5
