"""The policy pack's validators (policy/cachelayer_policy.py): one compliant and one violating
case per rule, and every stack file's resources, recorded under mocks, pass the whole pack."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cachelayer_policy as pack
import pytest
from pulumi_policy.deserialize import deserialize_properties

from cachelayer.cdn.rules import BYPASS_PARAMETERS
from cachelayer.render.conf import ConfError, acl_users, conf_values
from conftest import STACKS, stack_run
from support.program_harness import ProgramRun, run_program


@dataclass
class Opts:
    protect: bool = False
    additional_secret_outputs: list[str] = field(default_factory=list)


@dataclass
class Args:
    """Shaped like pulumi_policy's ResourceValidationArgs / PolicyResource."""

    resource_type: str
    props: dict[str, Any]
    name: str = "r"
    opts: Opts = field(default_factory=Opts)
    config: dict[str, Any] = field(default_factory=dict)
    urn: str = "urn:pulumi:test::cachelayer::r::r"

    def get_config(self) -> dict[str, Any]:
        return self.config


@dataclass
class Stack:
    resources: Sequence[Args]


def violations(validate: Callable[..., None], args: Any) -> list[str]:
    found: list[str] = []
    validate(args, lambda message, urn=None: found.append(message))
    return found


def as_analyzed(run: ProgramRun) -> list[Args]:
    """The recorded resources as the analyzer hands them over: wire names, secrets unwrapped."""
    return [
        Args(r.type, deserialize_properties(copy.deepcopy(r.inputs)), r.name,
             Opts(run.protect.get(r.name, False), run.additional_secret_outputs.get(r.name, [])),
             urn=f"urn:pulumi:{run.stack}::cachelayer::{r.type}::{r.name}")
        for r in run.resources
    ]


def all_violations(resources: list[Args]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for rule in pack.POLICIES:
        if rule.stack:
            found[rule.name] = violations(rule.validate, Stack(resources))
        else:
            found[rule.name] = [v for r in resources for v in violations(rule.validate, r)]
    return {name: v for name, v in found.items() if v}


SENTINEL = [("dev", {"redis": {"topology": "sentinel", "target": "docker"}}),
            ("prod", {"redis": {"topology": "sentinel", "target": "hosts", "tls": True}})]


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_passes_the_pack(stack: str) -> None:
    resources = as_analyzed(stack_run(stack))
    assert all_violations(resources) == {}
    kinds = {r.resource_type for r in resources}
    assert kinds & {pack.CONTAINER, pack.REMOTE_COMMAND}, "the run declared Redis: the rules had something to check"


@pytest.mark.parametrize(("stack", "overrides"), SENTINEL, ids=["dev-sentinel", "prod-sentinel"])
def test_sentinel_topology_passes_the_pack(stack: str, overrides: dict[str, Any]) -> None:
    assert all_violations(as_analyzed(run_program(stack, overrides))) == {}


def readable_conf(text: str) -> dict[str, str]:
    try:
        return conf_values(text)
    except ConfError:
        return {}  # a script, not a config


def test_the_pack_sees_the_programs_acls_and_tls() -> None:
    """The stack-file test above is not vacuous: the rules find their subject in the prod run."""
    resources = as_analyzed(stack_run("prod"))
    acls = [t for r in resources for t in pack.acl_contents(r) if acl_users(t).get("app")]
    assert len(acls) >= 6
    confs = [r for r in resources if "tls-port" in readable_conf(str(r.props.get("stdin")))]
    assert len(confs) == 6, [r.name for r in confs]
    shape = pack.redis_shape(resources)
    assert shape is not None and shape.masters == 3


def test_a_dev_volume_without_protect_is_refused() -> None:
    run = stack_run("dev")
    resources = as_analyzed(run)
    volume = next(r for r in resources if r.resource_type == pack.VOLUME)
    assert volume.opts.protect, "the component protects its data volumes"
    volume.opts.protect = False
    assert list(all_violations(resources)) == ["data-volumes-protected"]


# ------------------------------------------------------------------------ one case per rule
def container(ip: str | None) -> Args:
    port: dict[str, Any] = {"internal": 7000.0, "external": 7000.0}
    if ip is not None:
        port["ip"] = ip
    return Args(pack.CONTAINER, {"ports": [port]})


def test_docker_ports_loopback_only() -> None:
    assert violations(pack.docker_ports_loopback_only, container("127.0.0.1")) == []
    assert violations(pack.docker_ports_loopback_only, container("0.0.0.0"))
    assert violations(pack.docker_ports_loopback_only, container(None)), "no ip means every interface"


def test_volumes_protected() -> None:
    assert violations(pack.volumes_protected, Args(pack.VOLUME, {}, opts=Opts(protect=True))) == []
    assert violations(pack.volumes_protected, Args(pack.VOLUME, {}))


def test_no_data_removal_on_delete() -> None:
    ok = Args(pack.REMOTE_COMMAND, {"delete": "sudo -n systemctl disable --now redis-7000.service"})
    bad = Args(pack.REMOTE_COMMAND, {"delete": "sudo -n rm -rf /var/lib/redis/7000"})
    assert violations(pack.no_data_removal_on_delete, ok) == []
    assert violations(pack.no_data_removal_on_delete, bad)


def test_hosts_tls_on() -> None:
    tls = "# managed\nport 0\ntls-port 7000\ncluster-enabled yes\ntls-cluster yes\n"
    assert violations(pack.hosts_tls_on, Args(pack.REMOTE_COMMAND, {"stdin": tls})) == []
    assert violations(pack.hosts_tls_on, Args(pack.REMOTE_COMMAND, {"stdin": "port 7000\n"}))
    assert violations(pack.hosts_tls_on, Args(pack.REMOTE_COMMAND, {"stdin": tls.replace("tls-cluster yes", "")}))
    assert violations(pack.hosts_tls_on, Args(pack.REMOTE_COMMAND, {"stdin": "#!/bin/sh\necho hi\n"})) == []


def test_hosts_tls_on_reads_a_repeated_directive_as_redis_does() -> None:
    """The last `port` line is the one redis-server listens on; the pack used to read the first."""
    plain_after_tls = "port 0\ntls-port 7000\nport 7000\n"
    assert violations(pack.hosts_tls_on, Args(pack.REMOTE_COMMAND, {"stdin": plain_after_tls}))
    tls_after_plain = "port 7000\ntls-port 7000\nport 0\n"
    assert violations(pack.hosts_tls_on, Args(pack.REMOTE_COMMAND, {"stdin": tls_after_plain})) == []


APP_OK = "user default off\nuser app on #x ~* &* -@all +@read +@write -@admin -@dangerous +cluster|slots +info\n"


@pytest.mark.parametrize("acl", [
    APP_OK.replace("user default off", "user default on nopass ~* +@all"),
    APP_OK.replace("user default off\n", ""),
    APP_OK.replace(" -@admin -@dangerous", ""),
    APP_OK.replace("+info", "+flushall"),
    APP_OK.replace("+info", "+client|kill"),
    APP_OK.replace("-@all", "+@all"),
])
def test_acl_rules_refuse(acl: str) -> None:
    upload = Args(pack.CONTAINER, {"uploads": [{"file": "/usr/local/etc/redis/redis-7000.acl", "content": acl}]})
    assert violations(pack.acl_default_off_app_least_privilege, upload), acl


def test_an_acl_declaring_a_user_twice_is_refused() -> None:
    """Redis refuses a file that declares a user twice; the pack used to merge the two lines."""
    twice = APP_OK + "user default on nopass\n"
    assert violations(pack.acl_default_off_app_least_privilege, Args(pack.REMOTE_COMMAND, {"stdin": twice})) == [
        "r: Redis would refuse this ACL (line 3: user default is declared twice: Redis refuses the file)"
    ]


def test_acl_rules_accept_the_allowlist() -> None:
    shipped = Args(pack.REMOTE_COMMAND, {"stdin": APP_OK})
    assert violations(pack.acl_default_off_app_least_privilege, shipped) == []
    sentinel = "user default off\nuser app on #x &* +ping +sentinel|get-master-addr-by-name\n"
    assert violations(pack.acl_default_off_app_least_privilege, Args(pack.REMOTE_COMMAND, {"stdin": sentinel})) == []


def remote(props: dict[str, Any], secret_outputs: list[str] | None = None) -> Args:
    base = {"connection": {"host": "192.0.2.11", "user": "deploy", "privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----"},
            "create": "sudo -n sh -c 'exec bash -s'"}
    return Args(pack.REMOTE_COMMAND, {**base, **props}, opts=Opts(additional_secret_outputs=secret_outputs or []))


def test_ssh_credentials_not_plain() -> None:
    acl = "user app on #" + "a" * 64 + " ~*\n"
    auth = 'masterauth "hunter2-but-longer"\n'
    assert violations(pack.ssh_credentials_not_plain, remote({"stdin": auth}))
    assert violations(pack.ssh_credentials_not_plain, remote({"stdin": "# masterauth comes from the auth file\n"})) == []
    assert violations(pack.ssh_credentials_not_plain, remote({"stdin": acl}, ["stdin"])) == []
    assert violations(pack.ssh_credentials_not_plain, remote({"environment": {"REDISCLI_AUTH": "x"}}, ["environment"])) == []
    assert violations(pack.ssh_credentials_not_plain, remote({"stdin": acl}))
    assert violations(pack.ssh_credentials_not_plain, remote({"environment": {"REDISCLI_AUTH": "x"}}))
    password = {"connection": {"host": "192.0.2.11", "user": "deploy", "password": "hunter2"}}
    assert violations(pack.ssh_credentials_not_plain, remote(password))
    assert violations(pack.ssh_credentials_not_plain, remote({"create": "redis-cli -a hunter2 ping"}))
    assert violations(pack.ssh_credentials_not_plain, remote({"create": "echo '-----BEGIN RSA PRIVATE KEY-----' > k"}))


def test_ssh_host_key_pinned() -> None:
    pinned = {"connection": {"host": "192.0.2.11", "user": "deploy", "hostKey": "ssh-ed25519 AAAAC3Nza"}}
    assert violations(pack.ssh_host_key_pinned, remote(pinned)) == []
    found = violations(pack.ssh_host_key_pinned, remote({"connection": {"host": "192.0.2.11", "user": "deploy"}}))
    assert found and "192.0.2.11" in found[0] and "ssh_host_key" in found[0]


def ruleset(*rules: dict[str, Any]) -> Args:
    return Args(pack.RULESET, {"rules": list(rules)})


WIRE_BYPASS = {"cache": False}
STATIC = {"ref": "static", "expression": '(http.request.uri.path.extension in {"css" "js"}) and '
          '(not (lower(http.request.uri.path) contains "/api"))',
          "actionParameters": {"cache": True, "edgeTtl": {"mode": "override_origin", "default": 31536000.0}}}
BYPASS = {"ref": "bypass", "expression": '(lower(http.request.uri.path) contains "/api")', "actionParameters": WIRE_BYPASS}


def test_bypass_rule_last() -> None:
    assert dict(BYPASS_PARAMETERS) == WIRE_BYPASS
    assert violations(pack.bypass_rule_last, ruleset(STATIC, BYPASS)) == []
    assert violations(pack.bypass_rule_last, ruleset(BYPASS, STATIC))
    resetting = {**BYPASS, "actionParameters": {"cache": False, "edgeTtl": {"mode": "respect_origin"}}}
    found = violations(pack.bypass_rule_last, ruleset(STATIC, resetting))
    assert found and "edgeTtl" in found[0], "settings next to cache: false are documented for cacheable rules only"


def test_no_cacheable_rule_matches_private_paths() -> None:
    assert violations(pack.no_cacheable_rule_matches_private_paths, ruleset(STATIC, BYPASS)) == []
    naive = {**STATIC, "expression": 'http.request.uri.path.extension in {"css" "js"}'}
    found = violations(pack.no_cacheable_rule_matches_private_paths, ruleset(naive, BYPASS))
    assert any("/api/v1/me/profile.css" in v for v in found), found
    case = {**STATIC, "expression": '(http.request.uri.path.extension in {"css" "js"}) and '
            '(not (http.request.uri.path contains "/api"))'}  # no lower(): /API/... slips through
    assert violations(pack.no_cacheable_rule_matches_private_paths, ruleset(case, BYPASS))
    unreadable = {**STATIC, "expression": 'http.request.uri.query matches "x"'}
    assert violations(pack.no_cacheable_rule_matches_private_paths, ruleset(unreadable, BYPASS))


def test_expression_parser_reads_every_rule_of_the_program() -> None:
    """The parser agrees with the core's own matcher on the real rules, for public paths too."""
    from cachelayer.cdn.rules import Request, build_cache_rules
    from cachelayer.cdn.settings import CdnSettings

    rules = build_cache_rules(CdnSettings(session_cookie="lp_session", static_host="static.example.com"))
    paths = ["/static/app.css", "/video/a.mp4", "/api/v1/courses/1", "/api/v1/me/x.css", "/x", "/API/V1/ME/a.js",
             "/static/..;/api/v1/session/x.js", "/catalog/trailer.mp4", *pack.private_paths()]
    for rule in rules:
        matcher = pack.parse_expression(rule.expression)
        for path in paths:
            for request in (Request(path), Request(path, cookie="lp_session=1"), Request(path, host="static.example.com")):
                assert matcher(request) == rule.condition.matches(request), (rule.ref, request)


def test_ttls_within_plan() -> None:
    assert violations(pack.ttls_within_plan, ruleset(STATIC, BYPASS)) == []
    too_long = {**STATIC, "actionParameters": {"cache": True, "edgeTtl": {"mode": "override_origin", "default": 4e7}}}
    assert violations(pack.ttls_within_plan, ruleset(too_long, BYPASS))
    short = {**STATIC, "actionParameters": {"cache": True, "edgeTtl": {"mode": "override_origin", "default": 300.0}}}
    assert violations(pack.ttls_within_plan, ruleset(short, BYPASS)) == []
    def on_free(args: Any, report: Callable[..., None]) -> None:
        pack.ttls_within_plan(args, report, "free")

    assert violations(on_free, ruleset(short, BYPASS)), "free plan: 2 hours at least at the edge"
    short_browser = {**STATIC, "actionParameters": {"cache": True, "browserTtl": {"mode": "override_origin", "default": 1.0}}}
    assert violations(on_free, ruleset(short_browser, BYPASS)) == [], "browser TTL: 1 s on every plan"
    zero_browser = {**STATIC, "actionParameters": {"cache": True, "browserTtl": {"mode": "override_origin", "default": 0.0}}}
    assert violations(pack.ttls_within_plan, ruleset(zero_browser, BYPASS))
    assert violations(pack.ttls_of_configured_plan, Args(pack.RULESET, {"rules": [short]}, config={"plan": "pro"}))
    status = {**STATIC, "actionParameters": {"cache": True, "edgeTtl": {"mode": "override_origin", "default": 60.0,
                                                                         "statusCodeTtls": [{"value": -2.0}]}}}
    assert violations(pack.ttls_within_plan, ruleset(status, BYPASS))
    zone = Args(pack.ZONE_SETTING, {"settingId": "browser_cache_ttl", "value": 14400.0})
    assert violations(pack.ttls_within_plan, zone) == []
    zone.props["value"] = 14401.0  # an integer in the current API, not a fixed list
    assert violations(pack.ttls_within_plan, zone) == []
    zone.props["value"] = 31_536_001.0
    assert violations(pack.ttls_within_plan, zone)


def bootstrap(endpoints: list[str], replicas: int) -> Args:
    script = f"cluster_change --cluster create {' '.join(endpoints)} \\\n        --cluster-replicas {replicas} --cluster-yes\n"
    return Args(pack.REMOTE_COMMAND, {"stdin": script})


def test_at_least_three_masters() -> None:
    six = [f"192.0.2.{10 + i}:7000" for i in range(6)]
    assert violations(pack.at_least_three_masters, Stack([bootstrap(six, 1)])) == []
    assert violations(pack.at_least_three_masters, Stack([bootstrap(six, 2)])), "2 masters"
    monitors = Args(pack.REMOTE_COMMAND, {"stdin": "sentinel monitor redis-master-1 192.0.2.11 7000 2\n"})
    assert violations(pack.at_least_three_masters, Stack([monitors]))


def test_replicas_off_their_masters_host() -> None:
    spread = [f"192.0.2.{10 + i}:7000" for i in range(6)]
    assert violations(pack.replicas_off_their_masters_host, Stack([bootstrap(spread, 1)])) == []
    one_host = [f"192.0.2.10:{7000 + i}" for i in range(6)]
    assert violations(pack.replicas_off_their_masters_host, Stack([bootstrap(one_host, 1)]))
    monitors = "".join(f"sentinel monitor redis-master-{i} 192.0.2.1{i} 7000 2\n" for i in (1, 2, 3))
    start = {"stdin": 'PLANNED="192.0.2.11 7000"\n', "connection": {"host": "192.0.2.12"}}
    same = {"stdin": 'PLANNED="192.0.2.11 7000"\n', "connection": {"host": "192.0.2.11"}}
    conf = Args(pack.REMOTE_COMMAND, {"stdin": monitors})
    assert violations(pack.replicas_off_their_masters_host, Stack([conf, Args(pack.REMOTE_COMMAND, start)])) == []
    assert violations(pack.replicas_off_their_masters_host, Stack([conf, Args(pack.REMOTE_COMMAND, same)]))


def test_policy_table_names_are_unique_and_main_builds_only_the_pack() -> None:
    names = [rule.name for rule in pack.POLICIES]
    assert len(names) == len(set(names)) == 13
    assert sum(not rule.mandatory for rule in pack.POLICIES) == 2
    text = (Path(pack.__file__).parent / "__main__.py").read_text()
    assert "def " not in text, "validators live in cachelayer_policy.py, not in __main__.py"
