"""The sandbox's passwords: generated on first use, kept in a 0600 file in the workdir."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cachelayer.config.settings import PASSWORD_KEYS
from cachelayer.render.nodes import PASSWORD_USERS, Passwords
from cachelayer.sandbox.state import make_workdir

PASSWORDS_FILE = "passwords.json"


def generate_passwords() -> Passwords:
    return Passwords(*(secrets.token_urlsafe(24) for _ in PASSWORD_USERS))


class PasswordFile:
    """`<workdir>/passwords.json`. Passwords the stack config sets (`admin_password`, ...) are
    taken as they are; the others are generated."""

    def __init__(self, workdir: Path, config: Mapping[str, Any]) -> None:
        self.workdir = workdir
        self.path = workdir / PASSWORDS_FILE
        self.config = config

    def passwords(self) -> Passwords:
        """The kept passwords, or new ones written to the file first.

        A file written before a user existed (the `monitor` user came later) gets that user's
        password added, so the other users keep theirs."""
        names = PASSWORD_USERS
        kept: dict[str, str] = {}
        if self.path.exists():
            kept = json.loads(self.path.read_text())
            if all(kept.get(name) for name in names):
                return Passwords(*(kept[name] for name in names))
        generated = generate_passwords()
        given = {key.removesuffix("_password"): self.config.get(key) for key in PASSWORD_KEYS}
        passwords = Passwords(*(kept.get(n) or given.get(n) or getattr(generated, n) for n in names))
        self._write(passwords)
        return passwords

    def replace(self, user: str, password: str) -> None:
        """Keep `password` as the user's from now on (after a rotation, so the next start renders it)."""
        kept = self.passwords()
        self._write(Passwords(*(password if name == user else kept.presented(name) for name in PASSWORD_USERS)))

    def _write(self, passwords: Passwords) -> None:
        make_workdir(self.workdir)
        # A fresh file, 0600 at creation (O_EXCL), renamed over the old one: never readable by others.
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump({user: passwords.presented(user) for user in PASSWORD_USERS}, file)
        tmp.replace(self.path)
