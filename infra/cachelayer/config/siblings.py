"""What one stack may not share with the project's other stacks (regions: `prod`, `prod-us`, ...).

Every stack of the project runs the same program, so names that come from the stack's own name
(Pulumi URNs, backup names `<stack>-<stamp>`, the monitoring `stack` label, the drift issue, the
TLS CA) never collide. What comes from a setting can: a machine's address (every stack writes
the same /etc/redis/<port> files and redis-<port> units), the Cloudflare zone (one cache-rules
entry point per zone, one value per zone setting), the Docker network whose name the data
volumes carry. Two stacks naming the same one would overwrite each other, silently; so this
module reads the sibling stack files (Pulumi.<other>.yaml beside Pulumi.yaml) and refuses the
second claim in one line naming both stacks and the setting to change. docs/regions.md.

Only the claims are read from a sibling (not its whole settings): a sibling with a mistake of
its own is its own preview's failure, not a reason to block this stack's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cachelayer.config.settings import Settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError


@dataclass(frozen=True)
class Claim:
    """Something a stack's settings take for itself alone: `what` (the value) under `key`."""

    key: str  # the stack key to change, e.g. hosts.machines[2].address
    kind: str  # zone, machine, docker network
    what: str


def project_stacks(root: Path) -> list[str]:
    """The stacks that have a stack file in the project at `root`."""
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))


def _section(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key)
    return value if isinstance(value, Mapping) else {}


def _address(text: str) -> str:
    """One spelling per address (2001:db8::1 and 2001:DB8:0::1 are one machine)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def config_claims(config: Mapping[str, Any]) -> list[Claim]:
    """The claims of a stack's raw config (a stack file's keys without the project prefix),
    read leniently: a key of the wrong shape claims nothing."""
    claims = []
    zone = _section(config, "cdn").get("zone_id")
    if isinstance(zone, str) and zone:
        claims.append(Claim("cdn.zone_id", "the Cloudflare zone", zone.lower()))
    redis = _section(config, "redis")
    if redis.get("target", "docker") == "hosts":
        machines = _section(config, "hosts").get("machines")
        for index, machine in enumerate(machines if isinstance(machines, list) else []):
            if isinstance(machine, Mapping) and isinstance(machine.get("address"), str):
                claims.append(Claim(f"hosts.machines[{index}].address", "the machine", _address(machine["address"])))
    else:
        network = _section(config, "docker").get("network_name", "cachelayer")
        if isinstance(network, str):
            claims.append(Claim("docker.network_name", "the Docker network (and the data volumes named after it)", network))
    return claims


def settings_claims(settings: Settings) -> list[Claim]:
    """The claims of a loaded stack: the same as `config_claims` of its stack file."""
    claims = []
    if settings.cdn is not None:
        claims.append(Claim("cdn.zone_id", "the Cloudflare zone", settings.cdn.zone_id.lower()))
    if settings.hosts is not None:
        for index, machine in enumerate(settings.hosts.machines):
            claims.append(Claim(f"hosts.machines[{index}].address", "the machine", _address(machine.address)))
    else:
        claims.append(
            Claim("docker.network_name", "the Docker network (and the data volumes named after it)", settings.docker.network_name)
        )
    return claims


_WHY = {
    "cdn.zone_id": "a zone has one cache-rules entry point and one value per setting, so the two stacks would overwrite "
    "each other's",
    "hosts.machines": "both would write the same /etc/redis/<port> files and redis-<port> units on it",
    "docker.network_name": "on one Docker engine both would use that network and share its data volumes",
}
_FIX = {
    "cdn.zone_id": "leave cdn out of all but one stack of the zone (one stack manages the zone: docs/regions.md)",
    "hosts.machines": "give each stack its own servers",
    "docker.network_name": "give each stack its own network name, e.g. cachelayer-{stack}",
}


def sibling_claims(stack: str, root: Path) -> list[Claim]:
    """The claims of another stack's file; one that is not even YAML claims nothing (its own
    preview says what is wrong with it)."""
    try:
        return config_claims(read_stack_config(stack, root))
    except yaml.YAMLError:
        return []


def zone_owners(root: Path) -> dict[str, list[str]]:
    """Cloudflare zone id -> the stacks whose stack file names it in cdn.zone_id."""
    owners: dict[str, list[str]] = {}
    for stack in project_stacks(root):
        for claim in sibling_claims(stack, root):
            if claim.key == "cdn.zone_id":
                owners.setdefault(claim.what, []).append(stack)
    return owners


def check_claims(stack: str, claims: Iterable[Claim], siblings: Mapping[str, Iterable[Claim]]) -> None:
    """Refuses the first of `stack`'s claims that a sibling stack (stack name -> its claims) makes too."""
    taken: dict[tuple[str, str], tuple[str, str]] = {}
    for other, other_claims in sorted(siblings.items()):
        if other == stack:
            continue
        for claim in other_claims:
            taken.setdefault((claim.kind, claim.what), (other, claim.key))
    for claim in claims:
        if (claim.kind, claim.what) in taken:
            other, other_key = taken[(claim.kind, claim.what)]
            family = claim.key.partition("[")[0]
            raise SettingsError(
                claim.key,
                f"{claim.kind} {claim.what} is also stack {other}'s ({other_key} in Pulumi.{other}.yaml): {_WHY[family]}",
                _FIX[family].format(stack=stack),
            )


def validate_siblings(settings: Settings, root: Path) -> None:
    """Refuses a setting of this stack that another stack file of the project at `root` claims too."""
    siblings = {other: sibling_claims(other, root) for other in project_stacks(root) if other != settings.stack}
    check_claims(settings.stack, settings_claims(settings), siblings)
