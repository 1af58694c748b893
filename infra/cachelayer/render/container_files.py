"""What each container of the docker target receives and runs, written once. Pure.

RedisDockerDeployment (components/redis_docker.py) uploads every entry into its container and
starts the container with its command; `cachelayer render` (render/files.py) writes the same
entries as `containers/<process><path>`. A file that holds a secret is given as a function of
the passwords, so the component renders it inside a secret Output and `cachelayer render` with
placeholders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Node, SentinelNode, Topology
from cachelayer.render.load_balancer import render_haproxy_config
from cachelayer.render.nodes import (
    Passwords,
    Paths,
    docker_paths,
    docker_sentinel_paths,
    render_auth_conf,
    render_node_start_script,
    render_redis_conf,
    render_sentinel_conf,
    render_users_acl,
)

# The official image's entrypoint (on PATH): it runs `redis-server ...` as the redis user.
DOCKER_ENTRYPOINT = "docker-entrypoint.sh"
# The official haproxy image (docker-library/haproxy, 2.6/Dockerfile): it runs as the haproxy
# user, uid and gid 99, whose home /var/lib/haproxy is its own; `haproxy -f <config>` is its CMD.
LOAD_BALANCER_CONTAINER = "redis-haproxy"
HAPROXY_IMAGE_UID = "99"
HAPROXY_CONFIG_FILE = "/usr/local/etc/haproxy/haproxy.cfg"
HAPROXY_COMMAND = ("haproxy", "-f", HAPROXY_CONFIG_FILE)
SecretText = Callable[[Passwords], str]


@dataclass(frozen=True)
class ContainerFile:
    path: str
    text: str = ""  # plain content
    secret: SecretText | None = None  # content that holds a password: readable by redis only

    def content(self, passwords: Passwords) -> str:
        return self.secret(passwords) if self.secret is not None else self.text


@dataclass(frozen=True)
class ContainerPlan:
    process: Node | SentinelNode
    paths: Paths
    files: tuple[ContainerFile, ...]
    command: tuple[str, ...]

    @property
    def is_sentinel(self) -> bool:
        return isinstance(self.process, SentinelNode)


def container_plans(settings: Settings, topology: Topology) -> list[ContainerPlan]:
    """One plan per node container, then one per sentinel container."""
    plans = []
    acl = partial(render_users_acl, settings)
    for node in topology.nodes:
        paths = docker_paths(node.name)
        files = [
            ContainerFile(paths.conf_file, render_redis_conf(settings, topology, node, paths)),
            ContainerFile(paths.acl_file, secret=acl),
            ContainerFile(paths.auth_file, secret=partial(render_auth_conf, node.name)),
        ]
        command: tuple[str, ...] = ("redis-server", paths.conf_file)
        if topology.kind == "sentinel":
            # The start script asks the sentinels for the node's role, then execs the image's
            # entrypoint, which drops to the redis user as it does for `redis-server ...`.
            start = render_node_start_script(settings, topology, node, paths, [DOCKER_ENTRYPOINT, "redis-server"])
            files.append(ContainerFile(paths.start_script, start))
            command = ("sh", paths.start_script)
        plans.append(ContainerPlan(node, paths, tuple(files), command))
    for sentinel in topology.sentinels:
        paths = docker_sentinel_paths(sentinel.name)
        conf = ContainerFile(paths.conf_file, secret=partial(render_sentinel_conf, settings, topology, sentinel, paths))
        plans.append(ContainerPlan(sentinel, paths, (conf,), ("redis-server", paths.conf_file, "--sentinel")))
    return plans


def load_balancer_container_file(settings: Settings, topology: Topology) -> ContainerFile | None:
    """The HAProxy container's haproxy.cfg (it holds the monitor password), or None without a
    load balancer. It listens on every address of its container; the docker component publishes
    the ports on `docker.publish_address` only."""
    if not settings.load_balancer_enabled:
        return None
    return ContainerFile(HAPROXY_CONFIG_FILE, secret=partial(_docker_haproxy_config, settings, topology))


def _docker_haproxy_config(settings: Settings, topology: Topology, passwords: Passwords) -> str:
    return render_haproxy_config(
        settings, topology, passwords, "0.0.0.0",
        admin_socket="/var/lib/haproxy/admin.sock", server_state_file="/var/lib/haproxy/server-state",
    )  # fmt: skip
