"""Which deployment an operator command talks to, and with which credentials.

A Target comes from the stack's `pulumi stack output --json --show-secrets` (when the Pulumi CLI is
installed, or a file given with --outputs), or from the environment (REDIS_ADMIN_PASSWORD,
REDIS_ADMIN_USER, SENTINEL_PASSWORD, REDIS_NODE_<n>_HOST/PORT, REDIS_SENTINEL_<n>_HOST/PORT) plus
`--seed host:port`; a running local sandbox gives one too (sandbox/targets.py). The order the CLI
tries them in lives in cli/common.py. The source used is recorded in `Target.source`; passwords
never appear in a repr, a message or a command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachelayer.config.settings import Settings, load_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import CachelayerError, SettingsError
from cachelayer.ops.health import read_cluster_nodes, tls_client_options
from cachelayer.plan.topology import Node, Topology
from cachelayer.render.nodes import USERS, Paths, cli_ca_flags

Kind = Literal["cluster", "sentinel"]
# Where a Target was found: the CLI shows it before any change (a sandbox named prod is not prod).
Origin = Literal["sandbox", "pulumi", "environment"]
# Runs `pulumi stack output`: argv in, (exit code, stdout, stderr) out. Tests pass a fake.
Runner = Callable[[Sequence[str]], tuple[int, str, str]]
# The operator's credentials. Not REDIS_PASSWORD/REDIS_USER: the cache library reads those as the
# application user's (user app), and the operator commands need the admin user.
ADMIN_PASSWORD_ENV = "REDIS_ADMIN_PASSWORD"
ADMIN_USER_ENV = "REDIS_ADMIN_USER"


class LocalLayout(Protocol):
    """A deployment whose files ops can name (a local sandbox): drift compares against its own
    topology and paths instead of the stack's. ops never imports the sandbox itself."""

    @property
    def topology(self) -> Topology: ...

    def paths(self, process: Node) -> Paths: ...


class TargetError(CachelayerError):
    """No deployment could be resolved: the message names every source tried and the fix."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Target:
    stack: str
    source: str  # printed: where the endpoints and credentials came from
    kind: Kind
    nodes: tuple[Endpoint, ...]
    sentinels: tuple[Endpoint, ...] = ()
    groups: tuple[str, ...] = ()  # sentinel master groups
    admin_user: str = USERS.admin
    admin_password: str = field(default="", repr=False)
    sentinel_user: str = USERS.admin
    sentinel_password: str = field(default="", repr=False)
    tls_ca: str | None = None  # a CA file: connect with TLS
    settings: Settings | None = None  # what the stack renders (drift, planned shape), when known
    passwords: Mapping[str, str] = field(default_factory=dict, repr=False)  # user -> password, those known
    sandbox: LocalLayout | None = field(default=None, repr=False, compare=False)
    origin: Origin = "environment"

    def client(self, endpoint: Endpoint, timeout: float = 2.0, retry: bool = True) -> redis.Redis:
        """An admin connection to one node (or, for a sentinel endpoint, a sentinel). Without
        `retry`, a node that refuses the connection fails at once instead of after redis-py's
        retries with backoff (about 4 s per node): for reads that just report who is down."""
        sentinel = endpoint in self.sentinels
        no_retry: dict[str, Any] = {} if retry else {"retry": Retry(NoBackoff(), 0)}
        return redis.Redis(
            **no_retry,
            host=endpoint.host,
            port=endpoint.port,
            username=self.sentinel_user if sentinel else self.admin_user,
            password=self.sentinel_password if sentinel else self.admin_password,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **self.tls_options,
        )

    @property
    def tls_options(self) -> dict[str, Any]:
        """redis-py options for this deployment's TLS (none without a CA)."""
        return tls_client_options(self.tls_ca)

    def cli_args(self) -> list[str]:
        """redis-cli flags for the admin user; the password goes in cli_env(), never on argv."""
        flags = ["--user", self.admin_user]
        return flags + list(cli_ca_flags(self.tls_ca))

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "REDISCLI_AUTH": self.admin_password}

    def node(self, name_or_address: str) -> Endpoint:
        for endpoint in self.nodes:
            if name_or_address in (endpoint.name, endpoint.address, str(endpoint.port)):
                return endpoint
        raise TargetError(f"no node {name_or_address!r} in {self.stack}: use one of {', '.join(e.name for e in self.nodes)}")

    def describe(self) -> dict[str, Any]:
        """For --json: everything but the credentials."""
        return {
            "stack": self.stack,
            "source": self.source,
            "topology": self.kind,
            "nodes": [e.address for e in self.nodes],
            "sentinels": [e.address for e in self.sentinels],
            "origin": self.origin,
            "tls": self.tls_ca is not None,
        }


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise TargetError(f"{text!r} is not host:port")
    return host, int(port)


def _stack_settings(stack: str) -> Settings | None:
    try:
        return load_settings(read_stack_config(stack), stack)
    except SettingsError:
        return None


# ---------------------------------------------------------------------------- pulumi
def _run(argv: Sequence[str]) -> tuple[int, str, str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=120)
    return result.returncode, result.stdout, result.stderr


def from_pulumi_outputs(stack: str, outputs: Mapping[str, Any], source: str, tls_ca: str | None = None) -> Target:
    """A Target from the program's exports (infra/__main__.py)."""
    try:
        connection = outputs["connection"]
        nodes = tuple(
            Endpoint(str(n["name"]), *parse_address(str(n["endpoint"]))) for n in outputs["nodes"]
        )
        sentinels = tuple(
            Endpoint(f"redis-sentinel-{parse_address(str(e))[1]}", *parse_address(str(e))) for e in outputs.get("sentinels", [])
        )
        admin_password = str(outputs["admin_password"])
    except (KeyError, TypeError) as error:
        raise TargetError(f"the stack outputs lack {error}: run `pulumi up --stack {stack}` first") from None
    kind: Kind = "sentinel" if sentinels else "cluster"
    tls = bool(connection.get("tls"))
    if tls and not tls_ca:
        raise TargetError("the stack runs TLS: name the CA certificate file in REDIS_TLS_CA")
    passwords = {USERS.admin: admin_password}
    if connection.get("password"):
        passwords[str(connection.get("user", USERS.app))] = str(connection["password"])
    return Target(
        stack=stack,
        source=source,
        kind=kind,
        nodes=nodes,
        sentinels=sentinels,
        groups=tuple(connection.get("sentinel_groups") or ()),
        admin_user=str(outputs.get("admin_user", USERS.admin)),
        admin_password=admin_password,
        sentinel_user=str(outputs.get("admin_user", USERS.admin)),
        sentinel_password=admin_password,
        tls_ca=tls_ca if tls else None,
        settings=_stack_settings(stack),
        passwords=passwords,
        origin="pulumi",
    )


def from_pulumi(
    stack: str, runner: Runner | None = None, outputs_file: Path | None = None, tls_ca: str | None = None
) -> Target | None:
    if outputs_file is not None:
        outputs = json.loads(outputs_file.read_text())
        return from_pulumi_outputs(stack, outputs, f"stack outputs file {outputs_file}", tls_ca)
    if runner is None:
        if shutil.which("pulumi") is None:
            return None
        runner = _run
    code, out, err = runner(["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack])
    if code != 0:
        raise TargetError(f"`pulumi stack output --stack {stack}` failed: {err.strip()[-500:]}")
    return from_pulumi_outputs(stack, json.loads(out), f"pulumi stack output --stack {stack}", tls_ca)


# ------------------------------------------------------------------------ environment
def _numbered(env: Mapping[str, str], prefix: str, name: Callable[[int], str]) -> list[Endpoint]:
    found: list[Endpoint] = []
    n = 1
    while f"{prefix}_{n}_HOST" in env or f"{prefix}_{n}_PORT" in env:
        host = env.get(f"{prefix}_{n}_HOST", "127.0.0.1")
        port = env.get(f"{prefix}_{n}_PORT", "")
        if not port.isdigit():
            raise TargetError(f"{prefix}_{n}_PORT must be a port number, not {port!r}")
        found.append(Endpoint(name(int(port)), host, int(port)))
        n += 1
    return found


def from_environment(
    stack: str, env: Mapping[str, str], seed: str | None = None, discover: bool = True
) -> Target | None:
    """REDIS_ADMIN_PASSWORD (user admin, or REDIS_ADMIN_USER), SENTINEL_PASSWORD, REDIS_NODE_<n>_HOST/PORT,
    REDIS_SENTINEL_<n>_HOST/PORT, REDIS_TLS_CA; `seed` adds a node. In a cluster the other
    nodes are found from the seed's CLUSTER NODES (with `discover`)."""
    password = env.get(ADMIN_PASSWORD_ENV)
    if not password:
        return None
    nodes = _numbered(env, "REDIS_NODE", lambda port: f"redis-{port}")
    if seed:
        host, port = parse_address(seed)
        if all(e.port != port or e.host != host for e in nodes):
            nodes.insert(0, Endpoint(f"redis-{port}", host, port))
    if not nodes:
        raise TargetError(f"{ADMIN_PASSWORD_ENV} is set but no node is: give --seed host:port or REDIS_NODE_1_HOST/PORT")
    sentinels = _numbered(env, "REDIS_SENTINEL", lambda port: f"redis-sentinel-{port}")
    user = env.get(ADMIN_USER_ENV, USERS.admin)
    sentinel_password = env.get("SENTINEL_PASSWORD")
    target = Target(
        stack=stack,
        source=f"environment ({ADMIN_PASSWORD_ENV}" + (f", --seed {seed})" if seed else ", REDIS_NODE_<n>_*)"),
        kind="sentinel" if sentinels else "cluster",
        nodes=tuple(nodes),
        sentinels=tuple(sentinels),
        admin_user=user,
        admin_password=password,
        sentinel_user=USERS.sentinel if sentinel_password else user,
        sentinel_password=sentinel_password or password,
        tls_ca=env.get("REDIS_TLS_CA") or None,
        settings=_stack_settings(stack),
        passwords={user: password},
    )
    if sentinels:
        return _with_groups(target, ())
    return _discover_cluster(target) if discover else target


def _with_groups(target: Target, groups: tuple[str, ...]) -> Target:
    """Sentinel groups: the planned ones when the stack file is there, else what a sentinel monitors."""
    if not groups and target.settings is not None:
        groups = tuple(f"redis-master-{i + 1}" for i in range(target.settings.redis.masters))
    if not groups:
        for sentinel in target.sentinels:
            try:
                with target.client(sentinel) as client:
                    groups = tuple(sorted(client.sentinel_masters()))
                    break
            except redis.RedisError:
                continue
    return replace(target, groups=groups)


def _discover_cluster(target: Target) -> Target:
    """Every node the seed knows (CLUSTER NODES), in port order."""
    for seed in target.nodes:
        try:
            with target.client(seed, retry=False) as client:
                if not client.info("cluster").get("cluster_enabled"):
                    return target
                nodes = read_cluster_nodes(client)
        except redis.RedisError:
            continue
        found = {
            parse_address(address) for address, detail in nodes.items() if "noaddr" not in detail["flags"]
        }
        endpoints = tuple(Endpoint(f"redis-{port}", host, port) for host, port in sorted(found, key=lambda a: (a[1], a[0])))
        return replace(target, nodes=endpoints)
    return target
