"""One rehearsal: booted hosts, the prod program pointed at them, the replay engine and its
state, and the checks the scenarios share (redis-cli from outside, as the admin user over TLS)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paramiko
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster

from cachelayer.render.nodes import USERS
from platform_cache import Cache, CacheConfig

from .engine import Engine, Replay, StepFailed
from .hosts import APP_NETWORK, SUBNET, Hosts, build_image, require_tools
from .program import CommandSpec, ProviderState, declared_commands, prod_config

SIX_HOSTS = {f"cache-{i}": f"{SUBNET}.{10 + i}" for i in range(1, 7)}


@dataclass
class Rehearsal:
    hosts: Hosts
    machines: dict[str, str]
    provider_state: ProviderState = field(default_factory=ProviderState)
    timings: dict[str, float] = field(default_factory=dict)
    last: list[CommandSpec] = field(default_factory=list)
    # Secret settings of the next replays (`pulumi config set --secret`): given passwords, rotations.
    secrets: dict[str, str] = field(default_factory=dict)
    # Caps the engine's SSH dial retries (the program asks for 20, ~100 s against a host that is
    # down): a test that makes a host unreachable on purpose need not wait for all of them.
    dial_attempts: int | None = None

    @classmethod
    def start(cls, machines: dict[str, str] = SIX_HOSTS) -> Rehearsal:
        require_tools()
        started = time.monotonic()
        image = build_image()
        built = time.monotonic()
        hosts = Hosts.create(image)
        try:
            hosts.up(machines)
        except BaseException:
            hosts.down()
            raise
        rehearsal = cls(hosts, dict(machines))
        rehearsal.timings.update(image=built - started, boot=time.monotonic() - built)
        return rehearsal

    @property
    def engine(self) -> Engine:
        return Engine(self.hosts.workdir / "state.json", dial_attempts=self.dial_attempts)

    def declared(self, redis: dict[str, Any] | None = None, **hosts: Any) -> list[CommandSpec]:
        config = prod_config(
            self.machines, self.hosts.image.host_key, redis=redis, hosts={"app_networks": [APP_NETWORK], **hosts}
        )
        self.last = declared_commands(config, self.hosts.image.private_key, self.provider_state, self.secrets)
        return self.last

    def deploy(self, redis: dict[str, Any] | None = None, **hosts: Any) -> Replay:
        """`pulumi up` of the prod stack as shipped, but for the machines' addresses and the app
        network (placeholders in the stack file), plus the scenario's settings."""
        try:
            return self.engine.up(self.declared(redis, **hosts))
        except StepFailed as failure:
            raise StepFailed(failure.name, failure.action, failure.detail + self._journal(failure.name)) from None

    def _journal(self, step: str) -> str:
        """The failing host's recent journal, to say why (the step names its host)."""
        host = next((h for h in self.hosts.hosts if step.startswith(f"redis-{h}-")), None)
        if host is None or not self.hosts.hosts[host].running:
            return ""
        try:
            _, journal = self.hosts.sh(host, "journalctl -n 40 --no-pager -o short-monotonic", check=False)
        except (OSError, paramiko.SSHException) as error:  # the very host the step could not reach
            return f"\n--- no journal of {host}: {error}"
        return f"\n--- journal of {host}\n{journal}"

    # --- reading the deployment ---------------------------------------------------------

    def _output(self, resource: str) -> str:
        return str(self.provider_state.resources[resource]["outputs"]["result"])

    @property
    def admin_password(self) -> str:
        """The stack's: the given one (a secret setting), else the generated one."""
        return self.secrets.get("admin_password") or self._output("redis-credentials-admin-password")

    @property
    def app_password(self) -> str:
        return self.secrets.get("app_password") or self._output("redis-credentials-app-password")

    def stdin_of(self, resource: str) -> str:
        return str(next(c for c in self.last if c.name == resource).inputs["stdin"])

    @property
    def ca_file(self) -> str:
        path = self.hosts.workdir / "ca.crt"
        pem = self.stdin_of("redis-cache-1-tls-ca")
        # Clients in other threads read it meanwhile: never truncate it in place.
        if not path.exists() or path.read_text() != pem:
            fresh = path.with_name(f".ca.{threading.get_ident()}.tmp")
            fresh.write_text(pem)
            fresh.replace(path)
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

    def cache(self, sentinel: bool = False, **options: Any) -> Cache:
        """The platform's cache library as the application uses it: the app user over TLS, the
        cluster's seeds, or (`sentinel`) the three sentinels of the default placement."""
        addresses = list(self.machines.values())
        config = CacheConfig(
            seeds=tuple(f"{a}:{7000 + i}" for i, a in enumerate(addresses[:3])),
            password=self.app_password, tls=True, tls_ca_certs=self.ca_file,
            sentinels=tuple(f"{a}:{26379 + i}" for i, a in enumerate(addresses[:3])) if sentinel else (),
            sentinel_groups=tuple(f"redis-master-{g}" for g in (1, 2, 3)) if sentinel else (),
        )
        return Cache(config.with_options(**options).validate())

    def replicas_listed_everywhere(self, per_master: int = 1) -> bool:
        """Every node's CLUSTER SLOTS lists `per_master` replicas for each slot range: a client
        reads the map from whichever seed answers first, and Redis lists a replica only once it
        has replicated something (and gossiped its offset)."""
        for i, address in enumerate(self.machines.values()):
            node = Redis(host=address, port=7000 + i, username=USERS.admin, password=self.admin_password,
                         ssl=True, ssl_ca_certs=self.ca_file, socket_timeout=3)
            try:
                # [start, end, master, replica, ...] per slot range
                ranges: list[list[Any]] = node.execute_command("CLUSTER SLOTS")
            finally:
                node.close()
            if {len(entry) - 3 for entry in ranges} != {per_master}:
                return False
        return True

    def reads_by_role(self) -> dict[str, int]:
        """GET and MGET calls answered by the masters and by the replicas since `reset_stats`."""
        counts = {"master": 0, "replica": 0}
        for i, address in enumerate(self.machines.values()):
            port = 7000 + i
            role = self.cli(address, port, "role").stdout.split()[0]
            stats = self.cli(address, port, "info", "commandstats").stdout
            calls = sum(int(line.split("calls=")[1].split(",")[0]) for line in stats.splitlines()
                        if line.startswith(("cmdstat_get:", "cmdstat_mget:")))
            counts["master" if role == "master" else "replica"] += calls
        return counts

    def reset_stats(self) -> None:
        for i, address in enumerate(self.machines.values()):
            assert self.cli(address, 7000 + i, "config", "resetstat").stdout.strip() == "OK"

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
