"""`cachelayer:hosts`: the prod stack's Linux servers and which node runs where. Pure Python."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cachelayer.config.checks import INT_RANGES, MACHINE_NAME, USER_NAME, calendar_ok
from cachelayer.errors import SettingsError
from cachelayer.fields import from_mapping

BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

class NodeLayout(Protocol):
    """What the hosts settings need of the Redis settings (config.settings.RedisSettings): this
    module sits below settings and does not import it."""

    @property
    def node_count(self) -> int: ...
    @property
    def replicas_per_master(self) -> int: ...
    @property
    def masters(self) -> int: ...
    @property
    def base_port(self) -> int: ...


@dataclass(frozen=True)
class Machine:
    """One server reachable over SSH."""

    name: str
    address: str
    ssh_user: str | None = None  # falls back to hosts.ssh_user
    ssh_port: int = 22
    # The server's SSH host public key as known_hosts writes it ("ssh-ed25519 AAAA..."): the
    # deployment refuses a server presenting another key. Required: the ACLs, admin.pass and the
    # TLS key must never go to whatever answers at the address.
    ssh_host_key: str | None = None


@dataclass(frozen=True)
class HostsSettings:
    machines: tuple[Machine, ...] = ()
    ssh_user: str = "root"
    # Machine name per node, in port order. Empty: masters round-robin, each replica one host on.
    placement: tuple[str, ...] = ()
    # Networks (CIDR) of the application servers allowed to reach the client ports.
    app_networks: tuple[str, ...] = ()
    # vm.overcommit_memory=1, transparent huge pages off, somaxconn: what Redis asks for.
    kernel_tuning: bool = True
    backup_retention_days: int = 7
    backup_on_calendar: str = "*-*-* 02:00:00"
    # nftables limits per source address on the Redis, Sentinel and exporter ports (the machines
    # themselves exempt), far above what an application host's connection pools do: see
    # docs/security.md, "Connection rate limiting", for how they were chosen.
    connection_rate_per_source: int = 100  # new connections per second, sustained
    connection_burst_per_source: int = 4096  # new connections at once above the rate
    connections_per_source: int = 4096  # open connections per source and port


def check_user_name(key: str, name: str) -> None:
    if not USER_NAME.match(name):
        raise SettingsError(
            key,
            f"'{name}' is not a Linux user name",
            "use lower-case letters, digits, _ and -, starting with a letter or _, at most 32 (e.g. deploy)",
            "deploy",
        )


SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
                 "rsa-sha2-256", "ssh-rsa")


def _check_host_key(index: int, machine: Machine) -> None:
    key = f"hosts.machines[{index}].ssh_host_key"
    fix = f"pin the server's key: `ssh-keyscan -t ed25519 {machine.address} | cut -d' ' -f2-` prints the value"
    if machine.ssh_host_key is None:
        raise SettingsError(
            key, "is missing: without it the deploy sends the ACLs, admin.pass and the TLS key to whatever answers "
            f"at {machine.address}", fix,
        )
    parts = machine.ssh_host_key.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES or not BASE64.fullmatch(parts[1]):
        raise SettingsError(key, "is not a public key line ('<type> <base64>')", fix)


def default_placement(machines: tuple[Machine, ...], node_count: int, replicas_per_master: int) -> tuple[str, ...]:
    """One node per machine when there are enough machines. Otherwise master m on machine m and
    its r-th replica r machines further on, so a master and its replicas never share a machine
    while there are more machines than nodes per group."""
    names = [m.name for m in machines]
    if len(names) >= node_count:
        return tuple(names[:node_count])
    masters = node_count // (replicas_per_master + 1)
    return tuple(names[(index % masters + index // masters) % len(names)] for index in range(node_count))


def load_hosts_settings(raw: Mapping[str, Any] | None, redis: NodeLayout) -> HostsSettings:
    hosts = from_mapping(HostsSettings, raw, "hosts")
    if not hosts.machines:
        raise SettingsError("hosts.machines", "no machine is listed", "list the servers with name and address")
    names = [m.name for m in hosts.machines]
    if len(set(names)) != len(names):
        raise SettingsError("hosts.machines", "two machines share a name", "give every machine its own name")
    check_user_name("hosts.ssh_user", hosts.ssh_user)
    addresses: dict[str, int] = {}
    for index, machine in enumerate(hosts.machines):
        if not MACHINE_NAME.match(machine.name):
            raise SettingsError(
                f"hosts.machines[{index}].name",
                f"'{machine.name}' cannot name resources, certificates and files",
                "use lower-case letters, digits and inner hyphens, at most 63 (e.g. cache-1)",
                f"cache-{index + 1}",
            )
        if machine.ssh_user is not None:
            check_user_name(f"hosts.machines[{index}].ssh_user", machine.ssh_user)
        try:
            ipaddress.ip_address(machine.address)
        except ValueError:
            raise SettingsError(
                f"hosts.machines[{index}].address", f"'{machine.address}' is not an IP address", "write the server's IP"
            ) from None
        if machine.address in addresses:
            # Two names for one server: placement would put a master and its replica together.
            raise SettingsError(
                f"hosts.machines[{index}].address",
                f"{machine.address} is also the address of hosts.machines[{addresses[machine.address]}]",
                "give each machine its own server's address, or list the server once",
            )
        addresses[machine.address] = index
        if not 1 <= machine.ssh_port <= 65535:
            raise SettingsError(f"hosts.machines[{index}].ssh_port", "is not a TCP port", "use 22 or your SSH port")
        _check_host_key(index, machine)
    for index, network in enumerate(hosts.app_networks):
        try:
            ipaddress.ip_network(network)
        except ValueError:
            raise SettingsError(f"hosts.app_networks[{index}]", f"'{network}' is not a network", "write CIDR") from None
    retention = INT_RANGES["hosts.backup_retention_days"]
    if not retention.low <= hosts.backup_retention_days <= retention.high:
        raise SettingsError(
            "hosts.backup_retention_days", f"must be between {retention.low} and {retention.high} days", "use 7", 7
        )
    calendar = hosts.backup_on_calendar
    # It lands in OnCalendar= of a systemd timer, which refuses to load on a bad expression.
    if not calendar_ok(calendar):
        raise SettingsError(
            "hosts.backup_on_calendar",
            f"{calendar!r} is not a calendar expression of the supported systemd.time(7) forms",
            "write e.g. 'daily', '*-*-* 02:00:00' or 'Mon..Fri 02:30' (check with `systemd-analyze calendar`)",
            "*-*-* 02:00:00",
        )

    for key, value, default in (
        ("hosts.connection_rate_per_source", hosts.connection_rate_per_source, 100),
        ("hosts.connection_burst_per_source", hosts.connection_burst_per_source, 4096),
        ("hosts.connections_per_source", hosts.connections_per_source, 4096),
    ):
        limit = INT_RANGES[key]
        if not limit.low <= value <= limit.high:
            raise SettingsError(
                key, f"{value} is outside {limit.low}..{limit.high} ({limit.source})", f"use {default} (the default)", default
            )

    placement = hosts.placement or default_placement(hosts.machines, redis.node_count, redis.replicas_per_master)
    if len(placement) != redis.node_count:
        raise SettingsError(
            "hosts.placement",
            f"names {len(placement)} machines for {redis.node_count} nodes",
            "name one machine per node, in port order, or remove placement",
        )
    for index, name in enumerate(placement):
        if name not in names:
            raise SettingsError(
                f"hosts.placement[{index}]", f"'{name}' is not a listed machine", f"use one of {', '.join(names)}"
            )
    masters = redis.masters
    for index, name in enumerate(placement):
        if index >= masters and name == placement[index % masters]:
            raise SettingsError(
                f"hosts.placement[{index}]",
                f"node {redis.base_port + index} would be a replica on the same machine ({name}) as its master "
                f"{redis.base_port + index % masters}, so losing that machine loses the shard",
                "put each replica on another machine than its master",
            )
    return HostsSettings(
        machines=hosts.machines,
        ssh_user=hosts.ssh_user,
        placement=tuple(placement),
        app_networks=hosts.app_networks,
        kernel_tuning=hosts.kernel_tuning,
        backup_retention_days=hosts.backup_retention_days,
        backup_on_calendar=hosts.backup_on_calendar,
        connection_rate_per_source=hosts.connection_rate_per_source,
        connection_burst_per_source=hosts.connection_burst_per_source,
        connections_per_source=hosts.connections_per_source,
    )
