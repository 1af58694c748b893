"""The Redis users' passwords: taken from secret stack settings, else generated once; and, during
a rotation's phase 1, the retired ones (`<key>_previous`), which processes keep accepting."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from cachelayer.config.settings import MIN_PASSWORD_LENGTH, PASSWORD_KEYS, PREVIOUS_SUFFIX
from cachelayer.render.nodes import Passwords

GENERATED_LENGTH = 32
assert GENERATED_LENGTH >= MIN_PASSWORD_LENGTH, "generated passwords must pass the settings check"


@dataclass
class RedisCredentialsArgs:
    # Secret stack settings by key (app_password, ..., app_password_previous, ...); None means
    # "generate one" for a password, "no rotation in progress" for a `_previous` key.
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
        # The retired passwords, by user ("app", ...): secret too, and absent outside a rotation.
        previous: dict[str, pulumi.Output[str]] = {}
        for key in PASSWORD_KEYS:
            retired = args.given.get(f"{key}{PREVIOUS_SUFFIX}")
            if retired is not None:
                previous[key.removesuffix("_password")] = pulumi.Output.secret(retired)
        current = pulumi.Output.all(*(by_key[k] for k in PASSWORD_KEYS))
        self.passwords = pulumi.Output.secret(
            pulumi.Output.all(current, pulumi.Output.all(**previous)).apply(
                lambda values: Passwords(*values[0], previous=dict(values[1]))
            )
        )
        self.admin_password = by_key["admin_password"]
        self.app_password = by_key["app_password"]
        self.register_outputs({"admin_password": self.admin_password, "app_password": self.app_password})
