"""Warnings for settings that are legal but risky. Pure: the program logs them with pulumi.log.warn."""

from __future__ import annotations

import ipaddress

from cachelayer.config.backup import OFF_HOST_FIX
from cachelayer.config.settings import Settings
from cachelayer.plan.topology import build_topology


def settings_warnings(settings: Settings) -> list[str]:
    """One sentence per risky choice, naming the stack key."""
    redis = settings.redis
    warnings: list[str] = []
    hosts = settings.hosts
    if hosts is not None:
        for index, network in enumerate(hosts.app_networks):
            if ipaddress.ip_network(network).prefixlen == 0:
                warnings.append(
                    f"hosts.app_networks[{index}] is {network}: every address on the internet may reach the client ports"
                )
        if redis.replicas_per_master == 0:
            warnings.append(
                "redis.replicas_per_master is 0 on the hosts target: losing one machine loses its shard's data"
            )
        if redis.topology == "sentinel":
            sentinel_hosts = [s.host for s in build_topology(settings).sentinels]
            if len(set(sentinel_hosts)) < len(sentinel_hosts):
                warnings.append(
                    "sentinels share a machine (sentinel j runs on hosts.machines[j]): losing it can take the quorum"
                )
        if not settings.backup.off_host:
            warnings.append(
                "backup.destination is not off-host: the scheduled `cachelayer backup` refuses to run and "
                f"nothing keeps a copy of the data away from the checkout; {OFF_HOST_FIX}"
            )
        if settings.monitoring_enabled and not settings.monitoring.scrape_networks:
            warnings.append(
                "monitoring.scrape_networks is empty: the exporters answer on loopback only, so no Prometheus "
                "outside the hosts can scrape them"
            )
    if redis.topology == "sentinel" and not redis.appendonly:
        warnings.append(
            "redis.appendonly is false in sentinel topology: a master restarted within down-after comes back "
            "as the master with only its last RDB snapshot, and its replicas copy that"
        )
    if redis.maxmemory_clients in ("0", "0%"):
        warnings.append("redis.maxmemory_clients is 0: client buffers may grow until the shard's data is evicted")
    if redis.sanitize_dump_payload == "no":
        warnings.append("redis.sanitize_dump_payload is no: a corrupt RESTORE payload can crash the node")
    if redis.min_replicas_to_write > 0:
        warnings.append(
            f"redis.min_replicas_to_write is {redis.min_replicas_to_write}: a master refuses writes while "
            "fewer replicas are connected"
        )
    return warnings
