"""Render every file a node receives from the jinja2 templates in templates/. Pure.

StrictUndefined makes a misspelt template variable an error here rather than an empty
directive on a server. Files holding secrets (the ACL file, auth.conf, sentinel.conf) are
rendered from a `Passwords` value, which the Pulumi layer only ever holds inside a secret Output.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from cachelayer.config.settings import Settings
from cachelayer.plan.acl_policy import app_rules, monitor_rules
from cachelayer.plan.topology import Node, SentinelNode, Topology

# Written to a node's data dir by its start script once it has chosen a role: from then on the
# node never falls back to its planned role (see render_node_start_script).
STARTED_MARKER = ".cachelayer-started"

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("cachelayer", "templates"),  # package data: works without the checkout
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # config files, scripts and units, not HTML
)
_environment.filters["shell_quote"] = shlex.quote


@dataclass(frozen=True)
class Users:
    """ACL user names. The application never gets admin rights."""

    app: str = "app"
    admin: str = "admin"
    replication: str = "replication"
    sentinel: str = "sentinel"
    monitor: str = "monitor"  # the Redis exporter: read-only facts, no key (acl_policy.MONITOR_*)


USERS = Users()
# The users with a password, in the order of Passwords' fields (and of settings.PASSWORD_KEYS).
PASSWORD_USERS = ("app", "admin", "replication", "sentinel", "monitor")


@dataclass(frozen=True)
class Passwords:
    """Each user's password and, while a rotation is between its phases, the one being retired.

    The one rule of a rotation (docs/security.md, "Rotating a password"): a file or process that
    ACCEPTS a credential (an ACL file, a sentinel's users) takes every password of `accepted()`;
    anything that PRESENTS one (masterauth, auth-pass, admin.pass, the exporters' files, an
    output) takes `presented()`, the new one. Every renderer goes through these two."""

    app: str
    admin: str
    replication: str
    sentinel: str
    monitor: str
    # user -> the password being retired (`<user>_password_previous`), set only during phase 1
    previous: Mapping[str, str] = field(default_factory=dict, hash=False, kw_only=True)

    def presented(self, user: str) -> str:
        """What a client of the platform logs in as `user` with: always the new password."""
        return str(getattr(self, user))

    def accepted(self, user: str) -> tuple[str, ...]:
        """Every password a process must accept for `user`: the new one, then the retired one."""
        current = self.presented(user)
        retired = self.previous.get(user)
        return (current,) if not retired or retired == current else (current, retired)

    @property
    def rotating(self) -> tuple[str, ...]:
        """The users between the phases of a rotation."""
        return tuple(user for user in PASSWORD_USERS if len(self.accepted(user)) > 1)

    def __repr__(self) -> str:  # never print a password by accident
        return "Passwords(<hidden>)"


@dataclass(frozen=True)
class Paths:
    """Where a process finds its files; differs per target (container, host, sandbox)."""

    conf_dir: str
    data_dir: str
    log_file: str  # "" logs to stdout (containers)
    supervised: str  # "systemd" under systemd, else "no"
    bind: str
    name: str  # file-name stem: redis-7000 or redis-sentinel-26379

    @property
    def conf_file(self) -> str:
        return f"{self.conf_dir}/{self.name}.conf"

    @property
    def acl_file(self) -> str:
        return f"{self.conf_dir}/{self.name}.acl"

    @property
    def auth_file(self) -> str:
        return f"{self.conf_dir}/{self.name}-auth.conf"

    @property
    def start_script(self) -> str:
        return f"{self.conf_dir}/{self.name}-start.sh"

    @property
    def started_marker(self) -> str:
        return f"{self.data_dir}/{STARTED_MARKER}"

    @property
    def tls_cert_file(self) -> str:
        return f"{self.conf_dir}/tls/redis.crt"

    @property
    def tls_key_file(self) -> str:
        return f"{self.conf_dir}/tls/redis.key"

    @property
    def tls_ca_file(self) -> str:
        return f"{self.conf_dir}/tls/ca.crt"


def docker_paths(name: str) -> Paths:
    return Paths("/usr/local/etc/redis", "/data", "", "no", "0.0.0.0", name)


def docker_sentinel_paths(name: str) -> Paths:
    """Sentinel rewrites its config file, so it lives in /data, which the image's entrypoint
    hands to the redis user; /usr/local/etc/redis stays root's."""
    return Paths("/data", "/data", "", "no", "0.0.0.0", name)


def host_paths(name: str, port: int) -> Paths:
    return Paths("/etc/redis", f"/var/lib/redis/{port}", f"/var/log/redis/{name}.log", "systemd", "0.0.0.0", name)


def sandbox_paths(workdir: Path, name: str, bind: str = "127.0.0.1") -> Paths:
    base = workdir / name
    return Paths(str(base), str(base / "data"), str(base / f"{name}.log"), "no", bind, name)


def password_hash(password: str) -> str:
    """The form Redis ACL files accept instead of a clear-text password (`#<sha256 hex>`)."""
    return hashlib.sha256(password.encode()).hexdigest()


def render_template(template: str, **context: Any) -> str:
    """Any template in templates/, with the shared StrictUndefined environment."""
    return _environment.get_template(template).render(**context)


def render_redis_conf(settings: Settings, topology: Topology, node: Node, paths: Paths) -> str:
    """redis.conf for one node. Holds no secret: masterauth comes from the included auth file."""
    return render_template(
        "redis.conf.j2",
        stack=settings.stack,
        topology=topology.kind,
        cluster=topology.kind == "cluster",
        tls=settings.redis.tls,
        redis=settings.redis,
        node=node,
        master=topology.master_of(node),
        paths=paths,
        users=USERS,
    )


def render_users_acl(settings: Settings, passwords: Passwords) -> str:
    redis = settings.redis
    return render_template(
        "users.acl.j2",
        users=USERS,
        password_rules=_accepted_rules(passwords),
        app_rules=app_rules(redis.app_scripting, redis.disabled_commands),
        monitor_rules=monitor_rules(),
        sentinel=redis.topology == "sentinel",
    )


def render_auth_conf(node_name: str, passwords: Passwords) -> str:
    return render_template(
        "auth.conf.j2", node_name=node_name, replication_password=_quoted(passwords.presented(USERS.replication))
    )


def render_sentinel_conf(
    settings: Settings, topology: Topology, sentinel: SentinelNode, paths: Paths, passwords: Passwords
) -> str:
    return render_template(
        "sentinel.conf.j2",
        stack=settings.stack,
        tls=settings.redis.tls,
        sentinel=sentinel,
        settings=settings.sentinel,
        masters=topology.masters,
        paths=paths,
        users=USERS,
        sentinel_users=sentinel_users(passwords),
        sentinel_password=_quoted(passwords.presented(USERS.sentinel)),
    )


def render_node_start_script(
    settings: Settings,
    topology: Topology,
    node: Node,
    paths: Paths,
    server_command: Sequence[str],
    wait_seconds: int = 60,
) -> str:
    """Sentinel topology: the script that starts a node in the role the sentinels give it.

    `server_command` is what it execs with the config file and `--replicaof` appended: the
    redis-server binary, or the image's entrypoint in a container. `wait_seconds` bounds how long
    a node that has run before waits for the sentinels before it gives up (exit 1)."""
    assert topology.kind == "sentinel", "only sentinel topology has sentinels to ask"
    master = topology.master_of(node)
    return render_template(
        "redis-node-start.sh.j2",
        stack=settings.stack,
        node=node,
        planned="" if master is node else f"{master.address} {master.port}",
        paths=paths,
        marker=paths.started_marker,
        wait_seconds=wait_seconds,
        majority=len(topology.sentinels) // 2 + 1,
        # A failover takes about failover start + promotion; bounded by the wait itself.
        settle_seconds=min(wait_seconds // 2, 6),
        sentinels=topology.sentinels,
        user=USERS.replication,
        tls_flags=cli_tls_flags(settings, posixpath.dirname(paths.tls_ca_file)),
        server_command=shlex.join(server_command),
    )


def sentinel_users(passwords: Passwords) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The users of the sentinel processes, each as (name, ACL rules), password hashes included.

    sentinel.conf gets them on the first start; because Sentinel then owns that file, later
    deploys reconcile them live with ACL SETUSER (render_hosts.render_sentinel_set)."""
    hashes = {user: tuple(f"#{digest}" for digest in digests) for user, digests in accepted_hashes(passwords).items()}
    everything = ("~*", "&*", "+@all")
    return (
        # Operators, and the other sentinels (sentinel-user).
        (USERS.admin, ("on", *hashes["admin"], *everything)),
        (USERS.sentinel, ("on", *hashes["sentinel"], *everything)),
        # The application's Sentinel client: discovery only (redis-py's discover_slaves sends SENTINEL SLAVES).
        (
            USERS.app,
            ("on", *hashes["app"], "&*", "+ping", "+hello", "+auth", "+client|setname", "+subscribe",
             "+sentinel|get-master-addr-by-name", "+sentinel|master", "+sentinel|masters", "+sentinel|replicas",
             "+sentinel|slaves", "+sentinel|sentinels"),
        ),
        # The nodes' start script asks, with the replication password, who its group's master is
        # now and in which configuration epoch (SENTINEL MASTER).
        (
            USERS.replication,
            ("on", *hashes["replication"], "+ping", "+auth", "+hello", "+sentinel|get-master-addr-by-name",
             "+sentinel|master"),
        ),
        # The Redis exporter: the groups' state, read-only (acl_policy.MONITOR_SENTINEL_RULES).
        (USERS.monitor, ("on", *hashes["monitor"], *monitor_rules(sentinel=True))),
    )


def cli_ca_flags(ca_file: str | None) -> tuple[str, ...]:
    """redis-cli flags for a server that speaks TLS, verified against our CA; none without one."""
    return ("--tls", "--cacert", ca_file) if ca_file else ()


def cli_tls_flags(settings: Settings, tls_dir: str) -> tuple[str, ...]:
    """redis-cli flags of the scripts on a node's machine: the CA and the node's own certificate."""
    if not settings.redis.tls:
        return ()
    return (*cli_ca_flags(f"{tls_dir}/ca.crt"), "--cert", f"{tls_dir}/redis.crt", "--key", f"{tls_dir}/redis.key")


def render_bootstrap_script(settings: Settings, topology: Topology, tls_dir: str, wait_seconds: int = 60) -> str:
    """The script that forms the cluster (or checks the sentinel quorum), run once every node is up."""
    return render_template(
        "bootstrap.sh.j2",
        stack=settings.stack,
        topology=topology.kind,
        admin_user=USERS.admin,
        tls_flags=cli_tls_flags(settings, tls_dir),
        wait_seconds=wait_seconds,
        nodes=topology.nodes,
        sentinels=topology.sentinels,
        masters=topology.masters,
        first=topology.nodes[0],
        replicas_per_master=settings.redis.replicas_per_master,
    )


def accepted_hashes(passwords: Passwords) -> dict[str, tuple[str, ...]]:
    """user -> the SHA-256 of every password it accepts (two between a rotation's phases)."""
    return {user: tuple(password_hash(p) for p in passwords.accepted(user)) for user in PASSWORD_USERS}


def _accepted_rules(passwords: Passwords) -> dict[str, str]:
    """user -> its password rules in an ACL file line: `#<sha256>`, one per accepted password."""
    return {user: " ".join(f"#{digest}" for digest in digests) for user, digests in accepted_hashes(passwords).items()}


def _quoted(password: str) -> str:
    """A password inside a double-quoted config value (Redis unescapes \\\\ and \\")."""
    return password.replace("\\", "\\\\").replace('"', '\\"')
