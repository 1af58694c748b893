"""PLACEHOLDER: the prod stack's hosts component is being written (issue 5)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from ..render import Passwords
from ..settings import Settings
from ..topology import Topology


@dataclass
class RedisHostsArgs:
    settings: Settings
    topology: Topology
    passwords: pulumi.Output[Passwords]
    ssh_private_key: pulumi.Output[str]


class RedisHostsDeployment(pulumi.ComponentResource):
    def __init__(self, name: str, args: RedisHostsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cachelayer:hosts:RedisHostsDeployment", name, None, opts)
        self.register_outputs({})
