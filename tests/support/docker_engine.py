"""A private Docker engine for the tests, and the Redis image the dev stack runs on it.

Debian's `dockerd` with its own data root, exec root, socket and pid file, no iptables rules
and no default bridge: nothing else on the machine changes (user-defined bridge networks and
ports published on 127.0.0.1 work through the userland proxy). No image registry is reachable
here, so the image is made locally from the rehearsal's Debian root filesystem (redis-server
inside), shaped like the official `redis` image the dev stack names: `docker-entrypoint.sh`
that drops to the `redis` user (uid 999, as the component's uploads assume), `/data` as the
working directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("CACHELAYER_DOCKER_CACHE", "/var/cache/cachelayer-docker"))
LOCAL_IMAGE = "cachelayer-redis:local"
LOCAL_HAPROXY_IMAGE = "cachelayer-haproxy:local"
START_TIMEOUT = 60.0

# The official image's entrypoint, in its essentials (docker-library/redis docker-entrypoint.sh):
# `redis-server ...` runs as the redis user after taking ownership of the working directory.
ENTRYPOINT = """#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \\! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
umask 0077
exec "$@"
"""
SHAPE = (
    "cat > /usr/local/bin/docker-entrypoint.sh && chmod 0755 /usr/local/bin/docker-entrypoint.sh"
    # Debian gave 999 to a system group (or user) of its own: move it aside first.
    " && other=$(getent group 999 | cut -d: -f1) && { [ -z \"$other\" ] || groupmod -g 1999 \"$other\"; }"
    " && other=$(getent passwd 999 | cut -d: -f1) && { [ -z \"$other\" ] || usermod -u 1999 \"$other\"; }"
    " && groupmod -g 999 redis && usermod -u 999 -g 999 redis"
    " && mkdir -p /data && chown redis:redis /data"
    " && chown -R redis:redis /var/lib/redis /var/log/redis"
)

# The official haproxy image (docker-library/haproxy 2.6): its entrypoint adds master-worker mode
# and foreground (`-W -db`) to `haproxy ...`; it runs as haproxy, uid and gid 99, whose home
# /var/lib/haproxy it owns; the config is /usr/local/etc/haproxy/haproxy.cfg.
HAPROXY_ENTRYPOINT = """#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
"""
HAPROXY_SHAPE = (
    "cat > /usr/local/bin/docker-entrypoint.sh && chmod 0755 /usr/local/bin/docker-entrypoint.sh"
    " && other=$(getent group 99 | cut -d: -f1) && { [ -z \"$other\" ] || groupmod -g 1099 \"$other\"; }"
    " && other=$(getent passwd 99 | cut -d: -f1) && { [ -z \"$other\" ] || usermod -u 1099 \"$other\"; }"
    " && groupmod -g 99 haproxy && usermod -u 99 -g 99 haproxy"
    " && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy && chown haproxy:haproxy /var/lib/haproxy"
)


class DockerEngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class DockerEngine:
    socket: Path

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def environment(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args], input=stdin, env=self.environment, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise DockerEngineError(f"`docker {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def ensure_image(self, rootfs: Path, key: str) -> str:
        """The local Redis image from `rootfs`, made once per rootfs `key` (a label says which)."""
        return self._ensure(LOCAL_IMAGE, rootfs, key, SHAPE, ENTRYPOINT, [
            'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["redis-server"]', "WORKDIR /data",
        ])  # fmt: skip

    def ensure_load_balancer_image(self, rootfs: Path, key: str) -> str:
        """The local HAProxy image from `rootfs` (Debian's haproxy 2.6 inside), shaped like the
        official one the dev stack names (but for its STOPSIGNAL, which `docker commit` cannot set)."""
        return self._ensure(LOCAL_HAPROXY_IMAGE, rootfs, key, HAPROXY_SHAPE, HAPROXY_ENTRYPOINT, [
            'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]',
            "USER haproxy",
        ])  # fmt: skip

    def _ensure(self, tag: str, rootfs: Path, key: str, shape: str, entrypoint: str, changes: list[str]) -> str:
        found = self.docker("image", "inspect", "--format", '{{ index .Config.Labels "cachelayer.rootfs" }}',
                            tag, check=False)
        if found.returncode == 0 and found.stdout.strip() == key:
            return tag
        base = f"cachelayer-rootfs:{key}"
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(["docker", "import", "-", base], stdin=tar.stdout, env=self.environment,
                                      capture_output=True, text=True, check=False)
        if imported.returncode != 0:
            raise DockerEngineError(f"docker import of {rootfs} failed: {imported.stderr.strip()}")
        builder = f"cachelayer-image-build-{os.getpid()}"
        self.docker("rm", "-f", builder, check=False)
        self.docker("run", "-i", "--name", builder, "--network", "none", base, "sh", "-c", shape, stdin=entrypoint)
        options = [option for change in [*changes, f"LABEL cachelayer.rootfs={key}"] for option in ("--change", change)]
        self.docker("commit", *options, builder, tag)
        self.docker("rm", "-f", builder)
        self.docker("rmi", base)
        return tag

    def remove_all(self) -> None:
        """Every container, network and volume on this engine (images stay cached)."""
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", "-v", *containers)
        networks = [n for n in self.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split()]
        if networks:
            self.docker("network", "rm", *networks)
        volumes = self.docker("volume", "ls", "-q").stdout.split()
        if volumes:
            self.docker("volume", "rm", "-f", *volumes)


def require_docker() -> None:
    missing = [tool for tool in ("dockerd", "docker", "containerd", "runc") if shutil.which(tool) is None]
    if missing:
        raise DockerEngineError(f"missing {', '.join(missing)}: run scripts/setup.sh (installs docker.io)")
    if os.geteuid() != 0:
        raise DockerEngineError("a Docker engine needs root")


@contextmanager
def docker_engine() -> Iterator[DockerEngine]:
    """A running private dockerd; one at a time per data root (a lock), stopped on exit."""
    require_docker()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="cachelayer-docker-", dir="/var/tmp"))
    engine = DockerEngine(run_dir / "docker.sock")
    with (CACHE_DIR / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log = (run_dir / "dockerd.log").open("w")
        process = subprocess.Popen(
            [
                "dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--data-root", str(CACHE_DIR / "data"), "--exec-root", str(run_dir / "exec"),
                "--pidfile", str(run_dir / "docker.pid"), "-H", engine.host,
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while engine.docker("version", check=False).returncode != 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise DockerEngineError(f"dockerd did not start: {(run_dir / 'dockerd.log').read_text()[-2000:]}")
                time.sleep(0.2)
            engine.remove_all()  # what an interrupted run left
            yield engine
        finally:
            if process.poll() is None:
                engine.remove_all()
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()
            shutil.rmtree(run_dir, ignore_errors=True)
