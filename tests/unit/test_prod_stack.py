"""The prod stack (Linux hosts over SSH) under Pulumi mocks, loaded as the language host does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cachelayer.config.hosts import load_hosts_settings
from cachelayer.config.settings import PASSWORD_KEYS, RedisSettings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError
from cachelayer.ops import health
from cachelayer.plan.topology import build_topology
from cachelayer.render.hosts import host_plans, node_paths, render_node_start, render_node_unit
from cachelayer.render.nodes import render_redis_conf
from cachelayer.render.rollout import rolling_plan
from support.machines import machine as hosts_machine
from support.program_harness import (
    FAKE_SECRETS,
    ProgramRun,
    Recorded,
    contains_plain,
    is_secret_value,
    run_program,
    unwrap,
)

COMMAND = "command:remote:Command"
MACHINES = [f"cache-{i}" for i in range(1, 7)]
PORTS = list(range(7000, 7006))
HOST_RESOURCES = (
    "install",
    "dirs",
    "admin-pass",
    "tls-ca",
    "tls-cert",
    "tls-key",
    "firewall-rules",
    "firewall-unit",
    "firewall",
    "sysctl",
    "thp-unit",
    "kernel",
    "backup-script",
    "backup-service-unit",
    "backup-timer-unit",
    "backup-timer",
    "health-check",
    "health-module",
    "health-plan",
    "rolling-restart-script",
    "apply-config",
)
# In the mocks a generated password is `generated-<resource name>-0123456789abcdef`.
GENERATED = [f"generated-redis-credentials-{key.replace('_', '-')}-0123456789abcdef" for key in PASSWORD_KEYS]


@pytest.fixture(scope="module")
def prod() -> ProgramRun:
    return run_program("prod")


def prod_config() -> dict[str, Any]:
    return read_stack_config("prod")


def with_redis(**changes: Any) -> dict[str, Any]:
    return {"redis": {**prod_config()["redis"], **changes}}


def with_hosts(**changes: Any) -> dict[str, Any]:
    return {"hosts": {**prod_config()["hosts"], **changes}}


def host_of(port: int) -> str:
    return MACHINES[port - 7000]  # prod: six machines, one node each


def inputs(run: ProgramRun, name: str) -> dict[str, Any]:
    return unwrap(run.named(name).inputs)


def commands(run: ProgramRun) -> list[Recorded]:
    return run.of_type(COMMAND)


def test_every_host_gets_install_files_firewall_kernel_backup_and_health_check(prod: ProgramRun) -> None:
    names = {r.name for r in commands(prod)}
    for machine in MACHINES:
        for label in HOST_RESOURCES:
            assert f"redis-{machine}-{label}" in names, f"missing redis-{machine}-{label}"
    for port in PORTS:
        for label in ("conf", "acl", "auth", "unit"):
            assert f"redis-{host_of(port)}-redis-{port}-{label}" in names, f"missing redis-{port} {label}"
        assert f"redis-redis-{port}-service" in names
        assert f"redis-redis-{port}-restart" in names
    assert "redis-bootstrap" in names
    assert len(prod.of_type("cachelayer:hosts:RedisHostsDeployment")) == 1
    # Every command is a child of the component (or of its TLS component).
    for resource in commands(prod):
        assert prod.parents[resource.name] == "redis", resource.name


def test_each_command_connects_to_its_own_host_as_the_ssh_user(prod: ProgramRun) -> None:
    for index, machine in enumerate(MACHINES):
        connection = inputs(prod, f"redis-{machine}-install")["connection"]
        assert connection["host"] == f"192.0.2.{11 + index}", machine
        assert connection["user"] == "deploy", machine
        assert connection["port"] == 22, machine
        assert connection["privateKey"] == FAKE_SECRETS["ssh_private_key"], machine
    assert inputs(prod, "redis-redis-7003-service")["connection"]["host"] == "192.0.2.14"


@pytest.mark.parametrize(
    ("resource", "path", "mode", "owner"),
    [
        ("redis-cache-1-redis-7000-conf", "/etc/redis/redis-7000.conf", "0640", "redis:redis"),
        ("redis-cache-1-redis-7000-acl", "/etc/redis/redis-7000.acl", "0640", "redis:redis"),
        ("redis-cache-1-redis-7000-auth", "/etc/redis/redis-7000-auth.conf", "0640", "redis:redis"),
        ("redis-cache-2-tls-key", "/etc/redis/tls/redis.key", "0640", "redis:redis"),
        ("redis-cache-2-tls-cert", "/etc/redis/tls/redis.crt", "0640", "redis:redis"),
        ("redis-cache-2-tls-ca", "/etc/redis/tls/ca.crt", "0640", "redis:redis"),
        ("redis-cache-1-admin-pass", "/etc/redis/admin.pass", "0600", "root:root"),
        ("redis-cache-1-redis-7000-unit", "/etc/systemd/system/redis-7000.service", "0644", "root:root"),
        ("redis-cache-3-backup-script", "/opt/redis/scripts/redis-backup.sh", "0750", "root:root"),
        ("redis-cache-3-health-check", "/opt/redis/scripts/health-check.sh", "0750", "root:root"),
        ("redis-cache-3-health-module", "/opt/redis/scripts/cachelayer_health.py", "0644", "root:root"),
        ("redis-cache-3-health-plan", "/etc/redis/health.json", "0644", "root:root"),
        ("redis-cache-3-rolling-restart-script", "/opt/redis/scripts/rolling-restart.sh", "0750", "root:root"),
        ("redis-cache-1-firewall-rules", "/etc/nftables.d/cachelayer-redis.nft", "0644", "root:root"),
        ("redis-cache-1-sysctl", "/etc/sysctl.d/60-cachelayer-redis.conf", "0644", "root:root"),
    ],
)
def test_files_are_written_from_stdin_with_owner_and_mode(
    prod: ProgramRun, resource: str, path: str, mode: str, owner: str
) -> None:
    create = inputs(prod, resource)["create"]
    assert create.startswith("sudo -n sh -c "), resource  # ssh_user deploy is not root
    assert f"chmod {mode}" in create and f"chown {owner}" in create, resource
    assert create.rstrip("'").endswith(f'mv -f "$tmp" {path}'), resource
    assert "cat > " in create, f"{resource}: the content must come from stdin"


def test_file_contents_are_the_rendered_artefacts(prod: ProgramRun) -> None:
    settings = load_settings(prod_config(), "prod")
    topology = build_topology(settings)
    node = topology.node(7004)
    conf = inputs(prod, "redis-cache-5-redis-7004-conf")["stdin"]
    assert conf == render_redis_conf(settings, topology, node, node_paths(node))
    assert "tls-port 7004" in conf and "cluster-announce-ip 192.0.2.15" in conf
    unit = inputs(prod, "redis-cache-5-redis-7004-unit")["stdin"]
    assert unit == render_node_unit(settings, topology, node)
    assert "ExecStart=/usr/bin/redis-server /etc/redis/redis-7004.conf" in unit
    rules = inputs(prod, "redis-cache-5-firewall-rules")["stdin"]
    assert "198.51.100.0/24" in rules and "192.0.2.11" in rules and "17005" in rules
    timer = inputs(prod, "redis-cache-5-backup-timer-unit")["stdin"]
    assert "OnCalendar=*-*-* 02:00:00 UTC\n" in timer
    assert 'RETENTION_DAYS="${REDIS_BACKUP_RETENTION_DAYS:-7}"' in inputs(prod, "redis-cache-5-backup-script")["stdin"]
    # The health check is health.py itself, over the whole deployment, cache-5's processes local.
    assert inputs(prod, "redis-cache-5-health-module")["stdin"] == Path(health.__file__).read_text()
    plan = json.loads(inputs(prod, "redis-cache-5-health-plan")["stdin"])
    assert [n["host"] + ":" + str(n["port"]) for n in plan["nodes"]] == [n.endpoint for n in topology.nodes]
    assert plan["local"] == ["redis-7004"] and plan["tls"] is True and plan["masters"] == 3


def test_services_start_only_on_create_and_a_changed_unit_is_only_reloaded(prod: ProgramRun) -> None:
    for port in PORTS:
        service = inputs(prod, f"redis-redis-{port}-service")
        assert service["create"].endswith(f"systemctl enable --now redis-{port}.service"), port
        assert service["update"].startswith("sudo -n systemctl daemon-reload # unit "), port
        # triggers would replace it: disable --now, enable --now, every node at once.
        assert "triggers" not in service, port
        assert service["delete"] == f"sudo -n systemctl disable --now redis-{port}.service", port
        restart = inputs(prod, f"redis-redis-{port}-restart")
        assert "restart" not in restart["create"].replace("no restart needed", ""), port
        assert restart["update"].startswith(f"sudo -n /opt/redis/scripts/rolling-restart.sh {port} # "), port
        # triggers would replace it, which runs `create` (an echo), never the restart.
        assert "triggers" not in restart, port


def test_config_files_come_before_the_service_and_services_before_cluster_create(prod: ProgramRun) -> None:
    for port in PORTS:
        host = host_of(port)
        deps = prod.depends_on[f"redis-redis-{port}-service"]
        for label in (f"redis-{port}-conf", f"redis-{port}-acl", f"redis-{port}-auth", f"redis-{port}-unit"):
            assert f"redis-{host}-{label}" in deps, f"redis-{port}-service must wait for {label}"
        for label in ("tls-ca", "tls-cert", "tls-key", "admin-pass", "firewall", "kernel", "dirs", "install"):
            assert f"redis-{host}-{label}" in deps, f"redis-{port}-service must wait for {label}"
        assert f"redis-{host}-dirs" in prod.depends_on[f"redis-{host}-redis-{port}-conf"]
        assert f"redis-{host}-install" in prod.depends_on[f"redis-{host}-dirs"]
    bootstrap_deps = prod.depends_on["redis-bootstrap"]
    assert {f"redis-redis-{p}-service" for p in PORTS} <= set(bootstrap_deps)


def test_cluster_is_created_once_from_the_first_host_with_the_password_from_the_host_file(prod: ProgramRun) -> None:
    bootstrap = prod.named("redis-bootstrap").inputs
    # pulumi-command fails a command whose env request sshd refuses (stock sshd: LANG, LC_* only).
    commands = [r for r in prod.resources if r.type == "command:remote:Command"]
    assert not [r.name for r in commands if "environment" in r.inputs]
    plain = unwrap(bootstrap)
    assert plain["connection"]["host"] == "192.0.2.11"
    assert "--cluster create" in plain["stdin"] and "--tls --cacert /etc/redis/tls/ca.crt" in plain["stdin"]
    assert "/etc/redis/admin.pass" in plain["create"] and plain["create"].endswith("exec bash -s'")
    assert plain["triggers"] == [f"192.0.2.{11 + i}:{7000 + i}" for i in range(6)]
    # The first host's admin.pass is there before: the bootstrap waits for its node's service.
    assert "redis-redis-7000-service" in prod.depends_on["redis-bootstrap"]
    assert f"redis-{MACHINES[0]}-admin-pass" in prod.depends_on["redis-redis-7000-service"]


def test_rolling_restart_steps_are_chained_replicas_first(prod: ProgramRun) -> None:
    settings = load_settings(prod_config(), "prod")
    plan = rolling_plan(build_topology(settings))
    assert [s.port for s in plan] == [7003, 7004, 7005, 7000, 7001, 7002]
    applies = {f"redis-{m}-apply-config" for m in MACHINES}
    for previous, step in zip((None, *plan), plan, strict=False):
        deps = set(prod.depends_on[f"redis-{step.name}-restart"])
        assert applies <= deps, f"{step.name} restart must follow every apply-config"
        if previous is not None:
            assert f"redis-{previous.name}-restart" in deps, f"{step.name} must wait for {previous.name}"
    for machine in MACHINES:
        apply_deps = prod.depends_on[f"redis-{machine}-apply-config"]
        assert "redis-bootstrap" in apply_deps and any(d.endswith("-conf") for d in apply_deps), machine


def test_no_secret_appears_in_plain_text_in_any_input(prod: ProgramRun) -> None:
    needles = {"ssh key": FAKE_SECRETS["ssh_private_key"], **{f"password {i}": p for i, p in enumerate(GENERATED)}}
    # The values must really be there (wrapped), or this test would check nothing. The app and
    # sentinel passwords reach a cluster's hosts only as hashes in the ACL file.
    everything = [unwrap(r.inputs) for r in prod.resources]
    for label in ("ssh key", "password 1", "password 2"):
        needle = needles[label]
        assert any(contains_plain(i, needle) for i in everything), f"{label} never reaches any resource"
    for resource in prod.resources:
        for label, needle in needles.items():
            assert not contains_plain(resource.inputs, needle), f"{resource.name} holds the {label} in plain text"


@pytest.mark.parametrize("label", ["redis-7000-acl", "redis-7000-auth", "admin-pass", "tls-key"])
def test_secret_files_have_secret_stdin_and_secret_outputs(prod: ProgramRun, label: str) -> None:
    name = f"redis-cache-1-{label}"
    assert is_secret_value(prod.named(name).inputs["stdin"]), name
    assert "stdin" in prod.additional_secret_outputs[name], name


def test_tls_material_has_a_ca_and_a_certificate_per_host_for_its_address(prod: ProgramRun) -> None:
    ca = prod.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert len(ca) == 1 and ca[0].inputs["isCaCertificate"] is True
    requests = {r.name: r.inputs for r in prod.of_type("tls:index/certRequest:CertRequest")}
    for index, machine in enumerate(MACHINES):
        assert requests[f"redis-tls-{machine}-csr"]["ipAddresses"] == [f"192.0.2.{11 + index}", "127.0.0.1"]
    for cert in prod.of_type("tls:index/locallySignedCert:LocallySignedCert"):
        assert {"server_auth", "client_auth"} <= set(cert.inputs["allowedUses"]), cert.name


def test_a_live_setting_change_rewrites_configs_without_restarting_any_node(prod: ProgramRun) -> None:
    changed = run_program("prod", config_overrides=with_redis(maxmemory="4gb"))
    for port in PORTS:
        host = host_of(port)
        assert "maxmemory 4gb" in inputs(changed, f"redis-{host}-redis-{port}-conf")["stdin"]
        for resource in (f"redis-redis-{port}-service", f"redis-redis-{port}-restart"):
            before, after = inputs(prod, resource), inputs(changed, resource)
            assert before == after, f"{resource} would run on a maxmemory change"
    for machine in MACHINES:
        assert (
            inputs(prod, f"redis-{machine}-apply-config")["triggers"]
            != inputs(changed, f"redis-{machine}-apply-config")["triggers"]
        ), machine
        assert "maxmemory 4gb" in inputs(changed, f"redis-{machine}-apply-config")["stdin"]


def test_a_restart_setting_change_triggers_the_restart_steps(prod: ProgramRun) -> None:
    changed = run_program("prod", config_overrides=with_redis(tls=False))
    for port in PORTS:
        before = inputs(prod, f"redis-redis-{port}-restart")
        after = inputs(changed, f"redis-redis-{port}-restart")
        # An update (not a replacement), so the rolling restart (`update`) is what runs.
        assert before["update"] != after["update"] and before["create"] == after["create"], port
        assert "triggers" not in after, port
    assert not changed.of_type("tls:index/privateKey:PrivateKey")


def test_sentinel_topology_writes_sentinel_conf_once_and_applies_changes_with_sentinel_set() -> None:
    run = run_program("prod", config_overrides=with_redis(topology="sentinel"))
    for index, port in enumerate((26379, 26380, 26381)):
        host = MACHINES[index]
        dist = run.named(f"redis-{host}-redis-sentinel-{port}-conf-dist").inputs
        assert is_secret_value(dist["stdin"]) and f"/etc/redis/redis-sentinel-{port}.conf.dist" in dist["create"]
        service = inputs(run, f"redis-redis-sentinel-{port}-service")
        assert f"[ -e /etc/redis/redis-sentinel-{port}.conf ] || install" in service["create"]
        assert service["create"].endswith(f"enable --now redis-sentinel-{port}.service")
        unit = inputs(run, f"redis-{host}-redis-sentinel-{port}-unit")["stdin"]
        assert f"ExecStart=/usr/bin/redis-server /etc/redis/redis-sentinel-{port}.conf --sentinel" in unit
        sentinel_set = inputs(run, f"redis-{host}-sentinel-set")
        assert sentinel_set["triggers"][:4] == [2, 5000, 60000, 1]
        assert "sentinel set redis-master-1 down-after-milliseconds 5000" in sentinel_set["stdin"]
        # The sentinel password it presents (auth-pass, sentinel-pass), as a secret, given to
        # redis-cli on stdin (-x), never as an argument; no other password.
        assert is_secret_value(run.named(f"redis-{host}-sentinel-set").inputs["stdin"])
        sentinel_password = GENERATED[PASSWORD_KEYS.index("sentinel_password")]
        assert f"SENTINEL_PASSWORD={sentinel_password}\n" in sentinel_set["stdin"]
        assert sentinel_set["stdin"].count(sentinel_password) == 1
        assert "present 26379 sentinel set redis-master-1 auth-pass\n" in sentinel_set["stdin"].replace(str(port), "26379")
        assert all(password not in sentinel_set["stdin"] for password in GENERATED if password != sentinel_password)
        # Users too (Sentinel keeps those of its first start otherwise), set by accept-credentials
        # before anything presents a password; hashes only, as a secret.
        accept = inputs(run, f"redis-{host}-accept-credentials")
        assert is_secret_value(run.named(f"redis-{host}-accept-credentials").inputs["stdin"])
        assert "acl setuser replication reset on '#" in accept["stdin"], accept["stdin"]
        assert all(password not in accept["stdin"] for password in GENERATED)
        assert f"redis-redis-sentinel-{port}-service" in run.depends_on["redis-bootstrap"]
    changed = run_program(
        "prod", config_overrides={**with_redis(topology="sentinel"), "sentinel": {"down_after_milliseconds": 8000}}
    )
    assert inputs(changed, "redis-cache-1-sentinel-set")["triggers"][:4] == [2, 8000, 60000, 1]
    # Before any node restarts: a restarted node asks the sentinels with the replication user.
    for node_port in PORTS:
        assert {f"redis-{m}-sentinel-set" for m in MACHINES[:3]} <= set(run.depends_on[f"redis-redis-{node_port}-restart"])
    # New passwords reach the sentinels: the users' hashes are in the accept step's script.
    rotated = run_program("prod", config_overrides={**with_redis(topology="sentinel"), "app_password": "a-new-app-password-0123"})
    assert inputs(rotated, "redis-cache-1-accept-credentials")["stdin"] != inputs(run, "redis-cache-1-accept-credentials")["stdin"]
    # A new sentinel password reaches auth-pass: the script's hash is part of the trigger.
    rotated = run_program(
        "prod", config_overrides={**with_redis(topology="sentinel"), "sentinel_password": "a-new-sentinel-password-0123"}
    )
    assert inputs(rotated, "redis-cache-1-sentinel-set")["triggers"][4] != inputs(run, "redis-cache-1-sentinel-set")["triggers"][4]
    # The conf template changes too, but only the .dist copy: the live file is Sentinel's own.
    assert (
        "[ -e /etc/redis/redis-sentinel-26379.conf ]" in inputs(changed, "redis-redis-sentinel-26379-service")["create"]
    )
    assert "26379" in inputs(run, "redis-cache-1-firewall-rules")["stdin"]


def test_sentinel_topology_nodes_start_through_their_uploaded_start_script() -> None:
    run = run_program("prod", config_overrides=with_redis(topology="sentinel"))
    settings = load_settings({**prod_config(), **with_redis(topology="sentinel")}, "prod")
    topology = build_topology(settings)
    for node in topology.nodes:
        host = host_of(node.port)
        start = inputs(run, f"redis-{host}-{node.name}-start")
        # Root's file (the redis user runs it but cannot change it); no secret in it.
        assert "chmod 0755" in start["create"] and "chown root:root" in start["create"]
        assert start["create"].rstrip("'").endswith(f'mv -f "$tmp" /etc/redis/{node.name}-start.sh')
        assert start["stdin"] == render_node_start(settings, topology, node)
        assert not any(contains_plain(run.named(f"redis-{host}-{node.name}-start").inputs, p) for p in GENERATED)
        unit = inputs(run, f"redis-{host}-{node.name}-unit")["stdin"]
        assert f"ExecStart=/bin/sh /etc/redis/{node.name}-start.sh" in unit
        assert f"redis-{host}-{node.name}-start" in run.depends_on[f"redis-{node.name}-service"]


def test_without_kernel_tuning_no_kernel_resources_and_root_needs_no_sudo() -> None:
    run = run_program("prod", config_overrides=with_hosts(kernel_tuning=False, ssh_user="root"))
    names = {r.name for r in commands(run)}
    assert not any(n.endswith(("-kernel", "-sysctl", "-thp-unit")) for n in names)
    assert "disable-thp" not in inputs(run, "redis-cache-1-redis-7000-unit")["stdin"]
    assert inputs(run, "redis-cache-1-redis-7000-conf")["create"].startswith("sh -c ")
    assert inputs(run, "redis-bootstrap")["create"].startswith("sh -c ")


# --- layout refusals (pure) -----------------------------------------------------------------


def machines(count: int = 3) -> list[dict[str, str]]:
    return [hosts_machine(f"m{i}", f"10.0.0.{i}") for i in range(1, count + 1)]


def test_default_placement_keeps_replicas_off_their_masters_machine() -> None:
    hosts = load_hosts_settings({"machines": machines(3)}, RedisSettings(target="hosts"))
    masters = hosts.placement[:3]
    for index, name in enumerate(hosts.placement[3:]):
        assert name != masters[index], f"replica {index + 3} shares {name} with its master"


def test_placement_with_a_replica_on_its_masters_machine_is_refused() -> None:
    with pytest.raises(SettingsError) as error:
        load_hosts_settings(
            {"machines": machines(3), "placement": ["m1", "m2", "m3", "m1", "m3", "m2"]}, RedisSettings(target="hosts")
        )
    assert error.value.key == "hosts.placement[3]"
    assert "same machine (m1)" in str(error.value)


def test_placement_naming_an_unknown_machine_is_refused() -> None:
    with pytest.raises(SettingsError) as error:
        load_hosts_settings(
            {"machines": machines(3), "placement": ["m1", "m2", "m3", "m2", "m9", "m1"]}, RedisSettings(target="hosts")
        )
    assert error.value.key == "hosts.placement[4]" and "'m9' is not a listed machine" in str(error.value)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"machines": [hosts_machine("m1", "10.0.0.300")]}, "hosts.machines[0].address"),
        ({"machines": [hosts_machine("m1", "cache.example.com")]}, "hosts.machines[0].address"),
        ({"machines": [hosts_machine("m1", "10.0.0.1", ssh_port=70000)]}, "hosts.machines[0].ssh_port"),
        ({"machines": [hosts_machine("m1", "10.0.0.1", ssh_host_key="AAAA")]}, "hosts.machines[0].ssh_host_key"),
        ({"machines": [hosts_machine("m1", "10.0.0.1", ssh_host_key="ssh-ed25519 not*base64")]}, "hosts.machines[0].ssh_host_key"),
        ({"machines": [{"name": "m1", "address": "10.0.0.1"}]}, "hosts.machines[0].ssh_host_key"),
        ({"app_networks": ["10.1.0.0/33"]}, "hosts.app_networks[0]"),
        ({"backup_retention_days": 0}, "hosts.backup_retention_days"),
        ({"backup_on_calendar": "daily\nExecStart=/bin/evil"}, "hosts.backup_on_calendar"),
        ({"machines": []}, "hosts.machines"),
    ],
)
def test_bad_hosts_settings_are_refused_naming_the_key(change: dict[str, Any], key: str) -> None:
    raw = {"machines": machines(6), **change}
    with pytest.raises(SettingsError) as error:
        load_hosts_settings(raw, RedisSettings(target="hosts"))
    assert error.value.key == key


def test_host_plans_follow_the_placement() -> None:
    config = {**prod_config(), "hosts": {"machines": machines(3)}}
    settings = load_settings(config, "prod")
    plans = host_plans(settings, build_topology(settings))
    assert [(p.name, p.ports) for p in plans] == [("m1", (7000, 7005)), ("m2", (7001, 7003)), ("m3", (7002, 7004))]
