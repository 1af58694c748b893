"""The Redis users' passwords: taken from secret stack settings, else generated once."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from cachelayer.config.settings import MIN_PASSWORD_LENGTH, PASSWORD_KEYS
from cachelayer.render.nodes import Passwords

GENERATED_LENGTH = 32
assert GENERATED_LENGTH >= MIN_PASSWORD_LENGTH, "generated passwords must pass the settings check"


@dataclass
class RedisCredentialsArgs:
    # Secret stack settings by key (app_password, ...); None means "generate one".
    given: dict[str, pulumi.Output[str] | None]


class RedisCredentials(pulumi.ComponentResource):
    passwords: pulumi.Output[Passwords]
    admin_password: pulumi.Output[str]
    app_password: pulumi.Output[str]

    def __init__(self, name: str, args: RedisCredentialsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cachelayer:credentials:RedisCredentials", name, None, opts)
        by_key: dict[str, pulumi.Output[str]] = {}
        for key in PASSWORD_KEYS:
            given = args.given.get(key)
            if given is None:
                generated = random.RandomPassword(
                    f"{name}-{key.replace('_', '-')}",
                    random.RandomPasswordArgs(length=GENERATED_LENGTH, special=False, min_numeric=4),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                given = generated.result
            # Secret whatever the source: mocks and older providers may not mark it.
            by_key[key] = pulumi.Output.secret(given)
        self.passwords = pulumi.Output.all(*(by_key[k] for k in PASSWORD_KEYS)).apply(lambda values: Passwords(*values))
        self.admin_password = by_key["admin_password"]
        self.app_password = by_key["app_password"]
        self.register_outputs({"admin_password": self.admin_password, "app_password": self.app_password})
