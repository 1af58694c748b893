"""HAProxy's configuration for the Sentinel topology (templates/haproxy.cfg.j2). Pure.

One rendering for every place HAProxy runs: the hosts (Debian's haproxy.service reads
/etc/haproxy/haproxy.cfg) and the local sandbox. The role check logs in as the `monitor` user,
so the file holds its password: it is rendered from the `Passwords` in one place
(`check_login`), and written root-only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Node, Topology
from cachelayer.render.nodes import USERS, Passwords, render_template

HOST_CONFIG_FILE = "/etc/haproxy/haproxy.cfg"
# Debian's haproxy.cfg has this admin socket; the servers' states are saved from it before a reload.
HOST_ADMIN_SOCKET = "/run/haproxy/admin.sock"
# Read by HAProxy (as root, before its chroot) when it starts: the states saved before a reload.
HOST_SERVER_STATE_FILE = "/var/lib/haproxy/server-state"
HAPROXY_BINARY = "haproxy"
# Per HAProxy process; each proxied connection holds two file descriptors, and HAProxy refuses to
# start when it cannot raise its descriptor limit to about twice maxconn. The sandbox's own user
# may not raise it far.
HOST_MAXCONN = 8_000
SANDBOX_MAXCONN = 1_000


@dataclass(frozen=True)
class LoadBalancerGroup:
    name: str  # the Sentinel group: redis-master-<n>
    write_port: int
    read_port: int
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class LoadBalancerEndpoint:
    """What a client connects to for one group, on one load balancer."""

    group: str
    write: str  # address:port
    read: str


def load_balancer_groups(settings: Settings, topology: Topology) -> tuple[LoadBalancerGroup, ...]:
    lb = settings.load_balancer
    groups = []
    for index, master in enumerate(topology.masters):
        nodes = (master, *topology.replicas_of(master))
        groups.append(LoadBalancerGroup(master.group, lb.write_base_port + index, lb.read_base_port + index, nodes))
    return tuple(groups)


def load_balancer_endpoints(settings: Settings, topology: Topology, address: str) -> list[LoadBalancerEndpoint]:
    return [
        LoadBalancerEndpoint(g.name, f"{address}:{g.write_port}", f"{address}:{g.read_port}")
        for g in load_balancer_groups(settings, topology)
    ]


def check_login(passwords: Passwords) -> str:
    """The inline command the role check sends first. The one place the check's password is
    taken from: a rotation of the monitor password reaches HAProxy through it."""
    return f"AUTH {USERS.monitor} {passwords.presented(USERS.monitor)}"


def render_haproxy_config(
    settings: Settings,
    topology: Topology,
    passwords: Passwords,
    bind_address: str,
    host: str | None = None,
    ca_file: str | None = None,
    node_address: Callable[[Node], str] = lambda node: node.address,
    admin_socket: str = HOST_ADMIN_SOCKET,
    server_state_file: str = HOST_SERVER_STATE_FILE,
) -> str:
    """haproxy.cfg: per Sentinel group a write and a read proxy, and the metrics frontend.

    `host`: the machine's name on the hosts target (logging, chroot and the haproxy user, as
    Debian's service expects); None in the sandbox. `ca_file`: the CA the role check verifies
    the nodes with when the stack runs TLS. Client traffic is passed through untouched (TCP), so
    a TLS client talks TLS with the node itself. `admin_socket`, `server_state_file`: where the
    servers' states are saved before a reload and read by the new process (the sandbox's own
    files; on the hosts, Debian's socket)."""
    if settings.redis.tls and ca_file is None:
        raise ValueError("a TLS stack's load balancer needs the CA file to check the nodes")
    groups = [
        {
            "name": g.name,
            "write_port": g.write_port,
            "read_port": g.read_port,
            "nodes": [{"name": n.name, "address": node_address(n), "port": n.port} for n in g.nodes],
        }
        for g in load_balancer_groups(settings, topology)
    ]
    # check-ssl: the checks speak TLS to a node although HAProxy passes client traffic through;
    # verify required + ca-file: only a node with a certificate of the stack's CA is trusted.
    check_tls = f" check-ssl verify required ca-file {ca_file}" if settings.redis.tls else ""
    return render_template(
        "haproxy.cfg.j2",
        stack=settings.stack,
        host=host,
        maxconn=HOST_MAXCONN if host else SANDBOX_MAXCONN,
        check=settings_check(settings),
        groups=groups,
        bind_address=bind_address,
        exporter_address=bind_address,
        exporter_port=settings.load_balancer.exporter_port,
        check_auth=check_login(passwords),
        check_tls=check_tls,
        admin_socket=admin_socket,
        # Hosts: 660, group haproxy (Debian's). The sandbox: its own user only.
        admin_socket_mode="660" if host else "600",
        # The hosts run HAProxy in master-worker mode (haproxy.service: -Ws), whose reload passes
        # the listeners itself; the sandbox's foreground process hands them over through this socket.
        expose_listeners=host is None,
        server_state_file=server_state_file,
    )


@dataclass(frozen=True)
class _Check:
    interval_ms: int
    fall: int
    rise: int


def settings_check(settings: Settings) -> _Check:
    lb = settings.load_balancer
    return _Check(lb.check_interval_ms, lb.fall, lb.rise)


def host_load_balancer_addresses(topology: Topology) -> list[str]:
    """The hosts target runs one HAProxy on every machine with a node: their addresses, in order."""
    return list(dict.fromkeys(n.address for n in topology.nodes))


def load_balancer_addresses(settings: Settings, topology: Topology) -> list[str]:
    """Where clients reach the stack's HAProxy: every machine with a node (hosts target), the
    address its container's ports are published on (docker target); none without one."""
    if not settings.load_balancer_enabled:
        return []
    if settings.redis.target == "docker":
        return [settings.docker.publish_address]
    return host_load_balancer_addresses(topology)


def connection_load_balancers(settings: Settings, topology: Topology) -> list[dict[str, object]]:
    """The `connection` output's `load_balancers` (load balancer on): per group, every HAProxy's
    write and read address. A client picks one (or lists them all and retries the next): each
    HAProxy finds the master by itself. The sandbox has its own (`cachelayer sandbox status`)."""
    addresses = load_balancer_addresses(settings, topology)
    return [
        {"group": g.name, "write": [f"{a}:{g.write_port}" for a in addresses], "read": [f"{a}:{g.read_port}" for a in addresses]}
        for g in load_balancer_groups(settings, topology)
    ] if addresses else []


# Saves `show servers state` from the admin socket (argv[1]) into the state file (argv[2]),
# atomically. Only the servers whose address and port are the same in the new configuration
# (argv[3]) are kept: HAProxy 2.6 would otherwise apply the saved address and port over the new
# configuration's (haproxy/haproxy#985). When HAProxy does not answer (not running yet), a stale
# file is removed rather than loaded. Debian's python3 runs it (the hosts have it for the health
# check); the sandbox runs the same text. No single quote in it: it is a shell argument.
SAVE_SERVER_STATE_PY = """import os, socket, sys
admin, path, config = sys.argv[1:4]
wanted, proxy = set(), None
for line in open(config):
    words = line.split()
    if words[:1] == ["listen"]:
        proxy = words[1]
    elif words[:1] == ["server"] and proxy and ":" in words[2]:
        address, port = words[2].rsplit(":", 1)
        wanted.add((proxy, words[1], address, port))
try:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(admin)
        s.sendall(b"show servers state\\n")
        data = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    lines = data.splitlines()
    if lines[:1] != ["1"]:
        raise OSError("no server state")
    kept = [x for x in lines[2:] if len(x.split()) > 18 and (lambda f: (f[1], f[3], f[4], f[18]))(x.split()) in wanted]
    with open(path + ".new", "w") as f:
        f.write("\\n".join([*lines[:2], *kept, ""]))
    os.replace(path + ".new", path)
except (OSError, IndexError):
    if os.path.exists(path):
        os.remove(path)
"""


def save_server_state_command(sudo: str, admin_socket: str = HOST_ADMIN_SOCKET,
                              state_file: str = HOST_SERVER_STATE_FILE, config_file: str = HOST_CONFIG_FILE) -> str:
    """Shell: save the running HAProxy's server states for the process a reload starts. No secret
    in it (the states are names, addresses and UP/DOWN; the config is only read)."""
    return f"{sudo}/usr/bin/python3 -c '{SAVE_SERVER_STATE_PY}' {admin_socket} {state_file} {config_file}"
