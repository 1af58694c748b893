"""Rendered files: redis.conf, the ACL file, auth.conf, sentinel.conf and the bootstrap script.

The unit tests parse what the templates produce; the integration tests (marked `integration`)
load every rendered file into a real redis-server, form the topology with the rendered bootstrap
script and check the running values against the settings.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import redis
import redis.cluster
import redis.exceptions
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from cachelayer.config.settings import Settings, load_settings
from cachelayer.plan.acl_policy import ALLOWED_CATEGORIES, DENIED_CATEGORIES
from cachelayer.plan.topology import Node, build_topology
from cachelayer.ports import PortsTakenError, free_port_block
from cachelayer.render import conf
from cachelayer.render import nodes as render
from cachelayer.render.nodes import (
    USERS,
    Passwords,
    Paths,
    docker_paths,
    docker_sentinel_paths,
    host_paths,
    password_hash,
    render_auth_conf,
    render_bootstrap_script,
    render_redis_conf,
    render_sentinel_conf,
    render_users_acl,
)
from cachelayer.sandbox.local import LocalSandbox
from support.tls_certificates import make_test_certificates

# Distinctive passwords, with the characters a config file must escape.
PASSWORDS = Passwords(
    app="app-Pw-3k9Xq2LmZ7vR",
    admin="admin-Pw-8Jd4Tn6YbW1s",
    replication="repl-Pw-$dollar#hash!-5Hc",
    sentinel="sent-Pw-Q0r&7Uv|Ez2;`x",
    monitor="mon-Pw-7Gh2Kp9Wq4Zt",
)
ALL_PASSWORDS = (PASSWORDS.app, PASSWORDS.admin, PASSWORDS.replication, PASSWORDS.sentinel, PASSWORDS.monitor)
INSTALL_HINT = "run scripts/test.sh (the README's test command), which installs it"


def settings_for(config: dict[str, Any] | None = None, **redis_overrides: Any) -> Settings:
    config = dict(config or {})
    config["redis"] = {**config.get("redis", {}), **redis_overrides}
    return load_settings(config, "test")


def parse_conf(text: str) -> dict[str, list[str]]:
    """redis.conf as directive -> arguments. A directive given twice is an error (the last one
    would silently win)."""
    directives: dict[str, list[str]] = {}
    for line in config_lines(text):
        name, *args = line
        assert name not in directives, f"directive {name!r} appears twice"
        directives[name] = args
    return directives


def config_lines(text: str) -> list[list[str]]:
    """Every directive line split into words the way Redis does (quotes honoured)."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        lines.append(shlex.split(stripped))
    return lines


def conf_for(settings: Settings, port: int, paths: Paths | None = None) -> tuple[Node, dict[str, list[str]]]:
    topology = build_topology(settings)
    node = topology.node(port)
    return node, parse_conf(render_redis_conf(settings, topology, node, paths or docker_paths(node.name)))


# ---------------------------------------------------------------------------------------------
# redis.conf


@pytest.mark.parametrize("port", range(7000, 7006))
def test_cluster_node_directives(port: int) -> None:
    settings = settings_for()
    paths = docker_paths(f"redis-{port}")
    node, conf = conf_for(settings, port, paths)
    assert conf["port"] == [str(port)]
    assert conf["bind"] == ["0.0.0.0"]
    assert conf["cluster-enabled"] == ["yes"]
    assert conf["cluster-config-file"] == [f"nodes-{port}.conf"]
    assert conf["cluster-node-timeout"] == ["5000"]
    assert conf["cluster-announce-ip"] == [node.address] == [f"172.30.70.{10 + port - 7000}"]
    assert conf["cluster-announce-port"] == [str(port)]
    assert conf["cluster-announce-bus-port"] == [str(port + 10000)]
    assert conf["maxmemory"] == ["2gb"]
    assert conf["maxmemory-policy"] == ["allkeys-lru"]
    assert conf["save"] == ["3600", "1", "300", "100", "60", "10000"]
    assert conf["appendonly"] == ["yes"]
    assert conf["appendfsync"] == ["everysec"]
    assert conf["slowlog-log-slower-than"] == ["10000"]
    assert conf["slowlog-max-len"] == ["128"]
    assert conf["latency-monitor-threshold"] == ["100"]
    assert conf["busy-reply-threshold"] == ["5000"]
    assert conf["tcp-keepalive"] == ["300"]
    assert conf["aclfile"] == [paths.acl_file] == [f"/usr/local/etc/redis/redis-{port}.acl"]
    assert conf["include"] == [paths.auth_file] == [f"/usr/local/etc/redis/redis-{port}-auth.conf"]
    assert conf["masteruser"] == [USERS.replication]
    assert conf["dir"] == ["/data"]
    assert "replicaof" not in conf  # cluster replicas are assigned by --cluster create
    assert "masterauth" not in conf  # it lives in the included auth file
    assert not any(name.startswith("tls-") for name in conf)


def test_configured_values_reach_redis_conf() -> None:
    settings = settings_for(
        base_port=7400,
        bus_port_offset=1000,
        maxmemory="512mb",
        maxmemory_policy="volatile-lfu",
        appendonly=False,
        appendfsync="always",
        slowlog_log_slower_than=2500,
        slowlog_max_len=64,
        latency_monitor_threshold=0,
        cluster_node_timeout=15000,
        tcp_keepalive=60,
        busy_reply_threshold=250,
    )
    _, conf = conf_for(settings, 7401)
    assert conf["port"] == ["7401"]
    assert conf["cluster-announce-port"] == ["7401"]
    assert conf["cluster-announce-bus-port"] == ["8401"]
    assert conf["maxmemory"] == ["512mb"]
    assert conf["maxmemory-policy"] == ["volatile-lfu"]
    assert conf["appendonly"] == ["no"]
    assert conf["appendfsync"] == ["always"]
    assert conf["slowlog-log-slower-than"] == ["2500"]
    assert conf["slowlog-max-len"] == ["64"]
    assert conf["latency-monitor-threshold"] == ["0"]
    assert conf["cluster-node-timeout"] == ["15000"]
    assert conf["tcp-keepalive"] == ["60"]
    assert conf["busy-reply-threshold"] == ["250"]


def test_host_paths_reach_redis_conf() -> None:
    settings = settings_for()
    paths = host_paths("redis-7002", 7002)
    _, conf = conf_for(settings, 7002, paths)
    assert conf["dir"] == ["/var/lib/redis/7002"]
    assert conf["logfile"] == ["/var/log/redis/redis-7002.log"]
    assert conf["supervised"] == ["systemd"]
    assert conf["aclfile"] == ["/etc/redis/redis-7002.acl"]
    assert conf["include"] == ["/etc/redis/redis-7002-auth.conf"]


@pytest.mark.parametrize("port", range(7000, 7006))
def test_sentinel_topology_node_directives(port: int) -> None:
    settings = settings_for(topology="sentinel")
    topology = build_topology(settings)
    node = topology.node(port)
    conf = parse_conf(render_redis_conf(settings, topology, node, docker_paths(node.name)))
    assert not [name for name in conf if name.startswith("cluster-")], f"{node.name}: cluster directives"
    assert conf["port"] == [str(port)]
    assert conf["replica-announce-ip"] == [node.address]
    assert conf["replica-announce-port"] == [str(port)]
    assert conf["masteruser"] == [USERS.replication]
    # The role is the start script's to pass (--replicaof): a file cannot know who is master now.
    assert "replicaof" not in conf, node.name


@pytest.mark.parametrize("port", [7000, 7004])
def test_tls_cluster_directives(port: int) -> None:
    settings = settings_for(tls=True)
    paths = docker_paths(f"redis-{port}")
    _, conf = conf_for(settings, port, paths)
    assert conf["port"] == ["0"]
    assert conf["tls-port"] == [str(port)]
    assert conf["tls-cluster"] == ["yes"]
    assert conf["tls-replication"] == ["yes"]
    assert conf["tls-cert-file"] == [paths.tls_cert_file]
    assert conf["tls-key-file"] == [paths.tls_key_file]
    assert conf["tls-ca-cert-file"] == [paths.tls_ca_file]
    assert conf["cluster-announce-tls-port"] == [str(port)]
    assert "cluster-announce-port" not in conf  # the plain port is 0
    assert conf["cluster-announce-bus-port"] == [str(port + 10000)]


def test_tls_sentinel_topology_has_no_tls_cluster() -> None:
    settings = settings_for(topology="sentinel", tls=True)
    _, conf = conf_for(settings, 7003)
    assert conf["port"] == ["0"]
    assert conf["tls-port"] == ["7003"]
    assert conf["tls-replication"] == ["yes"]
    assert "tls-cluster" not in conf


@pytest.mark.parametrize("topology_kind", ["cluster", "sentinel"])
@pytest.mark.parametrize("tls", [False, True])
def test_no_password_in_redis_conf(topology_kind: str, tls: bool) -> None:
    settings = settings_for(topology=topology_kind, tls=tls)
    topology = build_topology(settings)
    for node in topology.nodes:
        text = render_redis_conf(settings, topology, node, docker_paths(node.name))
        for password in ALL_PASSWORDS:
            assert password not in text, f"{node.name}: a password is in redis.conf"
        directives = parse_conf(text)
        assert "masterauth" not in directives and "requirepass" not in directives, node.name


def test_every_artefact_says_it_is_managed_by_pulumi() -> None:
    settings = settings_for(topology="sentinel")
    topology = build_topology(settings)
    node = topology.nodes[0]
    files = {
        "redis.conf": render_redis_conf(settings, topology, node, docker_paths(node.name)),
        "auth.conf": render_auth_conf(node.name, PASSWORDS),
        "sentinel.conf": render_sentinel_conf(
            settings, topology, topology.sentinels[0], docker_sentinel_paths("s"), PASSWORDS
        ),
        "bootstrap.sh": render_bootstrap_script(settings, topology, "/tls"),
    }
    for name, text in files.items():
        assert "Managed by Pulumi" in text, name


# ---------------------------------------------------------------------------------------------
# users.acl and auth.conf


def acl_users(text: str) -> dict[str, list[str]]:
    return conf.acl_users(text, acl_file=True)  # refuses what Redis refuses: other lines, a user twice


def test_acl_file_holds_only_hashes() -> None:
    text = render_users_acl(settings_for(), PASSWORDS)
    for password in ALL_PASSWORDS:
        assert password not in text
    users = acl_users(text)
    assert users["default"] == ["off"]
    expected = {
        "app": PASSWORDS.app,
        "admin": PASSWORDS.admin,
        "replication": PASSWORDS.replication,
    }
    for user, password in expected.items():
        rules = users[user]
        secrets = [r for r in rules if r[0] in "#>"]
        assert secrets == ["#" + hashlib.sha256(password.encode()).hexdigest()], user
        assert "on" in rules, user
    assert password_hash("x") == hashlib.sha256(b"x").hexdigest()
    assert "nopass" not in text


def test_app_user_is_an_allowlist_that_keeps_cluster_discovery() -> None:
    rules = acl_users(render_users_acl(settings_for(), PASSWORDS))["app"]
    # keys and channels as before, then everything refused before anything is allowed
    assert rules[2:5] == ["~*", "&*", "-@all"]
    assert "+@all" not in rules
    for category in ALLOWED_CATEGORIES:
        assert f"+@{category}" in rules, category
    # ACL rules apply in order: the denied categories come after the allowed ones, and the
    # explicit re-allows (cluster discovery, INFO) after the denied categories
    last_allowed = max(rules.index(f"+@{c}") for c in ALLOWED_CATEGORIES)
    first_denied = min(rules.index(f"-@{c}") for c in DENIED_CATEGORIES)
    assert last_allowed < first_denied, rules
    for command in ("+cluster|slots", "+cluster|shards", "+cluster|nodes", "+cluster|info", "+info"):
        assert rules.index(command) > first_denied, command
    assert "+eval" not in rules and "-@scripting" in rules  # scripting is off by default
    # nothing in the line is a plain +command of the old denylist
    assert not {"+flushall", "+config", "+keys", "+cluster", "+migrate", "+sync"} & set(rules)


def test_app_scripting_allows_eval_but_never_script_flush_or_kill() -> None:
    rules = acl_users(render_users_acl(settings_for(app_scripting=True), PASSWORDS))["app"]
    for command in ("+eval", "+evalsha", "+eval_ro", "+evalsha_ro", "+script|load", "+script|exists"):
        assert rules.index(command) > rules.index("-@scripting"), command
    assert "+script|flush" not in rules and "+script|kill" not in rules
    assert "+script" not in rules and "+function" not in rules and "+fcall" not in rules


def test_admin_and_replication_rights() -> None:
    users = acl_users(render_users_acl(settings_for(), PASSWORDS))
    assert users["admin"][-3:] == ["~*", "&*", "+@all"]
    assert [r for r in users["replication"] if r.startswith("+")] == ["+psync", "+replconf", "+ping"]
    assert "sentinel" not in users  # only the sentinel topology has a sentinel user


def test_sentinel_topology_acl() -> None:
    settings = settings_for(topology="sentinel")
    users = acl_users(render_users_acl(settings, PASSWORDS))
    # one policy for both topologies: CLUSTER discovery just errs on non-cluster nodes
    assert users["app"] == acl_users(render_users_acl(settings_for(), PASSWORDS))["app"]
    sentinel_rules = users["sentinel"]
    assert "#" + password_hash(PASSWORDS.sentinel) in sentinel_rules
    for command in ("+replicaof", "+slaveof", "+config|rewrite", "+info", "+role", "+publish", "+subscribe"):
        assert command in sentinel_rules, command


def test_custom_disabled_commands_are_denied_after_the_allowlist() -> None:
    assert settings_for().redis.disabled_commands == ()
    settings = settings_for(disabled_commands=["FLUSHALL", "scan"])
    rules = acl_users(render_users_acl(settings, PASSWORDS))["app"]
    # last, so they win over the categories (SCAN is in @keyspace)
    assert rules[-2:] == ["-flushall", "-scan"]


def test_auth_conf_holds_the_quoted_replication_password() -> None:
    text = render_auth_conf("redis-7003", PASSWORDS)
    assert config_lines(text) == [["masterauth", PASSWORDS.replication]]
    assert PASSWORDS.app not in text and PASSWORDS.admin not in text


# ---------------------------------------------------------------------------------------------
# sentinel.conf


def test_sentinel_conf_monitors_the_three_groups() -> None:
    settings = settings_for(topology="sentinel")
    topology = build_topology(settings)
    sentinel = topology.sentinels[1]
    text = render_sentinel_conf(settings, topology, sentinel, docker_sentinel_paths(sentinel.name), PASSWORDS)
    lines = config_lines(text)
    monitors = [line[2:] for line in lines if line[:2] == ["sentinel", "monitor"]]
    assert monitors == [
        ["redis-master-1", "172.30.70.10", "7000", "2"],
        ["redis-master-2", "172.30.70.11", "7001", "2"],
        ["redis-master-3", "172.30.70.12", "7002", "2"],
    ]
    assert ["port", "26380"] in lines
    assert ["sentinel", "announce-ip", "172.30.70.17"] in lines
    assert ["sentinel", "announce-port", "26380"] in lines
    assert ["sentinel", "sentinel-user", USERS.sentinel] in lines
    assert ["sentinel", "sentinel-pass", PASSWORDS.sentinel] in lines
    assert ["user", "default", "off"] in lines
    for group in ("redis-master-1", "redis-master-2", "redis-master-3"):
        assert ["sentinel", "auth-user", group, USERS.sentinel] in lines
        assert ["sentinel", "auth-pass", group, PASSWORDS.sentinel] in lines
        assert ["sentinel", "down-after-milliseconds", group, "5000"] in lines
        assert ["sentinel", "failover-timeout", group, "60000"] in lines
        assert ["sentinel", "parallel-syncs", group, "1"] in lines
    for password in (PASSWORDS.app, PASSWORDS.admin, PASSWORDS.replication):
        assert password not in text


def test_sentinel_conf_follows_quorum_and_tls() -> None:
    settings = load_settings(
        {"redis": {"topology": "sentinel", "tls": True}, "sentinel": {"quorum": 3, "down_after_milliseconds": 3000}},
        "t",
    )
    topology = build_topology(settings)
    paths = docker_sentinel_paths(topology.sentinels[0].name)
    lines = config_lines(render_sentinel_conf(settings, topology, topology.sentinels[0], paths, PASSWORDS))
    assert [line[-1] for line in lines if line[:2] == ["sentinel", "monitor"]] == ["3", "3", "3"]
    assert ["sentinel", "down-after-milliseconds", "redis-master-2", "3000"] in lines
    assert ["port", "0"] in lines
    assert ["tls-port", "26379"] in lines
    assert ["tls-replication", "yes"] in lines
    assert ["tls-ca-cert-file", paths.tls_ca_file] in lines


# ---------------------------------------------------------------------------------------------
# bootstrap.sh


def joined_script_lines(script: str) -> list[str]:
    return script.replace("\\\n", " ").splitlines()


def test_bootstrap_creates_the_cluster_with_the_exact_argv() -> None:
    settings = settings_for()
    topology = build_topology(settings)
    script = render_bootstrap_script(settings, topology, "/usr/local/etc/redis/tls")
    creates = [shlex.split(line) for line in joined_script_lines(script) if "--cluster create" in line]
    assert creates == [
        [
            "cluster_change",
            "--cluster",
            "create",
            "172.30.70.10:7000",
            "172.30.70.11:7001",
            "172.30.70.12:7002",
            "172.30.70.13:7003",
            "172.30.70.14:7004",
            "172.30.70.15:7005",
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]
    ]
    clis = [line.strip() for line in script.splitlines() if line.strip().startswith("redis-cli ")]
    assert clis == ['redis-cli --user admin "$@"']
    assert "REDISCLI_AUTH:?" in script


def test_bootstrap_is_done_only_when_every_node_reports_cluster_state_ok_and_knows_every_node() -> None:
    settings = settings_for(node_count=8)
    script = render_bootstrap_script(settings, build_topology(settings), "/tls")
    node_check = script[script.index("node_converged() {") : script.index("wait_cluster_ok() {")]
    assert "cluster info" in node_check and "^(cluster_state:ok|cluster_known_nodes:8)$" in node_check
    assert '= 2 ]' in node_check, "both lines must be present"
    converged = script[script.index("\nconverged() {") : script.index("until converged; do")]
    assert "cli --cluster check 172.30.70.10:7000" in converged
    for index in range(8):
        assert f"node_converged 172.30.70.{10 + index} {7000 + index} || return 1" in converged, index


def test_cluster_changes_are_bounded_in_time_and_say_what_to_check() -> None:
    """redis-cli waits forever for a cluster whose bus it cannot reach: the script bounds it."""
    settings = settings_for(tls=True)
    script = render_bootstrap_script(settings, build_topology(settings), "/etc/redis/tls", wait_seconds=30)
    body = script[script.index("cluster_change() {") : script.index("\n}\n", script.index("cluster_change() {"))]
    assert "if ! timeout 60 redis-cli --user admin --tls --cacert /etc/redis/tls/ca.crt" in body, body
    assert "cluster bus port" in body and "exit 1" in body
    lines = joined_script_lines(script)
    changes = {line.split()[2] for line in lines if line.strip().startswith("cluster_change ")}
    assert changes == {"create", "add-node"}
    unbounded = [line for line in lines if re.search(r"\bcli --cluster (create|add-node|rebalance|fix)", line)]
    assert unbounded == []


def test_moving_slots_has_no_short_bound_and_a_rerun_finishes_an_interrupted_scale_out() -> None:
    """A big rebalance killed by a 2 × wait_seconds bound leaves a slot open mid-move: data moves
    run unbounded, and the rebalance runs whenever the cluster shows an unfinished one."""
    settings = settings_for(node_count=8)
    script = render_bootstrap_script(settings, build_topology(settings), "/tls", wait_seconds=30)
    body = script[script.index("move_data() {") : script.index("\n}\n", script.index("move_data() {"))]
    assert "timeout" not in body and "if ! redis-cli --user admin" in body, body
    lines = joined_script_lines(script)
    moves = {line.split()[2] for line in lines if line.strip().startswith("move_data ")}
    assert moves == {"fix", "rebalance"}
    assert 'if [ -n "$new_masters" ] || [ -n "$(empty_masters)" ] || slots_open || slots_uneven; then' in script


def test_scale_out_attaches_each_new_replica_to_a_named_master_every_node_knows() -> None:
    settings = settings_for(node_count=8)
    script = render_bootstrap_script(settings, build_topology(settings), "/tls")
    scale_out = script[script.index("members=$(nodes_of") : script.index("short_of_replicas() {")]
    waits = scale_out.index('wait_knows_master "${member%:*}" "${member##*:}" "$master"')
    attach = scale_out.index('--cluster-slave --cluster-master-id "$master_id"')
    assert waits < attach, "replicas are attached only after every member knows every new master"
    assert "least_replicated_master" not in script, "no re-read of a view gossip may not have reached"
    # Done only when each serving master has its replica(s).
    converged = script[script.index("\nconverged() {") : script.index("until converged; do")]
    assert '[ -z "$(short_of_replicas)" ] || return 1' in converged


def test_bootstrap_passes_the_tls_flags() -> None:
    settings = settings_for(tls=True)
    script = render_bootstrap_script(settings, build_topology(settings), "/etc/redis/tls")
    clis = [shlex.split(line) for line in script.splitlines() if line.strip().startswith("redis-cli ")]
    assert clis == [
        [
            "redis-cli",
            "--user",
            "admin",
            "--tls",
            "--cacert",
            "/etc/redis/tls/ca.crt",
            "--cert",
            "/etc/redis/tls/redis.crt",
            "--key",
            "/etc/redis/tls/redis.key",
            "$@",
        ]
    ]


def test_bootstrap_waits_for_sentinel_quorum_and_healthy_replicas_of_every_group() -> None:
    settings = settings_for(topology="sentinel")
    topology = build_topology(settings)
    script = render_bootstrap_script(settings, topology, "/tls")
    assert "--cluster" not in script
    assert 'sentinel ckquorum "$3"' in script and 'sentinel replicas "$3"' in script
    assert '[ "$(healthy_replicas "$1" "$2" "$3")" -ge 1 ]' in script
    for sentinel in topology.sentinels:
        for group in ("redis-master-1", "redis-master-2", "redis-master-3"):
            assert f"until sentinel_ready {sentinel.address} {sentinel.port} {group}; do" in script, (sentinel.port, group)


@pytest.mark.parametrize("topology_kind", ["cluster", "sentinel"])
@pytest.mark.parametrize("tls", [False, True])
def test_bootstrap_script_is_valid_sh(topology_kind: str, tls: bool, tmp_path: Path) -> None:
    settings = settings_for(topology=topology_kind, tls=tls)
    script = render_bootstrap_script(settings, build_topology(settings), "/etc/redis/tls")
    for password in ALL_PASSWORDS:
        assert password not in script
    assert " -a " not in script and "--pass" not in script, "passwords go through REDISCLI_AUTH only"
    path = tmp_path / "bootstrap.sh"
    path.write_text(script)
    checked = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail(f"shellcheck is not installed: {INSTALL_HINT}")
    linted = subprocess.run([shellcheck, "-s", "sh", str(path)], capture_output=True, text=True, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr


# ---------------------------------------------------------------------------------------------
# StrictUndefined


def test_an_undefined_variable_is_an_error() -> None:
    environment = render._environment
    assert environment.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError, match="nope"):
        environment.from_string("port {{ nope }}\n").render()


def test_a_misspelt_attribute_is_an_error() -> None:
    node = build_topology(settings_for()).nodes[0]
    with pytest.raises(jinja2.UndefinedError, match="prot"):
        render._environment.from_string("port {{ node.prot }}\n").render(node=node)


def test_a_template_missing_its_context_is_an_error() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render._environment.get_template("redis.conf.j2").render(stack="test")


# ---------------------------------------------------------------------------------------------
# Integration: every rendered file loaded by a real redis-server


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: {INSTALL_HINT}")
    return path


def free_base_port(preferred: int) -> int:
    """A base port near `preferred` whose client, bus and sentinel ports are all free."""
    try:
        return free_port_block(preferred, preferred + 100, offsets=(10000,), step=10, extra=(7, 8, 9), shuffle=False)
    except PortsTakenError:
        pytest.fail(f"no free ports near {preferred}")


def connect(
    sandbox: LocalSandbox, port: int, user: str | None = USERS.admin, password: str | None = PASSWORDS.admin
) -> redis.Redis:
    return sandbox.client(port, user, password, retry=Retry(NoBackoff(), 0))  # a refusal is the answer, no retry


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[..., LocalSandbox]]:
    """Every process of a topology started from its rendered files (the sandbox writes them as
    the program uploads them), before the bootstrap runs."""
    sandboxes: list[LocalSandbox] = []

    def start(topology_kind: str, preferred_port: int, tls: bool = False, **redis_overrides: Any) -> LocalSandbox:
        require("redis-server")
        require("redis-cli")
        base = free_base_port(preferred_port)
        config: dict[str, Any] = {
            "redis": {"topology": topology_kind, "base_port": base, "tls": tls, **redis_overrides},
            "sentinel": {"ports": [base + 7, base + 8, base + 9]},
            # Given, so the tests know them: with characters a config file must escape.
            "app_password": PASSWORDS.app,
            "admin_password": PASSWORDS.admin,
            "replication_password": PASSWORDS.replication,
            "sentinel_password": PASSWORDS.sentinel,
        }
        settings = load_settings(config, "itest")
        tls_dir = make_test_certificates(tmp_path / "certs") if tls else None
        sandbox = LocalSandbox(settings, tmp_path / "sandbox", config=config, wait_seconds=30, tls_dir=tls_dir)
        sandboxes.append(sandbox)
        sandbox.start()
        return sandbox

    yield start
    for sandbox in sandboxes:
        sandbox.down()


def assert_running_values(deployment: LocalSandbox, node: Node) -> None:
    redis_settings = deployment.settings.redis
    client = connect(deployment, node.port)
    expected = {
        "maxmemory": str(redis_settings.maxmemory_bytes),
        "maxmemory-policy": redis_settings.maxmemory_policy,
        "appendonly": "yes" if redis_settings.appendonly else "no",
        "appendfsync": redis_settings.appendfsync,
        "save": " ".join(f"{s} {c}" for s, c in redis_settings.save),
        "slowlog-log-slower-than": str(redis_settings.slowlog_log_slower_than),
        "slowlog-max-len": str(redis_settings.slowlog_max_len),
        "latency-monitor-threshold": str(redis_settings.latency_monitor_threshold),
        "busy-reply-threshold": str(redis_settings.busy_reply_threshold),
        "tcp-keepalive": str(redis_settings.tcp_keepalive),
        "masteruser": USERS.replication,
        "masterauth": PASSWORDS.replication,  # the include was read and unquoted
    }
    if redis_settings.tls:
        expected |= {"port": "0", "tls-port": str(node.port)}
    else:
        expected["port"] = str(node.port)
    if deployment.topology.kind == "cluster":
        expected |= {
            "cluster-enabled": "yes",
            "cluster-node-timeout": str(redis_settings.cluster_node_timeout),
            "cluster-announce-ip": node.address,
            "cluster-announce-bus-port": str(node.bus_port),
        }
        expected["cluster-announce-tls-port" if redis_settings.tls else "cluster-announce-port"] = str(node.port)
        if redis_settings.tls:
            expected["tls-cluster"] = "yes"
    else:
        expected["cluster-enabled"] = "no"
        expected["replica-announce-ip"] = node.address
    actual = {name: client.config_get(name).get(name) for name in expected}
    assert actual == expected, node.name
    # the ACL file was loaded: the default user is off, the app user has its password
    with pytest.raises(redis.exceptions.AuthenticationError):
        connect(deployment, node.port, None, None).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        connect(deployment, node.port, USERS.app, PASSWORDS.admin).ping()
    assert connect(deployment, node.port, USERS.app, PASSWORDS.app).ping(), node.name


def assert_app_user_rights(deployment: LocalSandbox, node: Node) -> None:
    app = connect(deployment, node.port, USERS.app, PASSWORDS.app)
    for command in (("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("SAVE",), ("ACL", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*command)


@pytest.mark.integration
def test_cluster_topology_runs_from_the_rendered_files(deploy: Callable[..., LocalSandbox]) -> None:
    deployment = deploy("cluster", 6600)
    for node in deployment.topology.nodes:
        assert_running_values(deployment, node)
        assert_app_user_rights(deployment, node)
    deployment.bootstrap()
    first = deployment.topology.nodes[0]
    # when the script says done, every node serves: no CLUSTERDOWN window left for clients
    for node in deployment.topology.nodes:
        info = connect(deployment, node.port).cluster("info")
        assert info["cluster_state"] == "ok", f"{node.name}: {info}"
        assert int(info["cluster_known_nodes"]) == 6, node.name
        assert int(info["cluster_size"]) == 3, node.name
    roles = sorted(connect(deployment, n.port).execute_command("ROLE")[0] for n in deployment.topology.nodes)
    assert roles == ["master"] * 3 + ["slave"] * 3
    # the app user can find and use the cluster, but not manage it
    app = redis.cluster.RedisCluster(
        host="127.0.0.1", port=first.port, username=USERS.app, password=PASSWORDS.app, decode_responses=True
    )
    try:
        for index in range(20):
            app.set(f"key-{index}", str(index))
        assert [app.get(f"key-{index}") for index in range(20)] == [str(i) for i in range(20)]
    finally:
        app.close()
    raw_app = connect(deployment, first.port, USERS.app, PASSWORDS.app)
    assert raw_app.execute_command("CLUSTER", "KEYSLOT", "key-1") == key_slot(b"key-1")
    assert isinstance(raw_app.execute_command("CLUSTER", "SLOTS"), list)
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw_app.execute_command("CLUSTER", "RESET")
    # running the bootstrap again leaves the cluster alone
    again = deployment.bootstrap()
    assert "cluster ok: 3 masters, 3 replicas" in again


def wait_until(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def replication_up(deployment: LocalSandbox, node: Node) -> bool:
    info = connect(deployment, node.port).info("replication")
    return info.get("master_link_status") == "up"


@pytest.mark.integration
def test_sentinel_topology_runs_from_the_rendered_files(deploy: Callable[..., LocalSandbox]) -> None:
    deployment = deploy("sentinel", 6700)
    topology = deployment.topology
    for node in topology.nodes:
        assert_running_values(deployment, node)
        assert_app_user_rights(deployment, node)
    # replicas authenticate as the replication user with the escaped password from auth.conf
    for replica in topology.replicas:
        wait_until(lambda replica=replica: replication_up(deployment, replica), f"{replica.name} to sync")  # type: ignore[misc]
        info = connect(deployment, replica.port).info("replication")
        assert info["role"] == "slave"
        assert int(info["master_port"]) == topology.master_of(replica).port, replica.name
    for sentinel in topology.sentinels:
        masters: dict[str, dict[str, Any]] = connect(deployment, sentinel.port).sentinel_masters()  # type: ignore[assignment]
        assert sorted(masters) == ["redis-master-1", "redis-master-2", "redis-master-3"], sentinel.name
        for master in topology.masters:
            state = masters[master.group]
            assert (state["ip"], int(state["port"]), int(state["quorum"])) == ("127.0.0.1", master.port, 2)
        # the app user may ask where the master is, and nothing more
        app = connect(deployment, sentinel.port, USERS.app, PASSWORDS.app)
        address = app.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "redis-master-2")
        assert list(address) == ["127.0.0.1", str(topology.masters[1].port)]
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command("SENTINEL", "FAILOVER", "redis-master-1")
    done = deployment.bootstrap()
    assert "sentinel ok: 3 groups watched by 3 sentinels" in done


@pytest.mark.integration
@pytest.mark.parametrize(("topology_kind", "preferred_port"), [("cluster", 6400), ("sentinel", 6500)])
def test_tls_topology_runs_from_the_rendered_files(
    deploy: Callable[..., LocalSandbox], topology_kind: str, preferred_port: int
) -> None:
    deployment = deploy(
        topology_kind, preferred_port, tls=True, maxmemory="256mb", maxmemory_policy="allkeys-lfu", appendfsync="always"
    )
    assert deployment.tls_dir is not None
    for node in deployment.topology.nodes:
        assert_running_values(deployment, node)
    # the client port speaks TLS only
    plain = redis.Redis(
        host="127.0.0.1", port=deployment.topology.nodes[0].port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    done = deployment.bootstrap()
    if topology_kind == "cluster":
        assert "cluster ok" in done
        for node in deployment.topology.nodes:
            info = connect(deployment, node.port).cluster("info")
            assert info["cluster_state"] == "ok", f"{node.name}: {info}"
    else:
        for replica in deployment.topology.replicas:
            wait_until(lambda replica=replica: replication_up(deployment, replica), f"{replica.name} to sync over TLS")  # type: ignore[misc]
        assert "sentinel ok" in done
