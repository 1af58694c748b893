"""The local sandbox as a deployment the ops commands can work on: its Target (endpoints,
passwords, files), and the scale-in it runs before `up`. ops never imports the sandbox, so the
sandbox-aware parts live here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cachelayer.errors import CachelayerError
from cachelayer.ops.scale_in import Report, restore_replicas, retire
from cachelayer.ops.target import Endpoint, Target
from cachelayer.render.nodes import USERS
from cachelayer.sandbox.local import LocalSandbox
from cachelayer.sandbox.state import default_workdir


def from_sandbox(stack: str, workdir: Path | None = None) -> Target | None:
    """The stack's local sandbox, when one of its processes is running."""
    directory = workdir or default_workdir(stack)
    try:
        sandbox = LocalSandbox.from_workdir(directory)
    except (CachelayerError, OSError, KeyError):  # no sandbox there, or a state file from elsewhere
        return None
    if not sandbox.running():
        return None
    return target_of_sandbox(sandbox, f"local sandbox {sandbox.workdir}")


def target_of_sandbox(sandbox: LocalSandbox, source: str = "local sandbox") -> Target:
    topology = sandbox.topology
    passwords = sandbox.passwords
    return Target(
        stack=sandbox.settings.stack,
        source=source,
        kind=topology.kind,
        nodes=tuple(Endpoint(n.name, n.address, n.port) for n in topology.nodes),
        sentinels=tuple(Endpoint(s.name, s.address, s.port) for s in topology.sentinels),
        groups=tuple(m.group for m in topology.masters) if topology.kind == "sentinel" else (),
        admin_password=passwords.admin,
        sentinel_password=passwords.admin,  # sentinels know the admin user too (sentinel.conf.j2)
        tls_ca=str(sandbox.tls_dir / "ca.crt") if sandbox.tls_dir else None,
        settings=sandbox.settings,
        passwords={
            USERS.app: passwords.app,
            USERS.admin: passwords.admin,
            USERS.replication: passwords.replication,
            USERS.sentinel: passwords.sentinel,
            USERS.monitor: passwords.monitor,
        },
        sandbox=sandbox,
        origin="sandbox",
    )


def retire_sandbox_nodes(sandbox: LocalSandbox, report: Report = lambda line: None) -> list[str]:
    """Drain, forget and stop the sandbox's running nodes that the stack no longer plans."""
    retired = sandbox.retired_nodes()
    if not retired:
        return []
    if sandbox.topology.kind != "cluster":
        # Sentinel groups are whole master/replica pairs: nothing holds another group's data.
        for name in sorted(retired):
            sandbox.forget(name)
        return sorted(retired)
    planned = target_of_sandbox(sandbox)
    leaving = tuple(Endpoint(name, record.address, record.port) for name, record in sorted(retired.items()))
    target = replace(planned, nodes=planned.nodes + leaving)
    retire(target, leaving, len(sandbox.topology.masters), report)
    for endpoint in leaving:
        sandbox.forget(endpoint.name)
    restore_replicas(planned, sandbox.settings.redis.replicas_per_master, report)
    return [e.name for e in leaving]
