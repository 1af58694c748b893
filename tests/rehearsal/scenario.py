"""One rehearsal: booted hosts, the prod stack pointed at them and deployed by the real Pulumi
engine (the CLI, the Python language host and pulumi-command, pulumi-tls, pulumi-random built
from their Go modules by scripts/engine.sh; tests/support/pulumi_engine.py), and the checks the
scenarios share (redis-cli from outside, as the admin user over TLS)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pulumi.automation import CommandError
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.config.stack_file import read_stack_config
from cachelayer.render.nodes import USERS
from support.pulumi_engine import EngineStack, Steps

from .hosts import APP_NETWORK, SUBNET, Hosts, build_image, require_tools

SIX_HOSTS = {f"cache-{i}": f"{SUBNET}.{10 + i}" for i in range(1, 7)}
STACK = "prod-rehearsal"


class DeployFailed(AssertionError):
    pass


def prod_config(machines: dict[str, str], host_key: str, redis: dict[str, Any] | None = None,
                hosts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pulumi.prod.yaml as shipped, pointed at the booted hosts: the placeholder addresses, host
    keys and app network replaced, machines added for a scale-out, plus the scenario's overrides.
    The hosts boot from one image, so they present one host key. No `cdn`: this copy of prod
    manages no Cloudflare zone (Cloudflare's API is not reachable here; tests/engine covers it)."""
    shipped = read_stack_config("prod")
    listed = {m["name"]: m for m in shipped["hosts"]["machines"]}
    config = {key: value for key, value in shipped.items() if key != "cdn"}
    config["redis"] = {**shipped["redis"], **(redis or {})}
    config["hosts"] = {
        **shipped["hosts"],
        "machines": [
            {**listed.get(name, {"name": name}), "address": address, "ssh_host_key": host_key}
            for name, address in machines.items()
        ],
        **(hosts or {}),
    }
    return config


@dataclass
class Rehearsal:
    hosts: Hosts
    machines: dict[str, str]
    stack: EngineStack
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, machines: dict[str, str] = SIX_HOSTS) -> Rehearsal:
        require_tools()
        started = time.monotonic()
        image = build_image()
        built = time.monotonic()
        hosts = Hosts.create(image)
        try:
            hosts.up(machines)
            stack = EngineStack(
                hosts.workdir / "engine", STACK, prod_config(machines, image.host_key, hosts={"app_networks": [APP_NETWORK]}),
                {"ssh_private_key": image.private_key},
            )
        except BaseException:
            hosts.down()
            raise
        rehearsal = cls(hosts, dict(machines), stack)
        rehearsal.timings.update(image=built - started, boot=time.monotonic() - built)
        return rehearsal

    def configure(self, redis: dict[str, Any] | None = None, **hosts: Any) -> None:
        self.stack.configure(prod_config(
            self.machines, self.hosts.image.host_key, redis=redis, hosts={"app_networks": [APP_NETWORK], **hosts}
        ))

    def deploy(self, redis: dict[str, Any] | None = None, replace: tuple[str, ...] = (), **hosts: Any) -> Steps:
        """`pulumi up` of the prod stack as shipped, but for the machines' addresses, host keys and
        the app network (placeholders in the stack file), plus the scenario's settings."""
        self.configure(redis, **hosts)
        try:
            return self.stack.up(replace=replace)
        except CommandError as failure:
            raise DeployFailed(f"pulumi up failed: {failure}{self._journals(str(failure))}") from None

    def _journals(self, output: str) -> str:
        """The recent journal of each host a failing step names, to say why."""
        found = ""
        for host, running in ((h, self.hosts.hosts[h].running) for h in self.hosts.hosts):
            if f"redis-{host}-" in output and running:
                _, journal = self.hosts.sh(host, "journalctl -n 40 --no-pager -o short-monotonic", check=False)
                found += f"\n--- journal of {host}\n{journal}"
        return found

    # --- reading the deployment ---------------------------------------------------------

    @property
    def admin_password(self) -> str:
        return str(self.stack.outputs()["admin_password"])

    @property
    def app_password(self) -> str:
        return str(self.stack.outputs()["connection"]["password"])

    def stdin_of(self, resource: str) -> str:
        return str(self.stack.resources()[resource]["inputs"]["stdin"])

    def outputs_of(self, resource: str) -> dict[str, Any]:
        return dict(self.stack.resources()[resource]["outputs"])

    @property
    def ca_file(self) -> str:
        path = self.hosts.workdir / "ca.crt"
        path.write_text(str(self.stack.outputs()["ca_cert_pem"]))
        return str(path)

    def cli(self, address: str, port: int, *args: str, namespace: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """redis-cli as admin over TLS from the controller (or a namespace); password in the environment."""
        command = ["redis-cli", "--tls", "--cacert", self.ca_file, "--user", USERS.admin, "-h", address, "-p", str(port), *args]
        if namespace is not None:
            # The firewall drops (no reset): bound the wait for a connection that never comes.
            command = ["ip", "netns", "exec", namespace, "timeout", "5", *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "REDISCLI_AUTH": self.admin_password},
            check=False,
        )

    def cluster(self, user: str = USERS.app) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(a, 7000 + i) for i, a in enumerate(self.machines.values())],
            username=user,
            password=self.app_password if user == USERS.app else self.admin_password,
            ssl=True,
            ssl_ca_certs=self.ca_file,
            decode_responses=True,
            socket_timeout=3,
        )

    def info(self, address: str, port: int, field_name: str) -> str:
        for line in self.cli(address, port, "info", "server").stdout.splitlines():
            if line.startswith(f"{field_name}:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"{address}:{port} has no {field_name}")

    def down(self) -> None:
        self.hosts.down()


@dataclass
class Probe:
    """Writes a new key every few ms with WAIT 1 (acknowledged once a replica has it), and
    remembers which writes were acknowledged and which failed."""

    client: RedisCluster
    acknowledged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self) -> None:
        index = 0
        while not self.stop.is_set():
            index += 1
            key = f"{{probe}}:{index}"
            try:
                self.client.set(key, str(index))
                node = self.client.get_node_from_key(key)
                if int(self.client.execute_command("WAIT", 1, 2000, target_nodes=node)) >= 1:
                    self.acknowledged.append(key)
                else:
                    self.errors.append(f"{key}: WAIT 1 timed out")
            except Exception as error:  # every error is a finding to report
                self.errors.append(f"{key}: {type(error).__name__}: {error}")
                time.sleep(0.2)
            time.sleep(0.01)

    def __enter__(self) -> Probe:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)
