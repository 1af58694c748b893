"""A rotation through `pulumi up` (docs/security.md, "Rotating a password"): `<key>_previous`
makes every file that accepts a credential hold both hashes and every file that presents one
hold the new password; on the hosts, every host accepts before anything presents. Under the
mocks, the program as the language host runs it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from cachelayer.config.settings import PASSWORD_KEYS, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.render.nodes import Passwords, render_users_acl, sentinel_users
from support.program_harness import FAKE_SECRETS, ProgramRun, contains_plain, is_secret_value, run_program, unwrap

MACHINES = [f"cache-{i}" for i in range(1, 7)]
USERS = ("app", "admin", "replication", "sentinel", "monitor")
NEW = {user: f"new-{user}-password-0123456789" for user in USERS}
OLD = {user: f"old-{user}-password-0123456789" for user in USERS}
ROTATION = {**{f"{u}_password": NEW[u] for u in USERS}, **{f"{u}_password_previous": OLD[u] for u in USERS}}
AFTER = {f"{u}_password": NEW[u] for u in USERS}


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def stdin(run: ProgramRun, name: str) -> str:
    return str(unwrap(run.named(name).inputs["stdin"]))


def closure(run: ProgramRun, name: str) -> set[str]:
    """Everything `name` waits for, directly or not."""
    seen: set[str] = set()
    todo = list(run.depends_on.get(name, []))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += run.depends_on.get(dep, [])
    return seen


@pytest.fixture(scope="module")
def phase_1() -> ProgramRun:
    return run_program("prod", config_overrides={"redis": {**read_stack_config("prod")["redis"], "topology": "sentinel"}},
                       secrets={**FAKE_SECRETS, **ROTATION})


@pytest.fixture(scope="module")
def phase_2() -> ProgramRun:
    return run_program("prod", config_overrides={"redis": {**read_stack_config("prod")["redis"], "topology": "sentinel"}},
                       secrets={**FAKE_SECRETS, **AFTER})


# --- what each file holds ------------------------------------------------------------------


def test_accepting_files_hold_both_hashes_only_while_previous_is_set(phase_1: ProgramRun, phase_2: ProgramRun) -> None:
    acl = stdin(phase_1, "redis-cache-1-redis-7000-acl")
    accept = stdin(phase_1, "redis-cache-1-accept-credentials")
    for user in USERS:
        line = next(line for line in acl.splitlines() if line.startswith(f"user {user} "))
        assert f"#{sha(NEW[user])}" in line and f"#{sha(OLD[user])}" in line, user
        # The sentinels' users (set by the accept step) too.
        assert f"acl setuser {user} reset on '#{sha(NEW[user])}' '#{sha(OLD[user])}'" in accept, user
    assert "(two passwords: app, admin, replication, sentinel, monitor)" in accept
    after = stdin(phase_2, "redis-cache-1-redis-7000-acl") + stdin(phase_2, "redis-cache-1-accept-credentials")
    for user in USERS:
        assert sha(NEW[user]) in after and sha(OLD[user]) not in after, user


def test_presenting_files_and_outputs_hold_the_new_password_only(phase_1: ProgramRun) -> None:
    presented = {
        "admin.pass": stdin(phase_1, "redis-cache-1-admin-pass"),
        "auth.conf": stdin(phase_1, "redis-cache-1-redis-7000-auth"),
        "sentinel.conf.dist": stdin(phase_1, "redis-cache-1-redis-sentinel-26379-conf-dist"),
        "sentinel-set.sh": stdin(phase_1, "redis-cache-1-sentinel-set"),
    }
    exporters = [r.name for r in phase_1.of_type("command:remote:Command") if "exporter" in r.name and r.name.endswith("-password")]
    assert len(exporters) == 9  # six nodes, three sentinels
    presented |= {name: stdin(phase_1, name) for name in exporters}
    assert presented["admin.pass"] == NEW["admin"] + "\n"
    assert f'masterauth "{NEW["replication"]}"' in presented["auth.conf"]
    assert f'sentinel auth-pass redis-master-1 "{NEW["sentinel"]}"' in presented["sentinel.conf.dist"]
    assert f"SENTINEL_PASSWORD={NEW['sentinel']}\n" in presented["sentinel-set.sh"]
    for name in exporters:
        assert set(json.loads(presented[name]).values()) == {NEW["monitor"]}, name
    for name, text in presented.items():
        assert not any(OLD[user] in text for user in USERS), name
    assert phase_1.exports["admin_password"].value == NEW["admin"] and phase_1.exports["admin_password"].secret
    assert phase_1.exports["connection"].value["password"] == NEW["app"] and phase_1.exports["connection"].secret


def test_the_dev_stacks_container_files_accept_both_and_present_the_new_one() -> None:
    run = run_program("dev", secrets={"app_password": NEW["app"], "app_password_previous": OLD["app"],
                                      "replication_password": NEW["replication"],
                                      "replication_password_previous": OLD["replication"]})
    container = next(r for r in run.of_type("docker:index/container:Container") if r.inputs["name"] == "redis-7000")
    uploads = {u["file"]: u["content"] for u in unwrap(container.inputs["uploads"])}
    acl = next(text for path, text in uploads.items() if path.endswith(".acl"))
    auth = next(text for path, text in uploads.items() if path.endswith("-auth.conf"))
    assert sha(NEW["app"]) in acl and sha(OLD["app"]) in acl
    assert NEW["replication"] in auth and OLD["replication"] not in auth


def test_renderers_decide_through_one_rule() -> None:
    passwords = Passwords(*(NEW[u] for u in USERS), previous={"monitor": OLD["monitor"]})
    assert passwords.accepted("monitor") == (NEW["monitor"], OLD["monitor"]) and passwords.accepted("app") == (NEW["app"],)
    assert passwords.presented("monitor") == NEW["monitor"] and passwords.rotating == ("monitor",)
    assert OLD["monitor"] not in repr(passwords) and NEW["monitor"] not in repr(passwords)
    settings = load_settings(read_stack_config("prod"), "prod")
    assert sha(OLD["monitor"]) in render_users_acl(settings, passwords)
    assert dict(sentinel_users(passwords))["monitor"][1:3] == (f"#{sha(NEW['monitor'])}", f"#{sha(OLD['monitor'])}")


# --- secrets -------------------------------------------------------------------------------


def test_no_previous_password_in_plain_text_in_any_input_or_command_line(phase_1: ProgramRun) -> None:
    everything = [unwrap(r.inputs) for r in phase_1.resources]
    # The retired passwords do reach resources (wrapped): the admin one only as a hash.
    assert any(contains_plain(i, sha(OLD["admin"])) for i in everything)
    for resource in phase_1.resources:
        for user in USERS:
            for password in (OLD[user], NEW[user]):
                assert not contains_plain(resource.inputs, password), f"{resource.name} holds a {user} password"
        inputs = unwrap(resource.inputs)
        for key in ("create", "update", "delete"):  # what becomes an argv on a host
            line = str(inputs.get(key) or "")
            assert not any(OLD[u] in line or NEW[u] in line for u in USERS), f"{resource.name} {key}"
    for name in ("redis-cache-1-accept-credentials", "redis-cache-1-sentinel-set"):
        assert is_secret_value(phase_1.named(name).inputs["stdin"]) and "stdin" in phase_1.additional_secret_outputs[name]
    # The accept step holds hashes, never a password.
    accept = stdin(phase_1, "redis-cache-1-accept-credentials")
    assert not any(OLD[u] in accept or NEW[u] in accept for u in USERS)


# --- ordering ------------------------------------------------------------------------------


def test_every_host_accepts_before_anything_presents_a_password(phase_1: ProgramRun) -> None:
    accepts = {f"redis-{m}-accept-credentials" for m in MACHINES}
    presenting = [f"redis-{m}-admin-pass" for m in MACHINES]
    presenting += [f"redis-{m}-redis-{7000 + i}-auth" for i, m in enumerate(MACHINES)]
    presenting += [f"redis-{m}-apply-config" for m in MACHINES]  # live masterauth
    presenting += [f"redis-{m}-sentinel-set" for m in MACHINES[:3]]  # auth-pass, sentinel-pass
    presenting += [f"redis-{m}-redis-sentinel-{26379 + i}-conf-dist" for i, m in enumerate(MACHINES[:3])]
    presenting += [r.name for r in phase_1.of_type("command:remote:Command") if "exporter" in r.name and r.name.endswith("-password")]
    presenting += ["redis-bootstrap", *(f"redis-{m}-backup-timer" for m in MACHINES)]
    # And whatever else carries a new password in plain text (the HAProxy config's role check, a
    # file added later): what presents a password is what holds one.
    presenting += [r.name for r in phase_1.of_type("command:remote:Command")
                   if "stdin" in r.inputs and any(NEW[u] in stdin(phase_1, r.name) for u in USERS)]
    assert any("haproxy" in name for name in presenting), "the sentinel stack's HAProxy config is not among them"
    for name in presenting:
        assert accepts <= closure(phase_1, name), f"{name} does not wait for every host's accept step"
    # The live switches name them directly: not only through the (unchanged) bootstrap.
    for name in [f"redis-{m}-apply-config" for m in MACHINES] + [f"redis-{m}-sentinel-set" for m in MACHINES[:3]]:
        assert accepts <= set(phase_1.depends_on[name]), name
    for index, machine in enumerate(MACHINES):
        accept = f"redis-{machine}-accept-credentials"
        # It loads the host's freshly uploaded ACL file, reaching the nodes over TLS...
        assert {f"redis-{machine}-redis-{7000 + index}-acl", f"redis-{machine}-tls-ca"} <= set(phase_1.depends_on[accept])
        # ...and logs in with the admin.pass written before this deploy, not this deploy's.
        assert not any(dep.endswith("-admin-pass") for dep in closure(phase_1, accept)), accept
        assert phase_1.named(accept).inputs["update"] == phase_1.named(accept).inputs["create"]  # re-runs on change


# --- settings ------------------------------------------------------------------------------


def prod_with(**secrets: Any) -> None:
    load_settings({**read_stack_config("prod"), **secrets}, "prod")


@pytest.mark.parametrize("key", PASSWORD_KEYS)
def test_a_previous_password_needs_a_given_new_one(key: str) -> None:
    with pytest.raises(SettingsError) as error:
        prod_with(**{f"{key}_previous": "an-old-password-0123456789"})
    assert error.value.key == f"{key}_previous"
    assert f"pulumi config set --secret cachelayer:{key}" in str(error.value) and "\n" not in str(error.value)


def test_a_previous_password_equal_to_the_new_one_is_refused() -> None:
    with pytest.raises(SettingsError, match="is the same as app_password: nothing to rotate") as error:
        prod_with(app_password="the-same-password-0123", app_password_previous="the-same-password-0123")
    assert "pulumi config rm cachelayer:app_password_previous" in str(error.value)
    assert "the-same-password-0123" not in str(error.value)


@pytest.mark.parametrize(("previous", "problem"), [("short-0123", "shorter than 16"), ('with"quote-0123456789', "cannot be written")])
def test_a_malformed_previous_password_is_refused_naming_its_key(previous: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as error:
        prod_with(admin_password="a-new-admin-password-0123", admin_password_previous=previous)
    assert error.value.key == "admin_password_previous" and previous not in str(error.value)
    assert "remove it: `pulumi config rm cachelayer:admin_password_previous`" in str(error.value)


def test_a_program_run_with_a_bad_previous_stops_with_one_line() -> None:
    with pytest.raises(SystemExit) as stopped:
        run_program("prod", secrets={"app_password_previous": "an-old-password-0123456789"})
    assert str(stopped.value).startswith("cachelayer: stack setting 'app_password_previous'")


def test_a_new_monitor_password_restarts_each_exporter_by_an_update_never_a_replacement(
    phase_1: ProgramRun, phase_2: ProgramRun
) -> None:
    """A replacement would run the old resource's `delete` (disable --now) last: the exporter
    stopped for good after its restart (what the rotation rehearsal found)."""
    before = run_program("prod", config_overrides={"redis": {**read_stack_config("prod")["redis"], "topology": "sentinel"}})
    services = [r.name for r in phase_1.of_type("command:remote:Command") if r.name.endswith("-exporter-service")]
    assert len(services) == 9
    for name in services:
        old, new = unwrap(before.named(name).inputs), unwrap(phase_1.named(name).inputs)
        assert "triggers" not in new and old["create"] == new["create"], name
        assert old["update"] != new["update"] and new["update"].startswith(new["create"] + " # start-up inputs "), name
        assert is_secret_value(phase_1.named(name).inputs["update"]), name  # it holds a hash of the password file
        assert unwrap(phase_2.named(name).inputs)["update"] == new["update"], "phase 2 leaves the exporters alone"
