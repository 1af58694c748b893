"""The shell scripts and systemd units the prod stack ships, checked and run for real here.

The backup and health-check scripts are the prod-rendered ones (TLS on), run against a real
redis-server with TLS on a loopback port, pointed at test files by the overrides the scripts
document (REDIS_PORTS, REDIS_BACKUP_DIR, REDIS_ADMIN_PASS_FILE, REDIS_TLS_DIR, ...).
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import posixpath
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.plan.topology import Topology, build_topology
from cachelayer.ports import free_port_block
from cachelayer.render.files import rendered_files
from cachelayer.render.hosts import (
    HEALTH_MODULE,
    HostPlan,
    backup_calendar,
    health_module_source,
    health_plan,
    host_plans,
    node_paths,
    render_accept_credentials,
    render_backup_script,
    render_backup_service,
    render_backup_timer,
    render_firewall_unit,
    render_health_check,
    render_install_script,
    render_node_unit,
    render_sentinel_unit,
    render_thp_unit,
)
from cachelayer.render.nodes import Passwords, render_redis_conf, render_users_acl
from support.tls_certificates import make_test_certificates

# The scripts' node (PORT), a restore target (PORT + 1) and a port nobody listens on (PORT + 5).
PORT = free_port_block(7200, 7300)
PASSWORDS = Passwords(
    "app-password-0123456789", "admin-password-0123456789", "repl-password-0123456789", "sentinel-pw-0123456789",
    "monitor-pw-0123456789",
)


def prod_settings(**redis: object) -> Settings:
    config = read_stack_config("prod")
    config["redis"] = {**config["redis"], **redis}
    return load_settings(config, "prod")


def rendered(settings: Settings) -> tuple[Topology, tuple[HostPlan, ...], dict[int, str]]:
    topology = build_topology(settings)
    confs = {n.port: render_redis_conf(settings, topology, n, node_paths(n)) for n in topology.nodes}
    return topology, host_plans(settings, topology), confs


def all_scripts() -> list[tuple[str, str]]:
    """Every shell script the prod stack ships or pipes to a host (`cachelayer render`'s tree)."""
    scripts = []
    for topology_kind in ("cluster", "sentinel"):
        settings = prod_settings(topology=topology_kind)
        files = rendered_files(settings, build_topology(settings), PASSWORDS)
        scripts += [(f"{topology_kind}/{path}", text) for path, text in files.items() if path.endswith(".sh")]
    return scripts


SCRIPTS = all_scripts()


@pytest.mark.parametrize(("label", "text"), SCRIPTS, ids=[label for label, _ in SCRIPTS])
def test_shipped_scripts_pass_bash_n_and_shellcheck(label: str, text: str, tmp_path: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck is required (apt-get install shellcheck)"
    script = tmp_path / "script.sh"
    script.write_text(text)
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, f"{label}: {syntax.stderr}"
    lint = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, f"{label}:\n{lint.stdout}"
    # A password only ever reaches REDISCLI_AUTH from a file read at run time.
    from_file = text.replace('REDISCLI_AUTH="$(cat', "").replace('REDISCLI_AUTH="$(sed', "")
    assert "admin-password" not in text and "repl-password" not in text and "REDISCLI_AUTH=" not in from_file


def test_the_scripts_of_both_topologies_are_all_checked() -> None:
    labels = {label for label, _ in SCRIPTS}
    assert {"sentinel/hosts/cache-1/stdin/sentinel-set.sh", "sentinel/hosts/cache-1/stdin/bootstrap.sh",
            "sentinel/hosts/cache-4/etc/redis/redis-7003-start.sh",
            "cluster/hosts/cache-6/opt/redis/scripts/rolling-restart.sh",
            "cluster/hosts/cache-2/opt/redis/scripts/health-check.sh",
            "cluster/hosts/cache-3/stdin/host-install.sh"} <= labels, sorted(labels)


# --- a real TLS redis-server with the admin user ----------------------------------------------


@dataclass
class Server:
    port: int
    tls_dir: Path
    pass_file: Path
    process: subprocess.Popen[bytes]

    def cli(self, *args: str) -> str:
        command = ["redis-cli", "--user", "admin", "--tls", "--cacert", str(self.tls_dir / "ca.crt")]
        command += ["--cert", str(self.tls_dir / "redis.crt"), "--key", str(self.tls_dir / "redis.key")]
        result = subprocess.run(
            [*command, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "REDISCLI_AUTH": PASSWORDS.admin},
            timeout=10,
        )
        return result.stdout.strip()


def start_server(workdir: Path, port: int, data: Path, tls_dir: Path) -> subprocess.Popen[bytes]:
    settings = prod_settings()
    (workdir / "users.acl").write_text(render_users_acl(settings, PASSWORDS))
    data.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"redis-{port}.conf"
    conf.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {tls_dir}/redis.crt\ntls-key-file {tls_dir}/redis.key\n"
        f"tls-ca-cert-file {tls_dir}/ca.crt\ntls-auth-clients optional\ndir {data}\naclfile {workdir}/users.acl\n"
        f'save ""\nappendonly no\nlogfile {workdir}/redis-{port}.log\n'
    )
    return subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_pong(server: Server) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.cli("ping") == "PONG":
            return
        time.sleep(0.1)
    raise AssertionError(f"redis-server on {server.port} did not answer")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    tls_dir = tmp_path / "tls"
    make_test_certificates(tls_dir)
    pass_file = tmp_path / "admin.pass"
    pass_file.write_text(PASSWORDS.admin + "\n")
    pass_file.chmod(0o600)
    process = start_server(tmp_path, PORT, tmp_path / "data", tls_dir)
    running = Server(PORT, tls_dir, pass_file, process)
    try:
        wait_for_pong(running)
        yield running
    finally:
        process.terminate()
        process.wait(timeout=10)


def script_env(server: Server, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    env.update(
        REDIS_PORTS=str(server.port),
        REDIS_SENTINEL_PORTS="",
        REDIS_ADMIN_PASS_FILE=str(server.pass_file),
        REDIS_TLS_DIR=str(server.tls_dir),
    )
    env.update(extra)
    return env


def prod_host_script(render: str) -> str:
    settings = prod_settings()
    _, plans, _ = rendered(settings)
    if render == "backup":
        return render_backup_script(settings, plans[0])
    return render_health_check(settings, plans[0])


@pytest.mark.integration
def test_backup_script_saves_a_valid_dated_rdb_and_prunes_old_ones(server: Server, tmp_path: Path) -> None:
    assert server.cli("set", "course:42", "intro-to-redis") == "OK"
    backups = tmp_path / "backups"
    backups.mkdir()
    day = 24 * 3600
    recent = backups / f"redis-{PORT}-20200108T020000Z.rdb"
    kept_old = backups / f"redis-{PORT}-20200101T020000Z.rdb"  # past the retention, but among the newest 3
    pruned = [backups / f"redis-{PORT}-2019123{n}T020000Z.rdb" for n in (0, 1)]
    other_node = backups / f"redis-{PORT + 5}-20191201T020000Z.rdb"  # its node was not saved tonight
    foreign = backups / "notes.txt"
    for path, age in ((recent, 6), (kept_old, 8), (pruned[1], 9), (pruned[0], 10), (other_node, 30), (foreign, 30)):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age * day, time.time() - age * day))
    script = tmp_path / "redis-backup.sh"
    script.write_text(prod_host_script("backup"))

    result = subprocess.run(
        ["bash", str(script)],
        env=script_env(server, REDIS_BACKUP_DIR=str(backups)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    new = sorted(p for p in backups.glob(f"redis-{PORT}-*.rdb") if p not in (recent, kept_old))
    assert len(new) == 1, f"expected one new backup, found {[p.name for p in backups.iterdir()]}"
    assert new[0].name.startswith(f"redis-{PORT}-2") and new[0].name.endswith("Z.rdb")
    check = subprocess.run(["redis-check-rdb", str(new[0])], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert not any(p.exists() for p in pruned), "a backup older than the 7-day retention was kept"
    assert all(f"pruned {p}" in result.stdout for p in pruned)
    assert recent.exists() and kept_old.exists(), "pruning removed one of the node's newest 3 backups"
    assert other_node.exists() and foreign.exists(), "pruning removed what this run did not save or write"

    # The backup restores: a fresh server loading it serves the key.
    restore = tmp_path / "restore"
    restore.mkdir()
    shutil.copy(new[0], restore / "dump.rdb")
    (tmp_path / "r").mkdir()
    process = start_server(tmp_path / "r", PORT + 1, restore, server.tls_dir)
    restored = Server(PORT + 1, server.tls_dir, server.pass_file, process)
    try:
        wait_for_pong(restored)
        assert restored.cli("get", "course:42") == "intro-to-redis"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.integration
def test_backup_script_fails_when_a_node_cannot_be_saved_and_prunes_none_of_its_backups(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "redis-backup.sh"
    script.write_text(prod_host_script("backup"))
    backups = tmp_path / "b"
    backups.mkdir()
    # Seven failed nights behind: every backup of the dead node is past the retention.
    old = [backups / f"redis-{PORT + 5}-2020010{n}T020000Z.rdb" for n in range(1, 6)]
    for age, path in enumerate(old, start=8):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age * 86400, time.time() - age * 86400))
    env = script_env(server, REDIS_BACKUP_DIR=str(backups), REDIS_PORTS=f"{PORT} {PORT + 5}")
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"redis-{PORT + 5}: backup FAILED" in result.stderr
    assert len(list(backups.glob(f"redis-{PORT}-*.rdb"))) == 1
    assert not list(backups.glob("*.partial"))
    assert all(p.exists() for p in old), "a node whose backup failed lost its old backups"


@pytest.mark.integration
def test_rolling_restart_refuses_a_running_node_whose_role_it_cannot_read(server: Server, tmp_path: Path) -> None:
    """A wrong admin password made ROLE fail, and the node was restarted as if it were no master."""
    from cachelayer.render.hosts import render_rolling_restart

    settings = prod_settings()
    topology, plans, _ = rendered(settings)
    script = tmp_path / "rolling-restart.sh"
    script.write_text(render_rolling_restart(settings, topology, plans[0]))
    calls = tmp_path / "systemctl.log"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 0\n')  # every unit is active
    systemctl.chmod(0o755)
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-admin-password\n")
    env = script_env(server, REDIS_ADMIN_PASS_FILE=str(wrong), REDIS_SYSTEMCTL=str(systemctl), REDIS_WAIT_SECONDS="2")

    refused = subprocess.run(["bash", str(script), str(server.port)], env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert f"redis-{server.port}: cannot read its role" in refused.stderr and "refusing to restart it" in refused.stderr
    assert "restart" not in calls.read_text(), calls.read_text()


@pytest.mark.integration
def test_health_check_connects_with_tls_reports_the_node_then_fails_when_it_stops(server: Server, tmp_path: Path) -> None:
    """The prod-rendered health-check.sh and the shipped health.py, over TLS, with Debian's
    python3-redis. The plan holds this one standalone node: the checks that are not cluster-only."""
    script = tmp_path / "health-check.sh"
    script.write_text(prod_host_script("health"))
    (tmp_path / posixpath.basename(HEALTH_MODULE)).write_text(health_module_source())
    settings = prod_settings()
    plan = health_plan(settings, build_topology(settings), "cache-1")
    assert plan["tls"] is True
    name = f"redis-{server.port}"
    plan.update(kind="sentinel", nodes=[{"name": name, "host": "127.0.0.1", "port": server.port}], sentinels=[],
                groups=[], masters=1, replicas_per_master=0, local=[name])
    plan_file = tmp_path / "health.json"
    plan_file.write_text(json.dumps(plan))
    env = script_env(server, REDIS_HEALTH_PLAN=str(plan_file))

    up = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"{name} up role=master" in up.stdout.splitlines()
    assert re.search(r"^  ok +reachable ", up.stdout, re.M), up.stdout
    server.process.terminate()
    server.process.wait(timeout=10)
    down = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 2, down.stdout  # nothing answered: could not check
    assert f"{name} DOWN (" in down.stdout and re.search(r"^  PROBLEM +reachable ", down.stdout, re.M)


def accept_script(passwords: Passwords, port: int) -> str:
    """cache-1's accept-credentials.sh with its node moved to `port` (the test server's)."""
    settings = prod_settings()
    _, plans, _ = rendered(settings)
    plan = dataclasses.replace(plans[0], nodes=(dataclasses.replace(plans[0].nodes[0], port=port),))
    return render_accept_credentials(settings, plan, passwords)


def logs_in_as_admin(server: Server, password: str) -> bool:
    command = ["redis-cli", "--no-auth-warning", "--user", "admin", "--pass", password, "--tls", "--cacert",
               str(server.tls_dir / "ca.crt"), "--cert", str(server.tls_dir / "redis.crt"), "--key",
               str(server.tls_dir / "redis.key"), "-p", str(server.port), "ping"]
    return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip() == "PONG"


@pytest.mark.integration
def test_accept_credentials_rotates_the_admin_password_without_locking_itself_out(server: Server, tmp_path: Path) -> None:
    """The step every deploy runs first on a host, against a real TLS node, for `admin` (the user
    the script itself logs in as): admin.pass holds the old password until the step ran everywhere."""
    settings = prod_settings()
    acl = tmp_path / "users.acl"  # the node's aclfile, as the deploy uploads it just before
    new = dataclasses.replace(PASSWORDS, admin="admin-password-NEW-0123456789")
    env = script_env(server, REDIS_HOST="127.0.0.1")

    def accept(passwords: Passwords) -> subprocess.CompletedProcess[str]:
        acl.write_text(render_users_acl(settings, passwords))
        return subprocess.run(["bash", "-s"], input=accept_script(passwords, server.port), env=env,
                              capture_output=True, text=True, timeout=30)

    # admin_password changed with no admin_password_previous: refused before loading anything.
    refused = accept(new)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "set it to the old admin password (pulumi config set --secret cachelayer:admin_password_previous)" in (
        refused.stderr)
    assert logs_in_as_admin(server, PASSWORDS.admin) and not logs_in_as_admin(server, new.admin)
    # Phase 1: logged in with the old admin.pass, the node accepts both.
    phase_1 = dataclasses.replace(new, previous={"admin": PASSWORDS.admin})
    loaded = accept(phase_1)
    assert loaded.returncode == 0, loaded.stderr
    assert f"redis-{server.port}: users loaded (two passwords: admin)" in loaded.stdout
    assert logs_in_as_admin(server, PASSWORDS.admin) and logs_in_as_admin(server, new.admin)
    # admin.pass is rewritten after every host accepted; phase 2 then drops the old password.
    server.pass_file.write_text(new.admin + "\n")
    assert accept(phase_1).returncode == 0  # a re-run of phase 1 changes nothing
    done = accept(new)
    assert done.returncode == 0, done.stderr
    assert logs_in_as_admin(server, new.admin) and not logs_in_as_admin(server, PASSWORDS.admin)
    # A first deploy: no admin.pass yet, nothing runs, nothing to load.
    server.pass_file.unlink()
    first = subprocess.run(["bash", "-s"], input=accept_script(new, server.port), env=env, capture_output=True,
                           text=True, timeout=30)
    assert first.returncode == 0 and "first deploy" in first.stdout, first.stderr


def test_scripts_refuse_to_run_without_the_admin_password(tmp_path: Path) -> None:
    script = tmp_path / "health-check.sh"
    script.write_text(prod_host_script("health"))
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    env["REDIS_ADMIN_PASS_FILE"] = str(tmp_path / "missing.pass")
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot read the admin password file" in result.stderr


# --- systemd units -----------------------------------------------------------------------------


def units(tmp_path: Path) -> dict[str, Path]:
    settings = prod_settings()
    topology = build_topology(settings)
    sentinel_settings = prod_settings(topology="sentinel")
    sentinel = build_topology(sentinel_settings).sentinels[0]
    texts = {
        "redis-7000.service": render_node_unit(settings, topology, topology.nodes[0]),
        "redis-sentinel-26379.service": render_sentinel_unit(sentinel_settings, sentinel),
        # A node in sentinel topology: started through its role-picking start script.
        "redis-7003.service": render_node_unit(
            sentinel_settings, build_topology(sentinel_settings), build_topology(sentinel_settings).nodes[3]
        ),
        "redis-backup.service": render_backup_service(settings),
        "redis-backup.timer": render_backup_timer(settings),
        "cachelayer-firewall.service": render_firewall_unit(settings),
        "disable-thp.service": render_thp_unit(settings),
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    return paths


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # systemd-analyze verify works in this container without systemd as PID 1 (tried). It also
    # checks that ExecStart programs exist: the backup script and nft are not installed here,
    # so exactly those complaints are tolerated, and only while those files are absent.
    assert shutil.which("systemd-analyze"), "systemd-analyze is required"
    paths = units(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", *map(str, paths.values())], capture_output=True, text=True)
    absent = [p for p in ("/opt/redis/scripts/redis-backup.sh", "/usr/sbin/nft") if not os.path.exists(p)]
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not any(f"Command {p} is not executable" in line for p in absent)
    ]
    assert problems == [], "\n".join(problems)
    if not absent:
        assert result.returncode == 0


def test_node_unit_is_hardened_and_runs_the_rendered_config(tmp_path: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(units(tmp_path)["redis-7000.service"])
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/redis-server /etc/redis/redis-7000.conf"
    assert service["User"] == "redis"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/redis/7000 /var/log/redis"
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert int(service["LimitNOFILE"]) >= 10032
    assert "disable-thp.service" in parser["Unit"]["After"]
    sentinel = configparser.ConfigParser(strict=False, interpolation=None)
    sentinel.read(units(tmp_path)["redis-sentinel-26379.service"])
    assert sentinel["Service"]["ExecStart"] == "/usr/bin/redis-server /etc/redis/redis-sentinel-26379.conf --sentinel"
    assert "/etc/redis" in sentinel["Service"]["ReadWritePaths"].split()


def test_sentinel_topology_node_unit_runs_the_start_script_with_the_same_hardening(tmp_path: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(units(tmp_path)["redis-7003.service"])
    service = parser["Service"]
    # sh execs redis-server: the main pid stays the one systemd waits on for READY=1.
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/bin/sh /etc/redis/redis-7003-start.sh"
    assert service["User"] == "redis" and service["ProtectSystem"] == "strict"
    # The start script writes its marker into the data dir, the only place it may write.
    assert service["ReadWritePaths"] == "/var/lib/redis/7003 /var/log/redis"
    assert service["Restart"] == "on-failure"
    # It may wait up to 60 s for the sentinels before redis-server even loads its data.
    assert int(service["TimeoutStartSec"]) > 60


def test_backup_timer_runs_daily_at_two_utc_whatever_the_hosts_time_zone(tmp_path: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(units(tmp_path)["redis-backup.timer"])
    assert parser["Timer"]["OnCalendar"] == "*-*-* 02:00:00 UTC"
    assert parser["Timer"]["Persistent"] == "true"
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", parser["Timer"]["OnCalendar"]], capture_output=True, text=True
    )
    assert calendar.returncode == 0 and "Normalized form: *-*-* 02:00:00 UTC" in calendar.stdout


@pytest.mark.parametrize(
    ("given", "timer"),
    [("Mon..Fri 03:30", "Mon..Fri 03:30 UTC"), ("daily", "daily UTC"), ("*-*-* 01:00:00 UTC", "*-*-* 01:00:00 UTC")],
)
def test_a_stack_calendar_is_pinned_to_utc_once(given: str, timer: str) -> None:
    config = read_stack_config("prod")
    config["hosts"] = {**config["hosts"], "backup_on_calendar": given}
    settings = load_settings(config, "prod")
    assert backup_calendar(settings) == timer
    analyzed = subprocess.run(["systemd-analyze", "calendar", timer], capture_output=True, text=True)
    assert analyzed.returncode == 0 and "UTC" in analyzed.stdout, analyzed.stderr


def test_the_rehearsal_image_holds_every_package_the_install_script_installs() -> None:
    """The rehearsal's hosts have no route out: a package the install step adds must be baked
    into their image, or the rehearsal fails offline (as it did when monitoring added one)."""
    from rehearsal.hosts import PACKAGES

    for topology_kind in ("cluster", "sentinel"):
        settings = prod_settings(topology=topology_kind)
        _, plans, _ = rendered(settings)
        for plan in plans:
            script = render_install_script(settings, plan)
            installed = {
                package
                for line in script.splitlines()
                if line.startswith("packages=(") or line.startswith("packages+=(")
                for package in line.split("(", 1)[1].rstrip(")").split()
            }
            assert "redis-server" in installed, script
            assert installed <= set(PACKAGES), f"{plan.name}: not in the rehearsal image: {installed - set(PACKAGES)}"
