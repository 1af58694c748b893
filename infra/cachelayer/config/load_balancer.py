"""`cachelayer:load_balancer`: HAProxy in front of the Sentinel groups, for clients that do not
speak Sentinel (docs/load-balancer.md). Pure Python.

Group g (redis-master-<g+1>) is reached for writes at write_base_port + g (the group's current
master, found by a health check that asks each node for its role) and for reads at
read_base_port + g (its replicas, the master as a backup).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cachelayer.config.checks import INT_RANGES
from cachelayer.errors import SettingsError
from cachelayer.fields import from_mapping


@dataclass(frozen=True)
class LoadBalancerSettings:
    """`cachelayer:load_balancer`: one HAProxy per machine that runs a node (hosts target), one
    container on the docker target, one in the local sandbox."""

    enabled: bool | None = None  # None: on for the sentinel topology, off for cluster
    write_base_port: int = 7100  # group g's master: write_base_port + g
    read_base_port: int = 7200  # group g's replicas: read_base_port + g
    # HAProxy's built-in Prometheus exporter (`haproxy -vv`: "Built with the Prometheus exporter").
    exporter_port: int = 9101
    # How often each node's role is checked, and how many results in a row mark it down or up:
    # a dead master stops taking connections after at most fall x check_interval_ms, a promoted
    # replica takes them after at most rise x check_interval_ms.
    check_interval_ms: int = 1000
    fall: int = 2
    rise: int = 1
    # The docker target's HAProxy: the official image, 2.6 as Debian 12's haproxy on the hosts.
    image: str = "haproxy:2.6"


def load_load_balancer_settings(raw: Any) -> LoadBalancerSettings:
    settings = from_mapping(LoadBalancerSettings, raw, "load_balancer")
    for key in INT_RANGES:
        section, _, name = key.partition(".")
        if section == "load_balancer":
            bound = INT_RANGES[key]
            value = getattr(settings, name)
            if not bound.low <= value <= bound.high:
                suggested = min(max(value, bound.low), bound.high)
                raise SettingsError(
                    key,
                    f"{value} is outside {bound.low}..{bound.high} ({bound.source})",
                    f"use a value between {bound.low} and {bound.high}, e.g. {suggested}",
                    suggested,
                )
    return settings


def load_balancer_on(settings: LoadBalancerSettings, topology: str) -> bool:
    return settings.enabled if settings.enabled is not None else topology == "sentinel"


def load_balancer_ports(settings: LoadBalancerSettings, groups: int) -> dict[int, str]:
    """Every port the load balancer listens on -> what it is."""
    ports = {settings.write_base_port + g: f"load balancer write (group {g + 1})" for g in range(groups)}
    for g in range(groups):
        ports.setdefault(settings.read_base_port + g, f"load balancer read (group {g + 1})")
    ports.setdefault(settings.exporter_port, "load balancer exporter")
    return ports


def validate_load_balancer(
    settings: LoadBalancerSettings, topology: str, groups: int, owners: Mapping[int, str]
) -> None:
    """Refuse a load balancer the topology cannot use, and ports that collide with each other or
    with `owners` (every other port of the deployment -> what it is)."""
    if settings.enabled and topology == "cluster":
        raise SettingsError(
            "load_balancer.enabled",
            "a load balancer cannot stand in front of Redis Cluster: cluster clients must speak the cluster protocol "
            "(MOVED/ASK redirects to each node's own address), which a TCP proxy would break",
            "remove load_balancer (or set enabled: false), or use topology: sentinel",
            False,
        )
    if not load_balancer_on(settings, topology):
        return
    wanted: list[tuple[int, str, str]] = [
        *((settings.write_base_port + g, "load_balancer.write_base_port", f"write (group {g + 1})") for g in range(groups)),
        *((settings.read_base_port + g, "load_balancer.read_base_port", f"read (group {g + 1})") for g in range(groups)),
        (settings.exporter_port, "load_balancer.exporter_port", "exporter"),
    ]
    taken = dict(owners)
    for port, key, what in wanted:
        if port > 65535:
            raise SettingsError(key, f"the load balancer's {what} port {port} is above 65535", "choose a lower base port")
        if port in taken:
            free = _free_run(taken, groups if key != "load_balancer.exporter_port" else 1, port)
            raise SettingsError(
                key,
                f"the load balancer's {what} port {port} is also the {taken[port]} port",
                f"choose ports no other process uses, e.g. {key.rsplit('.', 1)[1]}: {free}",
                free,
            )
        taken[port] = f"load balancer {what}"


def _free_run(taken: Mapping[int, str], length: int, start: int) -> int:
    port = start
    while any(p in taken for p in range(port, port + length)):
        port += 1
    return port
