"""The cachelayer policy pack's validators: plain functions of (args, report_violation), so tests
call them with recorded resources. `__main__.py` only builds the PolicyPack (constructing one
starts a gRPC server). Rules and why: docs/delivery.md.

The analyzer receives secret inputs already unwrapped, so "is it secret" is judged from the
resource options (`additional_secret_outputs`) and from what a value looks like.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cachelayer.cdn.rules import BYPASS_PARAMETERS, Request
from cachelayer.cdn.settings import BROWSER_TTL_MINIMUM, EDGE_TTL_MINIMUM, YEAR, CdnSettings
from cachelayer.config.siblings import zone_owners
from cachelayer.plan.acl_policy import verdicts
from cachelayer.render.conf import ConfError, acl_users, conf_values

ReportViolation = Callable[..., None]  # (message, urn=None)

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
REMOTE_COMMAND = "command:remote:Command"
RULESET = "cloudflare:index/ruleset:Ruleset"
ZONE_SETTING = "cloudflare:index/zoneSetting:ZoneSetting"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_PASSWORD_ON_COMMAND_LINE = re.compile(r"redis-cli\b[^\n|;&]*\s(-a|--pass)\s")
_ACL_HASH = re.compile(r"#[0-9a-f]{64}\b")
_PASSWORD_DIRECTIVE = re.compile(r"^\s*(masterauth|requirepass|sentinel auth-pass)\s+\S", re.M)


class Options(Protocol):
    @property
    def protect(self) -> bool: ...
    @property
    def additional_secret_outputs(self) -> Sequence[str]: ...


class ResourceArgs(Protocol):
    """What pulumi_policy.ResourceValidationArgs (and PolicyResource) give a validator."""

    @property
    def resource_type(self) -> str: ...
    @property
    def props(self) -> Mapping[str, Any]: ...
    @property
    def name(self) -> str: ...
    @property
    def opts(self) -> Options: ...
    @property
    def urn(self) -> str: ...


class StackArgs(Protocol):
    @property
    def resources(self) -> Sequence[ResourceArgs]: ...


# ----------------------------------------------------------------------------- Redis on Docker
def docker_ports_loopback_only(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """A container publishes its Redis ports on loopback only: the dev stack is not a service."""
    if args.resource_type != CONTAINER:
        return
    for port in args.props.get("ports") or []:
        ip = port.get("ip") or "0.0.0.0"  # Docker's default: every interface
        if ip not in LOOPBACK:
            report_violation(f"{args.name}: port {_int(port.get('external'))} is published on {ip}; use 127.0.0.1")


def volumes_protected(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """A volume holds a node's RDB and AOF: `protect` so no replace or destroy drops it silently."""
    if args.resource_type == VOLUME and not args.opts.protect:
        report_violation(f"{args.name}: a data volume without `protect`")


def no_data_removal_on_delete(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """On hosts the data lives in /var/lib/redis: no command's delete step may remove it."""
    if args.resource_type != REMOTE_COMMAND:
        return
    delete = str(args.props.get("delete") or "")
    if re.search(r"\brm\b[^\n]*(/var/lib/redis|/var/backups/redis)", delete):
        report_violation(f"{args.name}: its delete command removes Redis data: {delete[:120]}")


# ------------------------------------------------------------------------- Redis on the hosts
def hosts_tls_on(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Every redis.conf or sentinel.conf shipped to a host listens on TLS only (port 0)."""
    if args.resource_type != REMOTE_COMMAND:
        return
    try:
        conf = conf_values(str(args.props.get("stdin") or ""))
    except ConfError:
        return  # not a Redis config (a script), or one redis-server refuses to start with
    if "port" not in conf:
        return  # not a Redis config file
    if conf["port"] != "0" or conf.get("tls-port", "0") == "0":
        report_violation(f"{args.name}: a Redis config with plain-text port {conf['port']} and no TLS port")
    elif "cluster-enabled" in conf and conf.get("tls-cluster") != "yes":
        report_violation(f"{args.name}: TLS on but the cluster bus in plain text (tls-cluster yes)")


# ---------------------------------------------------------------------------------------- ACLs
def acl_contents(args: ResourceArgs) -> Iterable[str]:
    """Texts that carry ACL user lines: container uploads and files written over SSH."""
    if args.resource_type == CONTAINER:
        yield from (str(u.get("content") or "") for u in args.props.get("uploads") or [])
    elif args.resource_type == REMOTE_COMMAND:
        if "/etc/haproxy/" in str(args.props.get("create") or ""):
            return  # HAProxy's config: its `user haproxy` line names the process's user, not a Redis ACL
        yield str(args.props.get("stdin") or "")


def _state(rules: Sequence[str]) -> str:
    """on/off as Redis reads the rules: the last one wins; a new user is off."""
    return next((r for r in reversed(rules) if r in ("on", "off")), "off")


def app_rule_problems(rules: Sequence[str]) -> list[str]:
    """What the app user may do that acl_policy refuses it (docs/security.md)."""
    allowed = verdicts(scripting=True)
    problems = []
    denied_after: set[str] = set()
    for rule in reversed(rules):  # later rules win: a category denied after a grant stays denied
        if rule in ("allcommands", "+@all", "+@dangerous", "+@admin"):
            if rule == "+@all" and "-@all" in rules[rules.index(rule) + 1:]:
                continue
            problems.append(f"grants {rule}")
        elif rule.startswith("-@"):
            denied_after.add(rule)
        elif rule.startswith("+@") and not {"-@dangerous", "-@admin"} <= denied_after:
            problems.append(f"grants {rule} without -@dangerous and -@admin after it")
        elif rule.startswith("+") and not rule.startswith("+@"):
            command = rule[1:].lower()  # acl_policy's keys: `get`, `cluster|slots`
            if not allowed.get(command, False):
                problems.append(f"allows {command.upper()}, which the allowlist refuses")
    return problems


def acl_default_off_app_least_privilege(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """In every ACL (node ACL files, sentinel configs) the default user is off; on the nodes the
    app user holds only what cachelayer.plan.acl_policy allows."""
    for text in acl_contents(args):
        try:
            users = acl_users(text)
        except ConfError as error:
            report_violation(f"{args.name}: Redis would refuse this ACL ({error})")
            continue
        if not users:
            continue
        if _state(users.get("default", [])) != "off" or "default" not in users:
            report_violation(f"{args.name}: an ACL that does not turn the default user off")
        app = users.get("app")
        if app and any(r.startswith("~") for r in app):  # key patterns: a node's ACL, not a sentinel's
            for problem in app_rule_problems(app):
                report_violation(f"{args.name}: the app user {problem}")


# --------------------------------------------------------------------- credentials in plain view
def ssh_credentials_not_plain(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """SSH with a key from secret config only; no key, password or ACL hash in a field that is not
    stored as a secret; no password on a redis-cli command line."""
    if args.resource_type != REMOTE_COMMAND:
        return
    props, secret_outputs = args.props, set(args.opts.additional_secret_outputs or [])
    connection = props.get("connection") or {}
    if connection.get("password"):
        report_violation(f"{args.name}: SSH password authentication; use a key (cachelayer:ssh_private_key)")
    for field in ("create", "update", "delete"):
        text = str(props.get(field) or "")
        if _PRIVATE_KEY.search(text):
            report_violation(f"{args.name}: a private key in its {field} command")
        if _PASSWORD_ON_COMMAND_LINE.search(text):
            report_violation(f"{args.name}: a password on a redis-cli command line in {field}; use REDISCLI_AUTH")
    if props.get("environment") and "environment" not in secret_outputs:
        report_violation(f"{args.name}: an environment (REDISCLI_AUTH) not marked as a secret output")
    stdin = str(props.get("stdin") or "")
    credentials = _ACL_HASH.search(stdin) or _PRIVATE_KEY.search(stdin) or _PASSWORD_DIRECTIVE.search(stdin)
    if credentials and "stdin" not in secret_outputs:
        report_violation(f"{args.name}: stdin holds credentials but is not marked as a secret output")


def ssh_host_key_pinned(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Every SSH connection checks the server's host key: ACLs, admin.pass and the TLS key go
    to that server only, never to whatever answers at its address."""
    if args.resource_type != REMOTE_COMMAND:
        return
    connection = args.props.get("connection") or {}
    if not str(connection.get("hostKey") or "").strip():
        report_violation(
            f"{args.name}: SSH to {connection.get('host', '?')} without a pinned host key "
            "(hosts.machines[].ssh_host_key)"
        )


# ------------------------------------------------------------------------------------ Cloudflare
def _rules(args: ResourceArgs) -> list[Mapping[str, Any]]:
    return [r for r in args.props.get("rules") or [] if r.get("enabled", True)]


def bypass_rule_last(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """The last cache rule bypasses (so it wins `cache` wherever it overlaps) and sends nothing but
    `cache: false`: Cloudflare documents the other settings for cacheable rules only."""
    if args.resource_type != RULESET:
        return
    rules = _rules(args)
    if not rules:
        return
    last = rules[-1].get("actionParameters") or {}
    if last.get("cache") is not False:
        report_violation(f"{args.name}: the last rule ({rules[-1].get('ref')}) is not the bypass")
        return
    extra = sorted(set(last) - set(BYPASS_PARAMETERS))
    if extra:
        report_violation(f"{args.name}: the bypass rule also sends {', '.join(extra)}, documented only for cacheable rules")


def private_paths(settings: CdnSettings | None = None) -> list[str]:
    """Non-public API paths, in the disguises a cache-deception attack uses."""
    s = settings or CdnSettings()
    roots = [p.rstrip("/") for p in s.session_api_prefixes] + [p.rstrip("/") + "/internal" for p in s.api_prefixes]
    paths = []
    for root in roots:
        paths += [f"{root}/x", f"{root}/profile.css", f"{root}/clip.mp4", f"{root.upper()}/X.JS",
                  f"{root};a=b/x.css", f"{root}%2fx.png", f"/static/..;{root}/x.js", f"/static{root}/x.css",
                  f"/video{root}/x.mp4", f"{root}//x.woff2", f"/static/../{root.lstrip('/')}/x.css"]
    return paths


def no_cacheable_rule_matches_private_paths(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """No rule that caches can match a session or non-public API path, in any disguise."""
    if args.resource_type != RULESET:
        return
    for rule in _rules(args):
        if (rule.get("actionParameters") or {}).get("cache") is not True:
            continue
        try:
            condition = parse_expression(str(rule.get("expression", "")))
        except ValueError as error:
            report_violation(f"{args.name}: rule {rule.get('ref')}: cannot check its expression ({error})")
            continue
        for path in private_paths():
            for cookie in ("", "lp_session=1"):
                if condition(Request(path, cookie=cookie)):
                    report_violation(f"{args.name}: cacheable rule {rule.get('ref')} matches the private path {path}")
                    break


def ttls_within_plan(args: ResourceArgs, report_violation: ReportViolation, plan: str = "business") -> None:
    """Rule edge TTLs between the plan's minimum and a year, browser TTLs between 1 s and a year;
    status TTLs -1..a year; the zone browser TTL an integer 0..a year."""
    zone_browser_ttl = args.resource_type == ZONE_SETTING and args.props.get("settingId") == "browser_cache_ttl"
    if zone_browser_ttl and not 0 <= _int(args.props.get("value")) <= YEAR:
        report_violation(f"{args.name}: browser_cache_ttl {args.props.get('value')} is not a value Cloudflare accepts")
    if args.resource_type != RULESET:
        return
    for rule in _rules(args):
        params, ref = rule.get("actionParameters") or {}, rule.get("ref")
        for key, minimum in (("edgeTtl", EDGE_TTL_MINIMUM[plan]), ("browserTtl", BROWSER_TTL_MINIMUM)):
            ttl = params.get(key) or {}
            if ttl.get("mode") == "override_origin" and not minimum <= _int(ttl.get("default")) <= YEAR:
                report_violation(f"{args.name}: rule {ref} {key} {_int(ttl.get('default'))} s is outside "
                                 f"{minimum}..{YEAR} s ({plan} plan)")
        for status in (params.get("edgeTtl") or {}).get("statusCodeTtls") or []:
            if not -1 <= _int(status.get("value")) <= YEAR:
                report_violation(f"{args.name}: rule {ref} status TTL {_int(status.get('value'))} outside -1..{YEAR}")


# ------------------------------------------------------------------------ advisory, stack-wide
@dataclass(frozen=True)
class Shape:
    masters: int
    pairs: list[tuple[str, str]]  # (replica's host address, its master's address), where known


def redis_shape(resources: Sequence[ResourceArgs]) -> Shape | None:
    """Masters and replica placement, read from the bootstrap script and the sentinel configs."""
    texts: list[str] = []
    for r in resources:
        texts += list(acl_contents(r))  # every file content the stack ships
        if r.resource_type == "command:local:Command":
            texts.append(str(r.props.get("stdin") or ""))
    monitors = {m.group(1): m.group(2) for t in texts for m in re.finditer(r"^sentinel monitor (\S+) (\S+) \d+", t, re.M)}
    if monitors:
        pairs = []
        for r in resources:
            start = str(r.props.get("stdin") or "") if r.resource_type == REMOTE_COMMAND else ""
            planned = re.search(r'^PLANNED="(\S+) \d+"', start, re.M)
            host = (r.props.get("connection") or {}).get("host")
            if planned and host:
                pairs.append((str(host), planned.group(1)))
        return Shape(len(monitors), pairs)
    for text in texts:
        create = re.search(r"--cluster create((?: \S+:\d+)+) \\\n\s*--cluster-replicas (\d+)", text)
        if create:
            endpoints = create.group(1).split()
            return Shape(len(endpoints) // (int(create.group(2)) + 1), _cluster_pairs(endpoints, int(create.group(2))))
    return None


def _cluster_pairs(endpoints: list[str], replicas: int) -> list[tuple[str, str]]:
    """redis-cli --cluster create cannot keep a replica off its master's host when there are
    fewer distinct addresses than copies of a shard: report one such pair then."""
    addresses = {e.rsplit(":", 1)[0] for e in endpoints}
    if len(addresses) < replicas + 1:
        address = sorted(addresses)[0]
        return [(address, address)]
    return []


def at_least_three_masters(args: StackArgs, report_violation: ReportViolation) -> None:
    shape = redis_shape(args.resources)
    if shape is not None and shape.masters < 3:
        report_violation(f"{shape.masters} master(s): Redis Cluster needs 3 to keep a majority after a failure")


def replicas_off_their_masters_host(args: StackArgs, report_violation: ReportViolation) -> None:
    shape = redis_shape(args.resources)
    for host, master in shape.pairs if shape else []:
        if host == master:
            report_violation(f"a replica on {host} runs on the same host as its master: one machine loses the shard")


# ------------------------------------------------------------------- one stack per Cloudflare zone
# The analyzer is handed one stack's resources, never another stack's, so it cannot see a second
# region claiming the same zone. Which stack manages which zone is read from the project's
# committed stack files instead (Pulumi.<stack>.yaml, beside policy/): the reviewed record of the
# stacks' config, and the very claims the program itself refuses to share
# (cachelayer.config.siblings). The stack under preview is the one in its resources' URNs
# (urn:pulumi:<stack>::<project>::<type>::<name>). The pack runs from the checkout
# (`--policy-pack policy`, as the workflows run it); a copy published to Pulumi Cloud carries no
# stack files and finds no other owner, and the program's own check still refuses. docs/regions.md.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def stack_of_urn(urn: str) -> str:
    return urn.removeprefix("urn:pulumi:").partition("::")[0]


def one_stack_per_zone(args: StackArgs, report_violation: ReportViolation, root: Path = PROJECT_ROOT) -> None:
    """A Cloudflare zone this stack's resources configure is named by no other stack file's cdn.zone_id."""
    zones: dict[str, ResourceArgs] = {}
    for resource in args.resources:
        zone = resource.props.get("zoneId")
        if resource.resource_type.startswith("cloudflare:") and isinstance(zone, str) and zone:
            zones.setdefault(zone.lower(), resource)
    if not zones:
        return
    owners = zone_owners(root)
    for zone, resource in sorted(zones.items()):
        stack = stack_of_urn(resource.urn)
        others = [other for other in owners.get(zone, []) if other != stack]
        if others:
            report_violation(
                f"zone {zone} is managed by stack {stack} and by stack {', '.join(others)} too (cdn.zone_id in "
                f"Pulumi.{others[0]}.yaml): the two would overwrite each other's cache rules and zone settings; "
                "leave cdn out of all but one stack of the zone",
                resource.urn,
            )


# ------------------------------------------------------------------- Rules-language expressions
_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<punct>[(){},])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))')
Matcher = Callable[[Request], bool]
_FIELDS: dict[str, Callable[[Request], str]] = {
    "http.request.uri.path": lambda r: r.normalized_path,
    "http.request.uri.path.extension": lambda r: r.extension,
    "http.host": lambda r: r.host.lower(),
    "http.cookie": lambda r: r.cookie,
}


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if not match:
            raise ValueError(f"unexpected text at {position}: {text[position:position + 20]!r}")
        tokens.append(match.group(match.lastgroup or "word"))
        position = match.end()
    return tokens


def parse_expression(text: str) -> Matcher:
    """The subset of Cloudflare's Rules language our rules use (and, or, not, contains, eq, in,
    starts_with, lower), as a function of a Request. Anything else is a ValueError."""
    tokens = _tokens(text)
    position = 0

    def peek() -> str:
        return tokens[position] if position < len(tokens) else ""

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = peek()
        if not token or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'more'}, found {token or 'the end'}")
        position += 1
        return token

    def string() -> str:
        token = take()
        if not token.startswith('"'):
            raise ValueError(f"expected a string, found {token}")
        return re.sub(r"\\(.)", r"\1", token[1:-1])

    def field() -> Callable[[Request], str]:
        name = take()
        if name == "lower":
            take("(")
            inner = field()
            take(")")
            return lambda r: inner(r).lower()
        if name not in _FIELDS:
            raise ValueError(f"unknown field {name}")
        return _FIELDS[name]

    def primary() -> Matcher:
        if peek() == "not":
            take()
            inner = primary()
            return lambda r: not inner(r)
        if peek() == "(":
            take("(")
            inner = disjunction()
            take(")")
            return inner
        if peek() == "starts_with":
            take()
            take("(")
            value_of = field()
            take(",")
            prefix = string()
            take(")")
            return lambda r: value_of(r).startswith(prefix)
        value_of = field()
        operator = take()
        if operator == "contains":
            needle = string()
            return lambda r: needle in value_of(r)
        if operator in ("eq", "=="):
            expected = string()
            return lambda r: value_of(r) == expected
        if operator == "in":
            take("{")
            members = set()
            while peek() != "}":
                members.add(string())
            take("}")
            return lambda r: value_of(r) in members
        raise ValueError(f"unknown operator {operator}")

    def conjunction() -> Matcher:
        parts = [primary()]
        while peek() == "and":
            take()
            parts.append(primary())
        return lambda r: all(p(r) for p in parts)

    def disjunction() -> Matcher:
        parts = [conjunction()]
        while peek() == "or":
            take()
            parts.append(conjunction())
        return lambda r: any(p(r) for p in parts)

    result = disjunction()
    if position != len(tokens):
        raise ValueError(f"unexpected {tokens[position]}")
    return result


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else -999


# --------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    validate: Callable[..., None]
    mandatory: bool = True
    stack: bool = False  # a stack validation (sees every resource) rather than a resource one


def ttls_of_configured_plan(args: Any, report_violation: ReportViolation) -> None:
    """ttls_within_plan with the pack's `plan` config (default business)."""
    config = args.get_config() if hasattr(args, "get_config") else {}
    ttls_within_plan(args, report_violation, str((config or {}).get("plan", "business")))


POLICIES: tuple[Rule, ...] = (
    Rule("docker-ports-loopback-only", "Redis containers publish ports on loopback only.", docker_ports_loopback_only),
    Rule("hosts-tls-on", "Redis and Sentinel on the hosts listen on TLS only.", hosts_tls_on),
    Rule("acl-default-off-app-least-privilege",
         "Every ACL turns the default user off; the app user holds only the allowlist.",
         acl_default_off_app_least_privilege),
    Rule("ssh-credentials-not-plain", "SSH by key from secret config; no credential in a plain input.",
         ssh_credentials_not_plain),
    Rule("ssh-host-key-pinned", "Every SSH connection checks the server's pinned host key.", ssh_host_key_pinned),
    Rule("cdn-bypass-rule-last", "The last cache rule bypasses and resets every earlier setting.", bypass_rule_last),
    Rule("cdn-no-cacheable-private-path", "No caching rule matches a session or non-public API path.",
         no_cacheable_rule_matches_private_paths),
    Rule("cdn-ttls-within-plan", "Cache TTLs within what the zone's plan accepts.", ttls_of_configured_plan),
    Rule("data-volumes-protected", "Docker data volumes are protected.", volumes_protected),
    Rule("no-data-removal-on-delete", "No host command deletes Redis data when it is deleted.",
         no_data_removal_on_delete),
    Rule("at-least-three-masters", "Three masters or more.", at_least_three_masters, mandatory=False, stack=True),
    Rule("replicas-off-their-masters-host", "A replica never shares its master's host.",
         replicas_off_their_masters_host, mandatory=False, stack=True),
    Rule("cdn-one-stack-per-zone", "No other stack of the project manages the same Cloudflare zone.",
         one_stack_per_zone, stack=True),
)
