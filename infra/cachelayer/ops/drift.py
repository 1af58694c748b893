"""Drift: the live deployment against what the stack renders now.

pulumi-command has no Read, so `pulumi refresh` cannot see a CONFIG SET, an ACL SETUSER or a
SENTINEL SET made by hand. This compares every directive of the rendered redis.conf with
CONFIG GET (units normalised), the rendered ACL users with ACL GETUSER (password hashes compared,
never shown), the cluster's shape with the plan, and each sentinel's monitored groups with the
stack's sentinel settings. Each difference carries its fix.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from cachelayer.config.settings import Settings
from cachelayer.ops.health import TOTAL_SLOTS, read_cluster_nodes
from cachelayer.ops.target import ADMIN_PASSWORD_ENV, Target
from cachelayer.plan.topology import Node, Topology, build_topology
from cachelayer.render.conf import PER_LINE, RESTART_ONLY, acl_users, conf_values
from cachelayer.render.nodes import (
    PASSWORD_USERS,
    USERS,
    Passwords,
    Paths,
    docker_paths,
    host_paths,
    password_hash,
    render_redis_conf,
    render_users_acl,
)

UNITS = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
SCRATCH_PASSWORD = "cachelayer-drift-scratch"
PULUMI_FIX = "re-run `pulumi up` (the rendered file is right; the node must be restarted with it)"


@dataclass(frozen=True)
class Drift:
    kind: str  # config, acl, shape, sentinel
    where: str  # a process name, or "cluster"
    item: str  # directive, user, group
    expected: str
    actual: str
    fix: str


def normalise(value: str) -> str:
    """A directive value as CONFIG GET reports it: memory units in bytes, lower case."""
    words = []
    for word in value.split():
        match = re.fullmatch(r"(\d+)([kmg]b?)", word.lower())
        words.append(str(int(match.group(1)) * UNITS[match.group(2)]) if match else word.lower())
    return " ".join(words)


def directives(conf: str) -> dict[str, str]:
    """name -> value of a rendered redis.conf, as redis-server reads it (render.conf)."""
    return {name: value for name, value in conf_values(conf).items() if name not in PER_LINE}


def expected_paths(settings: Settings, target: Target) -> Callable[[Node], Paths]:
    if target.sandbox is not None:
        sandbox = target.sandbox
        return lambda node: sandbox.paths(node)
    if settings.redis.target == "docker":
        return lambda node: docker_paths(node.name)
    return lambda node: host_paths(node.name, node.port)


def expected_topology(settings: Settings, target: Target) -> Topology:
    return target.sandbox.topology if target.sandbox is not None else build_topology(settings)


# ------------------------------------------------------------------------------ config
def redis_cli_prefix(target: Target) -> str:
    """A redis-cli command line an operator can paste: the admin user and TLS flags, the password
    from REDIS_ADMIN_PASSWORD (the operator commands' own variable) through REDISCLI_AUTH, so it
    is neither on the line nor on argv."""
    flags = " ".join(shlex.quote(flag) for flag in target.cli_args())
    return f'REDISCLI_AUTH="${ADMIN_PASSWORD_ENV}" redis-cli {flags}'


def config_drift(
    name: str, endpoint: str, client: redis.Redis, rendered: Mapping[str, str], cli: str = "redis-cli"
) -> list[Drift]:
    live = client.config_get("*")
    found = []
    for directive, value in rendered.items():
        if directive not in live:
            continue  # a directive this version cannot report (none in our template today)
        want, have = normalise(value), normalise(str(live[directive]))
        if want != have:
            fix = PULUMI_FIX if directive in RESTART_ONLY else (
                f"{cli} -h {endpoint.rsplit(':', 1)[0]} -p {endpoint.rsplit(':', 1)[1]} CONFIG SET {directive} "
                f"{shlex.quote(want)} (or re-run `pulumi up`)"
            )
            found.append(Drift("config", name, directive, want, have, fix))
    return found


# --------------------------------------------------------------------------------- acl
def canonical_acl(acl_text: str) -> dict[str, list[str]]:
    """user -> rule tokens as Redis itself writes them (ACL LIST) after loading `acl_text`.

    Redis expands categories and reorders rules on load, so the rendered file cannot be compared
    with ACL LIST as text: a scratch redis-server (no TCP port, a unix socket in a temporary
    directory) loads the rendered file and says what the nodes should show."""
    with tempfile.TemporaryDirectory(prefix="cachelayer-acl-") as scratch:
        acl_file, sock = Path(scratch) / "users.acl", Path(scratch) / "redis.sock"
        acl_file.write_text(acl_text)
        acl_file.chmod(0o600)
        server = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(sock), "--aclfile", str(acl_file), "--save", "",
             "--appendonly", "no", "--dir", scratch],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not sock.exists() and time.monotonic() < deadline and server.poll() is None:
                time.sleep(0.01)
            # The rendered file has the admin user; its hash is of a placeholder we know here.
            admin_line = next(line for line in acl_text.splitlines() if line.startswith(f"user {USERS.admin} "))
            password = SCRATCH_PASSWORD if f"#{password_hash(SCRATCH_PASSWORD)}" in admin_line else None
            with redis.Redis(unix_socket_path=str(sock), username=USERS.admin, password=password,
                             decode_responses=True) as client:
                return acl_users("\n".join(str(line) for line in client.acl_list()), acl_file=True)
        finally:
            server.terminate()
            server.wait(timeout=10)


def _rules(tokens: Sequence[str]) -> set[str]:
    return {t for t in tokens if not t.startswith(("#", ">"))}


def acl_drift(name: str, client: redis.Redis, expected: Mapping[str, list[str]], known: Mapping[str, str]) -> list[Drift]:
    """Users, their on/off and rules (against Redis's own canonical form) and password hashes."""
    live_lines = acl_users("\n".join(str(line) for line in client.acl_list()), acl_file=True)
    rendered = expected
    found = []
    for user in sorted(set(rendered) | set(live_lines)):
        if user not in live_lines:
            found.append(Drift("acl", name, user, "present", "missing", PULUMI_FIX))
            continue
        if user not in rendered:
            found.append(Drift("acl", name, user, "absent", "present", f"ACL DELUSER {user} (or re-run `pulumi up`)"))
            continue
        # As sets: Redis's own ACL LIST order differs from node to node for the same rules.
        want, have = _rules(rendered[user]), _rules(live_lines[user])
        if want != have:
            missing, extra = sorted(want - have), sorted(have - want)
            found.append(Drift(
                "acl", name, f"{user} rules", " ".join(missing) or "-", " ".join(extra) or "-",
                "ACL LOAD on the node (its ACL file is the rendered one), or re-run `pulumi up`",
            ))
        hashes = sorted(t.removeprefix("#") for t in live_lines[user] if t.startswith("#"))
        if user in known and hashes != [password_hash(known[user])]:
            # Never shown: only that it differs.
            found.append(Drift("acl", name, f"{user} password", "the stack's password", f"{len(hashes)} other hash(es)",
                               "ACL LOAD on the node (the file has the stack's hash), or re-run `pulumi up`"))
    return found


# ------------------------------------------------------------------------------- shape
def shape_drift(cluster_nodes: Mapping[str, Any], settings: Settings) -> list[Drift]:
    """Cluster shape from one node's CLUSTER NODES: node count, masters, replicas, slots."""
    redis_settings = settings.redis
    members = {a: d for a, d in cluster_nodes.items() if "noaddr" not in d["flags"]}
    masters = {d["node_id"]: d for d in members.values() if "master" in d["flags"] and d["slots"]}
    slots = sum(int(r[1]) - int(r[0]) + 1 if len(r) == 2 else 1 for d in masters.values() for r in d["slots"])
    found = []
    if len(members) != redis_settings.node_count:
        found.append(Drift("shape", "cluster", "nodes", str(redis_settings.node_count), str(len(members)), PULUMI_FIX))
    if len(masters) != redis_settings.masters:
        found.append(Drift("shape", "cluster", "masters", str(redis_settings.masters), str(len(masters)),
                           "cachelayer rebalance (masters without slots) or re-run `pulumi up`"))
    for node_id in sorted(masters):
        replicas = sum(1 for d in members.values() if d["master_id"] == node_id)
        if replicas != redis_settings.replicas_per_master:
            address = next(a for a, d in members.items() if d["node_id"] == node_id)
            found.append(Drift("shape", "cluster", f"replicas of {address}", str(redis_settings.replicas_per_master),
                               str(replicas), "CLUSTER REPLICATE on a spare replica, or re-run `pulumi up`"))
    if slots != TOTAL_SLOTS:
        found.append(Drift("shape", "cluster", "slots served", str(TOTAL_SLOTS), str(slots), "redis-cli --cluster fix"))
    return found


# ---------------------------------------------------------------------------- sentinel
def sentinel_drift(name: str, client: redis.Redis, settings: Settings, groups: Sequence[str]) -> list[Drift]:
    live: dict[str, Any] = dict(client.sentinel_masters())  # type: ignore[arg-type]
    wanted = settings.sentinel
    found = []
    for group in sorted(set(groups) | set(live)):
        if group not in live:
            found.append(Drift("sentinel", name, group, "monitored", "not monitored", PULUMI_FIX))
            continue
        if group not in groups:
            found.append(Drift("sentinel", name, group, "not monitored", "monitored", f"SENTINEL REMOVE {group}"))
            continue
        state = live[group]
        for key, want in (
            ("quorum", wanted.quorum),
            ("down-after-milliseconds", wanted.down_after_milliseconds),
            ("failover-timeout", wanted.failover_timeout),
            ("parallel-syncs", wanted.parallel_syncs),
        ):
            have = state.get(key)
            if str(have) != str(want):
                found.append(Drift("sentinel", name, f"{group} {key}", str(want), str(have),
                                   f"SENTINEL SET {group} {key} {want} on every sentinel"))
    return found


# ------------------------------------------------------------------------------- all
def find_drift(target: Target, settings: Settings) -> tuple[list[Drift], list[str]]:
    """(differences, nodes that could not be read)."""
    topology = expected_topology(settings, target)
    paths = expected_paths(settings, target)
    # Unknown passwords render as placeholders; only known ones have their hashes compared.
    passwords = Passwords(*(SCRATCH_PASSWORD for _ in PASSWORD_USERS))
    rendered_acl = canonical_acl(render_users_acl(settings, passwords))
    drifts: list[Drift] = []
    unreadable: list[str] = []
    by_port = {n.port: n for n in topology.nodes}
    for endpoint in target.nodes:
        node = by_port.get(endpoint.port)
        if node is None:
            drifts.append(Drift("shape", endpoint.name, "node", "not in the stack", "running",
                                f"cachelayer drain {endpoint.name}, then stop it"))
            continue
        rendered = directives(render_redis_conf(settings, topology, node, paths(node)))
        try:
            with target.client(endpoint) as client:
                drifts += config_drift(endpoint.name, endpoint.address, client, rendered, redis_cli_prefix(target))
                drifts += acl_drift(endpoint.name, client, rendered_acl, target.passwords)
        except redis.RedisError as error:
            unreadable.append(f"{endpoint.name}: {error}")
    if target.kind == "cluster":
        for endpoint in target.nodes:
            try:
                with target.client(endpoint) as client:
                    drifts += shape_drift(read_cluster_nodes(client), settings)
                    break
            except redis.RedisError:
                continue
    groups = [m.group for m in topology.masters]
    for endpoint in target.sentinels:
        try:
            with target.client(endpoint) as client:
                drifts += sentinel_drift(endpoint.name, client, settings, groups)
        except redis.RedisError as error:
            unreadable.append(f"{endpoint.name}: {error}")
    return drifts, unreadable


def drift_json(drifts: Sequence[Drift]) -> list[dict[str, str]]:
    return [asdict(d) for d in drifts]
