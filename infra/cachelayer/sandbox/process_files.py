"""Each process's files in the sandbox's workdir: the very files the Pulumi program uploads to a
container or host, rendered the same way (cachelayer.render.nodes), secrets at 0600."""

from __future__ import annotations

import os
from pathlib import Path

from cachelayer.config.settings import Settings
from cachelayer.plan.topology import Node, SentinelNode, Topology
from cachelayer.render.nodes import (
    Paths,
    render_auth_conf,
    render_node_start_script,
    render_redis_conf,
    render_sentinel_conf,
    render_users_acl,
    sandbox_paths,
)
from cachelayer.sandbox.passwords import PasswordFile
from cachelayer.sandbox.state import make_workdir

# What a TLS sandbox needs in its tls_dir: the names the rendered configs expect.
TLS_FILES = ("ca.crt", "redis.crt", "redis.key")


def write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


class ProcessFiles:
    """Writes a process's config files under `<workdir>/<process>/` before it starts."""

    def __init__(
        self, settings: Settings, topology: Topology, workdir: Path, tls_dir: Path | None, passwords: PasswordFile
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.workdir = workdir
        self.tls_dir = tls_dir
        self.password_file = passwords

    def paths(self, process: Node | SentinelNode) -> Paths:
        return sandbox_paths(self.workdir, process.name, bind=process.address)

    def write(self, process: Node | SentinelNode) -> Paths:
        if isinstance(process, SentinelNode):
            return self._write_sentinel_files(process)
        return self._write_node_files(process)

    def server_argv(self, process: Node | SentinelNode, paths: Paths, server: str, wait_seconds: int) -> list[str]:
        """The argv the containers run (`redis-server <conf> [--sentinel]`): no secret on it."""
        argv = [server, paths.conf_file, *(["--sentinel"] if isinstance(process, SentinelNode) else [])]
        if isinstance(process, Node) and self.topology.kind == "sentinel":
            # As on the hosts: the start script asks the sentinels for the role, then execs
            # redis-server, so the pid we record ends up being redis-server's.
            script = render_node_start_script(
                self.settings, self.topology, process, paths, [server], wait_seconds=max(1, wait_seconds // 2)
            )
            Path(paths.start_script).write_text(script)
            argv = ["sh", paths.start_script]
        return argv

    def _write_node_files(self, node: Node) -> Paths:
        """The files the Pulumi program uploads to the node's container, rendered the same way."""
        paths = self._make_dirs(node)
        passwords = self.password_file.passwords()
        Path(paths.conf_file).write_text(render_redis_conf(self.settings, self.topology, node, paths))
        write_secret(Path(paths.acl_file), render_users_acl(self.settings, passwords))
        write_secret(Path(paths.auth_file), render_auth_conf(node.name, passwords))
        return paths

    def _write_sentinel_files(self, sentinel: SentinelNode) -> Paths:
        paths = self._make_dirs(sentinel)
        # Sentinel rewrites its config as it learns: written once, like the program's upload.
        if not Path(paths.conf_file).exists():
            conf = render_sentinel_conf(self.settings, self.topology, sentinel, paths, self.password_file.passwords())
            write_secret(Path(paths.conf_file), conf)
        return paths

    def _make_dirs(self, process: Node | SentinelNode) -> Paths:
        # One by one: mkdir(parents=True) would create the parents with the default mode.
        paths = self.paths(process)
        make_workdir(self.workdir)
        for directory in (paths.conf_dir, paths.data_dir):
            Path(directory).mkdir(exist_ok=True, mode=0o700)
        if self.tls_dir is not None:
            # Where the rendered config looks for them, as the hosts' /etc/redis/tls.
            target = Path(paths.tls_ca_file).parent
            target.mkdir(exist_ok=True, mode=0o700)
            for name in TLS_FILES:
                write_secret(target / name, (self.tls_dir / name).read_text())
        return paths
