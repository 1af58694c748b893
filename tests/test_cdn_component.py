"""CloudflareCdn under Pulumi mocks: what each resource receives, on the wire (camelCase)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pulumi
import pytest
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

from cachelayer.cdn_rules import build_cache_rules
from cachelayer.cdn_settings import CdnSettings, load_cdn_settings

SECRET_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "cf-token-do-not-leak-0123456789"


class RecordingMocks(Mocks):
    """Records every resource registration; outputs echo the inputs."""

    def __init__(self) -> None:
        self.resources: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


F = TypeVar("F", bound=Callable[..., Any])


def pulumi_test(fn: F) -> F:
    """`pulumi.runtime.test` (awaits the returned Output), typed for mypy --strict."""
    runtime_test: Callable[[F], Any] = pulumi.runtime.test  # untyped in the SDK
    return cast(F, runtime_test(fn))


# Mocks must be in place before any resource is declared, or nothing resolves.
MOCKS = RecordingMocks()
pulumi.runtime.set_mocks(MOCKS, preview=False)

from cachelayer.components.cdn import CloudflareCdn, CloudflareCdnArgs  # noqa: E402


def cdn_settings(**overrides: Any) -> CdnSettings:
    loaded = load_cdn_settings({"zone_id": ZONE, "zone_name": "learn.example.com", **overrides}, required=True)
    assert loaded is not None
    return loaded


def declare(settings: CdnSettings, api_token: pulumi.Input[str] | None = None) -> dict[str, MockResourceArgs]:
    """Declare the component; return what the mocks received, by resource name."""
    MOCKS.resources.clear()

    @pulumi_test
    def run() -> pulumi.Output[Any]:
        cdn = CloudflareCdn("cdn", CloudflareCdnArgs(settings=settings, api_token=api_token))
        return cdn.ruleset_id

    run()  # returns once every registration has reached the mocks
    return {r.name: r for r in MOCKS.resources}


def camel(value: Any) -> Any:
    """The wire form of API-shaped plain data: camelCase keys, as the provider SDK sends them."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def plain_strings(value: Any) -> list[str]:
    """Every string in the inputs that is NOT inside a secret marker."""
    if isinstance(value, dict):
        if value.get(SECRET_KEY) == SECRET_SIG:
            return []
        return [s for k, v in value.items() for s in [str(k), *plain_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in plain_strings(v)]
    return [value] if isinstance(value, str) else []


def test_one_ruleset_in_the_cache_settings_phase_with_every_rule() -> None:
    settings = cdn_settings()
    resources = declare(settings)
    rulesets = [r for r in resources.values() if r.typ == "cloudflare:index/ruleset:Ruleset"]
    assert [r.name for r in rulesets] == ["cdn-cache-rules"]
    inputs = rulesets[0].inputs
    assert (inputs["zoneId"], inputs["kind"], inputs["phase"]) == (ZONE, "zone", "http_request_cache_settings")
    expected = build_cache_rules(settings)
    assert [r["ref"] for r in inputs["rules"]] == [r.ref for r in expected]
    for wire, rule in zip(inputs["rules"], expected, strict=True):
        assert wire["action"] == "set_cache_settings", rule.ref
        assert wire["expression"] == rule.expression, rule.ref
        assert wire["enabled"] is True, rule.ref
        # The typed ArgsDict twin sends exactly the core's API-shaped parameters.
        assert wire["actionParameters"] == camel(rule.action.parameters()), rule.ref


def test_rule_ttl_values_on_the_wire() -> None:
    rules = {r["ref"]: r["actionParameters"] for r in declare(cdn_settings())["cdn-cache-rules"].inputs["rules"]}
    assert rules["static_assets"]["edgeTtl"]["default"] == 31_536_000.0
    assert rules["static_assets"]["browserTtl"] == {"mode": "override_origin", "default": 31_536_000.0}
    assert rules["video"]["edgeTtl"]["default"] == 604_800.0
    assert rules["video"]["browserTtl"]["default"] == 86_400.0
    assert rules["video"]["cacheKey"] == {"cacheByDeviceType": True}
    assert rules["content_api"]["edgeTtl"]["default"] == 300.0
    assert rules["content_api"]["browserTtl"] == {"mode": "bypass"}
    assert rules["content_api"]["edgeTtl"]["statusCodeTtls"] == [
        {"statusCode": 404.0, "value": 60.0},
        {"statusCodeRange": {"from": 500.0, "to": 599.0}, "value": -1.0},
    ]
    assert rules["private_bypass"] == {"cache": False}


def test_page_rules_are_active_with_explicit_priorities() -> None:
    resources = declare(cdn_settings(static_host="static.learn.example.com"))
    pages = {r.name: r.inputs for r in resources.values() if r.typ == "cloudflare:index/pageRule:PageRule"}
    assert pages == {
        "cdn-page-session-cookie-bypass": {
            "zoneId": ZONE,
            "target": "learn.example.com/*",
            "priority": 1.0,
            "status": "active",
            "actions": {"bypassCacheOnCookie": "lp_session=.*"},
        },
        "cdn-page-static-cache-everything-0": {
            "zoneId": ZONE,
            "target": "static.learn.example.com/*",
            "priority": 2.0,
            "status": "active",
            "actions": {
                "cacheLevel": "cache_everything",
                "edgeCacheTtl": 31_536_000.0,
                "browserCacheTtl": 31_536_000.0,
            },
        },
    }


def test_no_page_rules_when_switched_off() -> None:
    resources = declare(cdn_settings(page_rules_enabled=False))
    assert not [r for r in resources.values() if r.typ == "cloudflare:index/pageRule:PageRule"]


def test_zone_settings_and_smart_tiered_cache() -> None:
    resources = declare(cdn_settings(http3=False, polish="lossy", browser_cache_ttl=7200))
    zone_settings = {
        r.inputs["settingId"]: r.inputs["value"]
        for r in resources.values()
        if r.typ == "cloudflare:index/zoneSetting:ZoneSetting"
    }
    assert zone_settings == {
        "browser_cache_ttl": 7200.0,
        "brotli": "on",
        "http3": "off",
        "early_hints": "on",
        "polish": "lossy",
        "webp": "on",
    }
    assert resources["cdn-tiered-caching"].inputs == {"zoneId": ZONE, "value": "on"}
    assert resources["cdn-smart-tiered-cache"].inputs == {"zoneId": ZONE, "value": "on"}


def test_tiered_cache_switched_off() -> None:
    resources = declare(cdn_settings(tiered_cache=False))
    assert resources["cdn-tiered-caching"].inputs["value"] == "off"
    assert resources["cdn-smart-tiered-cache"].inputs["value"] == "off"


@pytest.mark.parametrize("token", [pulumi.Output.secret(TOKEN), TOKEN], ids=["secret-output", "plain-string"])
def test_api_token_reaches_only_the_provider_and_only_wrapped_as_secret(token: pulumi.Input[str]) -> None:
    resources = declare(cdn_settings(), api_token=token)
    provider = resources["cdn-provider"]
    assert provider.typ == "pulumi:providers:cloudflare"
    assert provider.inputs["apiToken"] == {SECRET_KEY: SECRET_SIG, "value": TOKEN}
    for resource in resources.values():
        assert not [s for s in plain_strings(resource.inputs) if TOKEN in s], resource.name


def test_every_child_uses_the_explicit_provider_when_a_token_is_given() -> None:
    resources = declare(cdn_settings(), api_token=pulumi.Output.secret(TOKEN))
    children = [r for r in resources.values() if r.typ.startswith("cloudflare:index/")]
    assert len(children) == 12  # ruleset, 3 page rules, 6 zone settings, 2 tiered cache
    for child in children:
        assert child.provider is not None and "::cdn-provider::cdn-provider-id" in child.provider, child.name


def test_without_a_token_no_provider_is_declared() -> None:
    resources = declare(cdn_settings())
    assert not [r for r in resources.values() if r.typ.startswith("pulumi:providers:")]


@pulumi_test
def test_component_outputs() -> pulumi.Output[None]:
    cdn = CloudflareCdn("out", CloudflareCdnArgs(settings=cdn_settings()))

    def check(values: list[Any]) -> None:
        ruleset_id, page_rule_ids, zone_id = values
        assert ruleset_id == "out-cache-rules-id"
        assert page_rule_ids == [
            "out-page-session-cookie-bypass-id",
            "out-page-static-cache-everything-0-id",
            "out-page-static-cache-everything-1-id",
        ]
        assert zone_id == ZONE

    return pulumi.Output.all(cdn.ruleset_id, cdn.page_rule_ids, cdn.zone_id).apply(check)
