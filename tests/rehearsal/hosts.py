"""Booted Debian 12 hosts for the prod-stack rehearsal, in the spirit of pytest-redis executors.

Each host is a `systemd-nspawn -b` container (systemd as PID 1, sshd, the `deploy` user with
password-less sudo, everything the install script asks for already installed: the hosts have
no route out) in its own network namespace, on a private bridge. This module owns the nspawn
processes, the namespaces, the veth links and the bridge it creates, and `down()` removes all
of them. Every name starts with `rh` and the subnet is 10.233.0.0/24, away from the other
tests on this machine (71xx-77xx, 10.231.0.0/24, clb*/clt*).

The container's /proc/sys and /sys stay read-only: nspawn runs without
SYSTEMD_NSPAWN_API_VFS_WRITABLE, so the deploy's kernel tuning can never change the CI machine's
machine-wide vm.* settings (it has to report that it could not apply them instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CACHE_DIR = Path(os.environ.get("CACHELAYER_REHEARSAL_CACHE", "/var/cache/cachelayer-rehearsal"))
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# Everything templates/host-install.sh.j2 installs, plus what a server and the scripts need.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "iproute2",
    "procps",
    "redis-server",
    "redis-tools",
    "nftables",
    "python3-redis",
    "prometheus-redis-exporter",  # monitoring is on by default on prod
    "haproxy",  # the load balancer, on by default for the sentinel topology
)
# Bump when the customisation below changes: the cache key includes it.
IMAGE_REVISION = "1"
SSH_USER = "deploy"
SUBNET = "10.233.0"
BRIDGE = "rhbr0"
GATEWAY = f"{SUBNET}.1"
# Plain namespaces (no container) for the firewall checks: one inside app_networks, one outside.
APP_ADDRESS = f"{SUBNET}.50"
OUTSIDER_ADDRESS = f"{SUBNET}.200"
APP_NETWORK = f"{SUBNET}.0/26"  # the controller (.1), the hosts (.11-.18) and the app (.50)
BOOT_TIMEOUT = 60.0


class RehearsalError(RuntimeError):
    pass


def require_tools() -> None:
    """Fail loudly (never skip): a rehearsal that does not run proves nothing."""
    if os.geteuid() != 0:
        raise RehearsalError("the rehearsal needs root (network namespaces, systemd-nspawn)")
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "ip", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        raise RehearsalError(f"missing {', '.join(missing)}: run scripts/setup.sh (installs systemd-container, debootstrap)")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RehearsalError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Image:
    rootfs: Path
    key_file: Path  # the deploy user's private key (OpenSSH format)

    @property
    def private_key(self) -> str:
        return self.key_file.read_text()

    @property
    def host_key(self) -> str:
        """The hosts' SSH host key ("ssh-ed25519 AAAA..."), made when the image installed sshd."""
        return " ".join((self.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])


def image_key() -> str:
    return hashlib.sha256(f"{SUITE} {IMAGE_REVISION} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]


def build_image(log: Path | None = None) -> Image:
    """The root filesystem, built once per package list and cached (debootstrap, ~1 min). One
    build at a time: scripts/test.sh starts it in the background, and a caller that comes
    meanwhile waits for it, then finds it ready."""
    directory = CACHE_DIR / image_key()
    image = Image(directory / "rootfs", directory / "deploy_ed25519")
    if (directory / "ready").exists():
        return image
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "ready").exists():
            _debootstrap(directory, image, log)
    return image


def _debootstrap(directory: Path, image: Image, log: Path | None) -> None:
    building = directory / "rootfs.tmp"
    if building.exists():
        shutil.rmtree(building)
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(building), MIRROR],
        capture_output=True,
        text=True,
        check=False,
    )
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RehearsalError(f"debootstrap failed: {result.stderr.strip()[-2000:]}")
    _customise(building, image.key_file)
    if image.rootfs.exists():
        shutil.rmtree(image.rootfs)
    building.rename(image.rootfs)
    (directory / "ready").touch()


def _customise(rootfs: Path, key_file: Path) -> None:
    """The deploy user (key login, password-less sudo, as docs/prod-hosts.md asks of a server)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    key_file.write_bytes(private)
    key_file.chmod(0o600)
    run("chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash", SSH_USER)
    sudoers = rootfs / "etc/sudoers.d" / SSH_USER
    sudoers.write_text(f"{SSH_USER} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    ssh_dir = rootfs / "home" / SSH_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_bytes(public + b"\n")
    run("chroot", str(rootfs), "chown", "-R", f"{SSH_USER}:{SSH_USER}", f"/home/{SSH_USER}/.ssh")
    # Each boot gets its own machine id (the hosts share this lower layer).
    (rootfs / "etc/machine-id").write_text("")
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


@dataclass
class Host:
    name: str
    address: str
    namespace: str
    link: str
    upper: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Hosts:
    """The booted hosts; `up()` adds hosts (scale-out too), `stop`/`start` reboot one."""

    image: Image
    workdir: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    bridge_up: bool = False

    @classmethod
    def create(cls, image: Image) -> Hosts:
        workdir = Path(tempfile.mkdtemp(prefix="cachelayer-rehearsal-", dir="/var/tmp"))
        hosts = cls(image, workdir)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise RehearsalError(f"{BRIDGE} exists: another rehearsal runs, or one left it (scripts/rehearse.sh --down)")
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        hosts.bridge_up = True
        run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        hosts._namespace("rh-app", APP_ADDRESS)
        hosts._namespace("rh-out", OUTSIDER_ADDRESS)
        return hosts

    def _namespace(self, namespace: str, address: str) -> None:
        link = _link_of(namespace)
        run("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        run("ip", "link", "set", link, "master", BRIDGE, "up")
        run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", namespace, "link", "set", "eth0", "up")
        run("ip", "-n", namespace, "link", "set", "lo", "up")

    def up(self, machines: dict[str, str]) -> None:
        """Boot a host per (name, address) not booted yet, and wait until each accepts SSH."""
        new = []
        for name, address in machines.items():
            if name in self.hosts:
                continue
            host = Host(
                name, address, f"rh-{name}", _link_of(f"rh-{name}"), self.workdir / name / "upper", self.workdir / f"{name}.log"
            )
            (host.upper / "etc").mkdir(parents=True)
            # debootstrap copied this machine's name; sudo wants its own name resolvable.
            (host.upper / "etc/hostname").write_text(f"{name}\n")
            (host.upper / "etc/hosts").write_text(f"127.0.0.1 localhost\n{address} {name}\n")
            self._namespace(host.namespace, address)
            self.hosts[name] = host
            new.append(host)
        for host in new:
            self.start(host.name, wait=False)
        for host in new:
            self.wait_ssh(host.name)

    def start(self, name: str, wait: bool = True) -> None:
        host = self.hosts[name]
        assert not host.running, f"{name} already runs"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_NSPAWN")}
        cgroups = _cgroups(name)
        for directory in cgroups:
            directory.mkdir(parents=True, exist_ok=True)

        def own_cgroup() -> None:
            # Without a host systemd every container would start in the same cgroup and their
            # systemds would create and remove each other's /system.slice/<unit> (219/CGROUP).
            for directory in cgroups:
                (directory / "cgroup.procs").write_text(str(os.getpid()))

        with host.log.open("ab") as log:
            host.process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    "--register=no",
                    "--keep-unit",
                    "--boot",
                    f"--directory={self.image.rootfs}",
                    f"--overlay={self.image.rootfs}:{host.upper}:/",
                    f"--network-namespace-path=/run/netns/{host.namespace}",
                    "--capability=CAP_NET_ADMIN",  # nft in the host's own namespace
                    f"--machine=rh-{name}",
                    f"--hostname={name}",
                    "--console=passive",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=own_cgroup,
            )
        if wait:
            self.wait_ssh(name)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        """Shut the host down as a reboot would (SIGTERM: nspawn asks systemd to power off)."""
        host = self.hosts[name]
        if host.process is None:
            return
        if host.process.poll() is None:
            host.process.send_signal(signal.SIGTERM)
            try:
                host.process.wait(timeout)
            except subprocess.TimeoutExpired:
                host.process.kill()
                host.process.wait(10)
        host.process = None
        for directory in _cgroups(name):
            _remove_cgroup(directory)

    def wait_ssh(self, name: str) -> None:
        host = self.hosts[name]
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if not host.running:
                raise RehearsalError(f"{name}: systemd-nspawn exited: {host.log.read_text(errors='replace')[-2000:]}")
            try:
                client = self.ssh(name, timeout=2.0)
                client.close()
                return
            except (OSError, paramiko.SSHException) as error:
                if time.monotonic() > deadline:
                    raise RehearsalError(f"{name} ({host.address}): no SSH within {BOOT_TIMEOUT} s: {error}") from None
                time.sleep(0.3)

    def ssh(self, name: str, timeout: float = 10.0, user: str = SSH_USER) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # throwaway test hosts
        pkey = paramiko.Ed25519Key.from_private_key_file(str(self.image.key_file))
        client.connect(
            self.hosts[name].address,
            username=user,
            pkey=pkey,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
        return client

    def sh(self, name: str, script: str, check: bool = True, timeout: float = 120.0) -> tuple[int, str]:
        """Run `script` as root on a host (sudo -n sh -c); exit status and stdout+stderr."""
        client = self.ssh(name)
        try:
            channel = client.get_transport().open_session()  # type: ignore[union-attr]
            channel.set_combine_stderr(True)
            channel.settimeout(timeout)
            channel.exec_command("sudo -n sh -s")
            channel.sendall(script.encode())
            channel.shutdown_write()
            output = channel.makefile("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        finally:
            client.close()
        if check and status != 0:
            raise RehearsalError(f"{name}: script failed ({status}):\n{output}")
        return status, output

    def netns(self, namespace: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A command in one of our namespaces (rh-app, rh-out), e.g. redis-cli from the app network."""
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def down(self) -> None:
        """Stop every container and remove every namespace, link and the bridge we created."""
        errors: list[str] = []
        for name in list(self.hosts):
            try:
                self.stop(name)
            except Exception as error:  # keep cleaning up
                errors.append(f"{name}: {error}")
        for namespace in reversed(self.namespaces):
            # The kernel would remove the veth pair with the namespace, but later: remove it now.
            run("ip", "link", "del", _link_of(namespace), check=False)
            if run("ip", "netns", "del", namespace, check=False).returncode != 0:
                errors.append(f"netns {namespace}")
        self.namespaces.clear()
        if self.bridge_up:
            run("ip", "link", "del", BRIDGE, check=False)
            self.bridge_up = False
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RehearsalError(f"cleanup incomplete: {'; '.join(errors)}")


CGROUP_PARENT = "cachelayer-rehearsal"


def _cgroups(name: str) -> list[Path]:
    """The host's own cgroup in each hierarchy a container's systemd uses (v2, or hybrid)."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        roots = [base]
    else:
        roots = [root for root in (base / "systemd", base / "unified") if root.is_dir()]
    return [root / CGROUP_PARENT / f"rh-{name}" for root in roots]


def _remove_cgroup(directory: Path) -> None:
    """rmdir bottom-up (cgroup directories hold only virtual files)."""
    if not directory.is_dir():
        return
    for path, _, _ in sorted(os.walk(directory), key=lambda item: -item[0].count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _link_of(namespace: str) -> str:
    return f"rhv-{namespace.removeprefix('rh-')}"[:15]


def leftovers() -> list[str]:
    """Anything of ours still on the machine (a test asserts none after down())."""
    found = [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith("rh-")] if Path("/run/netns").exists() else []
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith("rh")]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines() if "cachelayer-rehearsal-" in line]
    for parent in {d.parent for d in _cgroups("any")}:
        found += [f"cgroup {d}" for d in parent.glob("rh-*")]
    ps = run("ps", "-eo", "pid=,args=").stdout
    found += [f"process {line.strip()}" for line in ps.splitlines() if "systemd-nspawn" in line and "--machine=rh-" in line]
    return found


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
