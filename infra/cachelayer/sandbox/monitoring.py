"""Monitoring for the local sandbox: one Debian `prometheus-redis-exporter` per process, a
Pushgateway (Debian's `prometheus-pushgateway`: `cachelayer backup --pushgateway` reports the
newest backup there) and a local Prometheus (Debian's `prometheus`), on loopback only, with the
stack's generated rules.

The exporters get the monitor password in their environment (REDIS_PASSWORD), never on a command
line. Like the sandbox, every process started is recorded (pid, start time) in
`<workdir>/monitoring.json`, and only a pid that is still that program is ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachelayer.ports import port_is_free
from cachelayer.render.monitoring import (
    EXPORTER_BINARY,
    ExporterTarget,
    exporter_args,
    exporter_targets,
    load_balancer_scrape_targets,
    prometheus_config,
    rules_yaml,
    scrape_targets,
)
from cachelayer.sandbox.errors import SandboxError
from cachelayer.sandbox.local import LocalSandbox
from cachelayer.sandbox.processes import process_cmdline, process_start_time, start_detached

STATE_FILE = "monitoring.json"
DEFAULT_PROMETHEUS_PORT = 9090
PUSHGATEWAY_BINARY = "prometheus-pushgateway"
PUSHGATEWAY_OFFSET = 100  # the Pushgateway listens on Prometheus's port + 100 (9190 by default)
INSTALL_HINT = ("run scripts/setup.sh (it installs them), or "
                "`apt-get install prometheus prometheus-redis-exporter prometheus-pushgateway`")


@dataclass(frozen=True)
class MonitoredProcess:
    name: str
    pid: int
    start_time: int
    binary: str  # the program's base name, checked before a signal


class SandboxMonitoring:
    """Exporters and Prometheus for a running LocalSandbox."""

    def __init__(self, sandbox: LocalSandbox, prometheus_port: int = DEFAULT_PROMETHEUS_PORT,
                 pushgateway_port: int | None = None) -> None:
        self.sandbox = sandbox
        self.prometheus_port = prometheus_port
        self.pushgateway_port = pushgateway_port or prometheus_port + PUSHGATEWAY_OFFSET
        self.dir = sandbox.workdir / "monitoring"
        self.targets: tuple[ExporterTarget, ...] = exporter_targets(
            sandbox.settings, sandbox.topology, lambda p: "127.0.0.1", lambda p: p.address
        )
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # reaped in down()

    @property
    def state_file(self) -> Path:
        return self.sandbox.workdir / STATE_FILE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def pushgateway_url(self) -> str:
        return f"http://127.0.0.1:{self.pushgateway_port}"

    # ------------------------------------------------------------------ lifecycle
    def up(self, wait_seconds: float = 60) -> None:
        """Start what is not running; return once Prometheus scrapes every exporter."""
        binaries = {}
        for name in (EXPORTER_BINARY, PUSHGATEWAY_BINARY, "prometheus"):
            path = shutil.which(name)
            if path is None:
                raise SandboxError(f"`{name}` was not found on PATH: {INSTALL_HINT}")
            binaries[name] = path
        running = self.running()
        wanted = [t for t in self.targets if t.process not in running]
        for target in wanted:
            port = int(target.listen.rsplit(":", 1)[1])
            if not port_is_free("127.0.0.1", port):
                raise SandboxError(
                    f"exporter port {port} (for {target.process}) is in use: set monitoring.exporter_base_port"
                )
        if "prometheus" not in running and not port_is_free("127.0.0.1", self.prometheus_port):
            raise SandboxError(f"Prometheus port {self.prometheus_port} is in use: choose another with --prometheus-port")
        if "pushgateway" not in running and not port_is_free("127.0.0.1", self.pushgateway_port):
            raise SandboxError(f"Pushgateway port {self.pushgateway_port} (Prometheus's + {PUSHGATEWAY_OFFSET}) is in "
                               "use: choose another --prometheus-port")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        rules = self.dir / "rules.yml"
        targets = self.dir / "targets.json"
        rules.write_text(rules_yaml(self.sandbox.settings))
        targets.write_text(json.dumps(scrape_targets(self.sandbox.settings, self.targets), indent=2))
        pushgateway = f"127.0.0.1:{self.pushgateway_port}"
        balancers = None
        if self.sandbox.settings.load_balancer_enabled:  # the sandbox's haproxy, on loopback
            balancers = self.dir / "load_balancer_targets.json"
            balancers.write_text(json.dumps(load_balancer_scrape_targets(self.sandbox.settings, ["127.0.0.1"]), indent=2))
        (self.dir / "prometheus.yml").write_text(
            prometheus_config(self.sandbox.settings, str(rules), str(targets), pushgateway,
                              str(balancers) if balancers else None))

        records = dict(self.records())
        password = self.sandbox.passwords.monitor
        tls_ca = str(self.sandbox.tls_dir / "ca.crt") if self.sandbox.tls_dir else None
        for target in wanted:
            argv = [binaries[EXPORTER_BINARY], *exporter_args(target, tls_ca)]
            records[target.process] = self._spawn(target.process, argv, {"REDIS_PASSWORD": password})
        if "pushgateway" not in running:
            # In memory only: what was pushed goes with the sandbox.
            argv = [binaries[PUSHGATEWAY_BINARY], f"--web.listen-address={pushgateway}"]
            records["pushgateway"] = self._spawn("pushgateway", argv, {})
        if "prometheus" not in running:
            argv = [
                binaries["prometheus"],
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--web.enable-lifecycle",  # POST /-/reload after the rules change
            ]
            records["prometheus"] = self._spawn("prometheus", argv, {})
        self._write_state(records)
        self.wait_scraped(wait_seconds)

    def down(self) -> tuple[str, ...]:
        """Stop what this sandbox's monitoring started; remove its files."""
        stopped = []
        for name, record in self.records().items():
            if self._alive(record):
                os.kill(record.pid, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + 10
        for name in stopped:
            record = self.records()[name]
            while self._alive(record) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(record):
                os.kill(record.pid, signal.SIGKILL)
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)  # no zombie left behind in a long-running caller
        self._children.clear()
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return tuple(stopped)

    def restart_exporters(self, password: str, wait_seconds: float = 30) -> tuple[str, ...]:
        """The running exporters again, logging in as `monitor` with `password`: phase 1 of a
        `monitor` rotation (every node accepts both by then). Returns once each one reports
        redis_up 1 again; names the processes whose exporter was restarted."""
        running = self.running()
        exporters = [t for t in self.targets if t.process in running]
        if not exporters:
            return ()
        binary = shutil.which(EXPORTER_BINARY)
        if binary is None:
            raise SandboxError(f"`{EXPORTER_BINARY}` was not found on PATH: {INSTALL_HINT}")
        records = dict(self.records())
        tls_ca = str(self.sandbox.tls_dir / "ca.crt") if self.sandbox.tls_dir else None
        for target in exporters:
            self._stop(running[target.process])
            argv = [binary, *exporter_args(target, tls_ca)]
            records[target.process] = self._spawn(target.process, argv, {"REDIS_PASSWORD": password})
        self._write_state(records)
        deadline = time.monotonic() + wait_seconds
        for target in exporters:
            while not _redis_up(f"http://{target.listen}/metrics"):
                if time.monotonic() > deadline:
                    raise SandboxError(f"the exporter of {target.process} does not log in with the new monitor "
                                       f"password within {wait_seconds:.0f} s: see {self.dir / (target.process + '.log')}")
                time.sleep(0.1)
        return tuple(t.process for t in exporters)

    def _stop(self, record: MonitoredProcess) -> None:
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._alive(record) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive(record):
            os.kill(record.pid, signal.SIGKILL)
        child = self._children.pop(record.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> MonitoredProcess:
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        child, start_time = start_detached(argv, self.dir, self.dir / f"{name}.log", environment)
        self._children[child.pid] = child
        return MonitoredProcess(name, child.pid, start_time, os.path.basename(argv[0]))

    def records(self) -> dict[str, MonitoredProcess]:
        if not self.state_file.exists():
            return {}
        data = json.loads(self.state_file.read_text())
        return {name: MonitoredProcess(**record) for name, record in data.items()}

    def running(self) -> dict[str, MonitoredProcess]:
        return {name: r for name, r in self.records().items() if self._alive(r)}

    @staticmethod
    def _alive(record: MonitoredProcess) -> bool:
        if process_start_time(record.pid) != record.start_time:
            return False
        return os.path.basename(process_cmdline(record.pid).split(" ", 1)[0]) == record.binary

    def _write_state(self, records: dict[str, MonitoredProcess]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: r.__dict__ for n, r in records.items()}, indent=2))
        tmp.replace(self.state_file)

    # ------------------------------------------------------------------ Prometheus API
    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise SandboxError(f"Prometheus API {path}: {body}")
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as Prometheus reports them."""
        result: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return result

    def firing(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == name and a["state"] == "firing"]

    def wait_scraped(self, timeout: float) -> None:
        """Every exporter is scraped, up, and reads its Redis (redis_up 1)."""
        deadline = time.monotonic() + timeout
        missing: list[str] = [t.process for t in self.targets]
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, SandboxError, ValueError):
                up = {s["metric"].get("process") for s in self.api("query", query="redis_up == 1")["result"]}
                missing = [t.process for t in self.targets if t.process not in up]
                if not missing:
                    return
            time.sleep(0.5)
        raise SandboxError(f"Prometheus does not see these exporters up after {timeout} s: {', '.join(missing)}")


def _redis_up(url: str) -> bool:
    """The exporter answers and reaches its process (`redis_up 1`)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return False
    return any(line.strip() == "redis_up 1" for line in text.splitlines())
