"""Password rotation of one ACL user on a live deployment, with no moment in which a client or a
replica holding either password is refused (issue 24, part 1).

A Redis ACL user may hold several passwords at once (`#<sha256>` adds one, `!<sha256>` removes
one), so a rotation is two phases, each safe to re-run until it finishes:

- **add**: the new password's hash is added to the user on every node and every sentinel that
  knows the user (nothing is removed), persisted (ACL SAVE where the node reads an `aclfile`,
  SENTINEL FLUSHCONFIG on sentinels), checked with AUTH on each process; then the credentials the
  deployment presents itself are switched to the new password: `masterauth` of every node (user
  `replication`), the sentinels' `auth-pass` of every group and `sentinel-pass` (user `sentinel`).
- **remove**: only once every process accepts the new password (AUTH on each) and presents it
  (masterauth read back), every other hash of the user is removed and persisted.

The phase is read from the deployment itself: a user holding two passwords everywhere is a
rotation between its phases; processes that disagree mean a phase stopped halfway.

This drives a deployment whose files nothing else renders: the local sandbox (its exporters get
the new `monitor` password from cli/rotate.py). A stack Pulumi manages renders its files at every
`pulumi up`, so there a rotation is `<key>_previous` and two `pulumi up` runs (docs/security.md,
"Rotating a password"); `read_status` works on both. Passwords never appear in a message, a
report line or a repr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachelayer.config.checks import password_problem
from cachelayer.errors import CachelayerError, UsageError
from cachelayer.ops.target import Endpoint, Target
from cachelayer.render.nodes import USERS, password_hash

ROTATABLE_USERS = (USERS.app, USERS.admin, USERS.replication, USERS.sentinel, USERS.monitor)
MIN_PASSWORD_LENGTH = 16
TIMEOUT_SECONDS = 2.0

Phase = Literal["add", "remove"]
Report = Callable[[str], None]


class RotationError(CachelayerError):
    """A phase stopped: the message names the process, what failed, what is safe, and what to run."""


def check_new_password(user: str, password: str) -> None:
    """Refuse, in one line, a user we cannot rotate or a password the config files cannot hold."""
    if user not in ROTATABLE_USERS:
        raise UsageError(f"cannot rotate user {user!r}: choose one of {', '.join(ROTATABLE_USERS)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"the new password is shorter than {MIN_PASSWORD_LENGTH} characters: give a longer one")
    problem = password_problem(password)
    if problem:
        raise UsageError(f"the new password cannot be used: {problem}")


# ------------------------------------------------------------------------------- status
@dataclass(frozen=True)
class ProcessPasswords:
    """How many passwords one process holds for the user (never which)."""

    name: str
    endpoint: str
    sentinel: bool
    passwords: int | None  # None: the process could not be read, or does not know the user
    accepts_new: bool | None = None  # AUTH with the new password, when one was given
    error: str = ""


@dataclass(frozen=True)
class RotationStatus:
    user: str
    processes: tuple[ProcessPasswords, ...]
    unsaved: tuple[str, ...] = ()  # processes that took the new password in memory only (ACL SAVE failed)

    @property
    def phase(self) -> str:
        """one password | two passwords (between add and remove) | mixed (a phase stopped
        halfway: re-run it) | unknown (a process could not be read)."""
        if any(p.error for p in self.processes):
            return "unknown"
        counts = {min(p.passwords, 2) for p in self.processes if p.passwords is not None}
        if counts == {1}:
            return "one password"
        if counts == {2}:
            return "two passwords"
        return "mixed"

    @property
    def settled_on_new(self) -> bool:
        """Every process holds exactly one password, and it is the new one."""
        return self.phase == "one password" and all(p.accepts_new for p in self.processes)

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "phase": self.phase,
            "processes": [
                {"name": p.name, "endpoint": p.endpoint, "sentinel": p.sentinel, "passwords": p.passwords,
                 "accepts_new": p.accepts_new, "error": p.error}
                for p in self.processes
            ],
            "unsaved": list(self.unsaved),
        }


def read_status(target: Target, user: str, new_password: str | None = None) -> RotationStatus:
    """Every process's password count for the user (and whether it takes `new_password`)."""
    found = []
    for endpoint in _processes(target):
        sentinel = endpoint in target.sentinels
        try:
            with _client(target, endpoint) as client:
                passwords = _passwords_of(client, user)
        except (redis.RedisError, OSError) as error:
            found.append(ProcessPasswords(endpoint.name, endpoint.address, sentinel, None, error=_describe(error)))
            continue
        if passwords is None:
            if not sentinel:
                found.append(ProcessPasswords(endpoint.name, endpoint.address, sentinel, None,
                                              error=f"no user {user}"))
            continue  # a sentinel need not know every user
        try:
            accepts = None if new_password is None else _accepts(target, endpoint, user, new_password)
        except (redis.RedisError, OSError) as error:
            found.append(ProcessPasswords(endpoint.name, endpoint.address, sentinel, None, error=_describe(error)))
            continue
        found.append(ProcessPasswords(endpoint.name, endpoint.address, sentinel, len(passwords), accepts))
    return RotationStatus(user, tuple(found))


# ------------------------------------------------------------------------------ phase 1
def add_password(target: Target, user: str, new_password: str, report: Report = lambda line: None) -> RotationStatus:
    """Phase 1: the user accepts the new password everywhere, beside the old one; the deployment
    presents the new one (masterauth, sentinel auth-pass). Removes nothing."""
    check_new_password(user, new_password)
    new_hash = password_hash(new_password)
    holders = _holders(target, user)
    unsaved = []
    for done, endpoint in enumerate(holders):
        advice = _add_advice(user, done, len(holders))
        with _step(endpoint, "adding the new password", advice), _client(target, endpoint) as client:
            client.execute_command("ACL", "SETUSER", user, f"#{new_hash}")
            problem = _persist(client, endpoint in target.sentinels)
        if problem:
            # Its file keeps the old password, which still works: carry on, and say so.
            unsaved.append(endpoint.name)
            report(f"{endpoint.name}: {user} accepts the new password in memory only ({problem}): a restart "
                   "drops it until the node's ACL file holds it")
        else:
            report(f"{endpoint.name}: {user} accepts the new password (and the old one)")
    _require_accepted(target, holders, user, new_password, _add_advice(user, len(holders), len(holders)))
    if user == USERS.replication:
        _switch_masterauth(target, new_password, report)
    if user == USERS.sentinel:
        _switch_sentinel_credentials(target, new_password, report)
    return replace(read_status(target, user, new_password), unsaved=tuple(unsaved))


def _add_advice(user: str, done: int, total: int) -> str:
    return (f"{done} of {total} processes took the new password so far, none lost the old one; re-run "
            f"`cachelayer rotate {user} --phase add` once every process answers")


def _switch_masterauth(target: Target, new_password: str, report: Report) -> None:
    """Every node authenticates to its master with the new password from its next (re)connection;
    links up now stay up (masterauth is only read when a link is made)."""
    advice = ("the replication user accepts both passwords on every node, so every link works; re-run "
              f"`cachelayer rotate {USERS.replication} --phase add` once every node answers")
    for endpoint in target.nodes:
        with _step(endpoint, "setting masterauth", advice), _client(target, endpoint) as client:
            client.config_set("masterauth", new_password)
        report(f"{endpoint.name}: masterauth is the new password (in memory; see docs/security.md)")


def _switch_sentinel_credentials(target: Target, new_password: str, report: Report) -> None:
    """Each sentinel logs in to the nodes (auth-pass of every group) and to the other sentinels
    (sentinel-pass) with the new password; SENTINEL SET persists it in sentinel.conf itself."""
    advice = ("the sentinel user accepts both passwords on every node and sentinel, so quorum holds; re-run "
              f"`cachelayer rotate {USERS.sentinel} --phase add` once every sentinel answers")
    for endpoint in target.sentinels:
        with _step(endpoint, "setting auth-pass and sentinel-pass", advice), _client(target, endpoint) as client:
            for group in _groups(target, client):
                client.execute_command("SENTINEL", "SET", group, "auth-pass", new_password)
            client.execute_command("SENTINEL", "CONFIG", "SET", "sentinel-pass", new_password)
        report(f"{endpoint.name}: auth-pass and sentinel-pass are the new password")


# ------------------------------------------------------------------------------ phase 2
def remove_old_passwords(
    target: Target, user: str, new_password: str, report: Report = lambda line: None
) -> RotationStatus:
    """Phase 2: once every process accepts the new password and the deployment presents it,
    every other password of the user is removed. Refuses, removing nothing, otherwise."""
    check_new_password(user, new_password)
    new_hash = password_hash(new_password)
    refused = f"nothing was removed; finish phase 1 with `cachelayer rotate {user} --phase add`"
    # The old admin (or sentinel) password may already be gone from some processes: log in with the new one.
    if user == target.admin_user:
        target = replace(target, admin_password=new_password)
    if user == target.sentinel_user:
        target = replace(target, sentinel_password=new_password)
    holders = _holders(target, user)
    _require_accepted(target, holders, user, new_password, refused)
    if user == USERS.replication:
        _require_masterauth(target, new_password, refused)
    _require_saveable(target, holders, user)
    if user == USERS.sentinel:
        # Sentinel cannot show its auth-pass: set it again (the same value, so a no-op when phase 1 ran).
        _switch_sentinel_credentials(target, new_password, report)
    for done, endpoint in enumerate(holders):
        advice = (f"{done} of {len(holders)} processes dropped the old password; every process accepts the new "
                  f"one; re-run `cachelayer rotate {user} --phase remove` once every process answers")
        with _step(endpoint, "removing the old password", advice), _client(target, endpoint) as client:
            old = [h for h in (_passwords_of(client, user) or []) if h != new_hash]
            if old:
                client.execute_command("ACL", "SETUSER", user, *(f"!{h}" for h in old))
                problem = _persist(client, endpoint in target.sentinels)
                if problem:  # checked just before: the file became unwritable in between
                    raise RotationError(f"{endpoint.name}: {problem}; {advice}")
        report(f"{endpoint.name}: {user} accepts the new password only")
    return read_status(target, user, new_password)


def _require_accepted(target: Target, holders: Sequence[Endpoint], user: str, password: str, advice: str) -> None:
    refusing = []
    for endpoint in holders:
        with _step(endpoint, f"logging in as {user} with the new password", advice):
            if not _accepts(target, endpoint, user, password):
                refusing.append(endpoint.name)
    if refusing:
        raise RotationError(f"{', '.join(refusing)} refuse the new password of user {user}: {advice}")


def _require_saveable(target: Target, holders: Sequence[Endpoint], user: str) -> None:
    """Every process can write its users where its next start reads them: otherwise a restart
    after phase 2 would bring back a file holding only the old password, which nobody uses any more."""
    for endpoint in holders:
        with _step(endpoint, "saving the users", "nothing was removed"), _client(target, endpoint) as client:
            problem = _persist(client, endpoint in target.sentinels)
        if problem:
            raise RotationError(
                f"{endpoint.name} cannot save its users ({problem}): after removing the old password a restart "
                f"would read back a file holding the old one only. Nothing was removed; put the new password in "
                f"its ACL file first (docs/security.md, \"Rotating a password\"), then re-run "
                f"`cachelayer rotate {user} --phase remove`")


def _require_masterauth(target: Target, new_password: str, advice: str) -> None:
    for endpoint in target.nodes:
        with _step(endpoint, "reading masterauth", advice), _client(target, endpoint) as client:
            current = client.config_get("masterauth").get("masterauth")
        if current != new_password:
            raise RotationError(f"{endpoint.name} still authenticates to its master with the old password: {advice}")


# ---------------------------------------------------------------------------- helpers
def _processes(target: Target) -> tuple[Endpoint, ...]:
    return target.nodes + target.sentinels


def _holders(target: Target, user: str) -> list[Endpoint]:
    """The processes that know the user: every node must; a sentinel may not."""
    holders = []
    for endpoint in _processes(target):
        with _step(endpoint, f"reading user {user}", "nothing was changed"), _client(target, endpoint) as client:
            known = _passwords_of(client, user) is not None
        if known:
            holders.append(endpoint)
        elif endpoint not in target.sentinels:
            raise RotationError(f"{endpoint.name} has no user {user}: nothing to rotate there")
    return holders


def _passwords_of(client: redis.Redis, user: str) -> list[str] | None:
    """The user's password hashes on one process, or None when it has no such user."""
    found = client.acl_getuser(user)
    if found is None:
        return None
    hashes = found.get("passwords") or []
    return [str(h) for h in hashes] if isinstance(hashes, list) else []


def _persist(client: redis.Redis, sentinel: bool) -> str:
    """Write the users where the process reads them at its next start; "" when done, else why not
    (a node whose ACL file the service may not write: /etc/redis under ProtectSystem=strict on the hosts)."""
    try:
        if sentinel:
            client.execute_command("SENTINEL", "FLUSHCONFIG")
        elif client.config_get("aclfile").get("aclfile"):
            client.execute_command("ACL", "SAVE")
    except redis.ResponseError as error:
        return f"saving the users failed: {error}"
    return ""


def _accepts(target: Target, endpoint: Endpoint, user: str, password: str) -> bool:
    return logs_in(
        host=endpoint.host, port=endpoint.port, username=user, password=password,
        socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS, **target.tls_options,
    )


def logs_in(**client_options: Any) -> bool:
    """A fresh connection with these redis-py options (host, port, username, password, TLS)
    logs in: redis-py authenticates while it connects, so no command the user may lack is
    needed. A refusal is False; a process that does not answer raises.

    No retry unless the options give one: redis-py's AuthenticationError is a ConnectionError,
    which its default retry repeats with backoff, so each refused password took 2.3 s instead
    of 1 ms (and a process that does not answer, four timeouts instead of one)."""
    client = redis.Redis(**{"retry": Retry(NoBackoff(), 0), **client_options})
    try:
        client.connection_pool.release(client.connection_pool.get_connection())
        return True
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


def _groups(target: Target, sentinel: redis.Redis) -> tuple[str, ...]:
    if target.groups:
        return target.groups
    masters: dict[str, Any] = sentinel.execute_command("SENTINEL MASTERS")  # redis-py parses it into a dict
    return tuple(sorted(masters))


@contextmanager
def _client(target: Target, endpoint: Endpoint) -> Iterator[redis.Redis]:
    client = target.client(endpoint, timeout=TIMEOUT_SECONDS)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _step(endpoint: Endpoint, what: str, advice: str) -> Iterator[None]:
    """A failed step becomes one RotationError naming the process and what is still safe."""
    try:
        yield
    except (redis.RedisError, OSError) as error:
        raise RotationError(f"{endpoint.name} ({endpoint.address}): {what} failed ({_describe(error)}); "
                            f"{advice}") from None


def _describe(error: BaseException) -> str:
    # Redis error replies never echo a password back; the class name helps when the text is empty.
    return str(error) or type(error).__name__
