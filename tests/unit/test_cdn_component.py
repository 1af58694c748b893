"""CloudflareCdn under Pulumi mocks: what each resource receives, on the wire (camelCase)."""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pytest
from pulumi.runtime import MockResourceArgs, Mocks
from pulumi.runtime.mocks import MockMonitor

from cachelayer.cdn.rules import build_cache_rules
from cachelayer.cdn.settings import CdnSettings, load_cdn_settings
from support.pulumi_mocks import RecordingMocks, pulumi_test

SECRET_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
ZONE = "0123456789abcdef0123456789abcdef"
TOKEN = "cf-token-do-not-leak-0123456789"




class OptionsMonitor(MockMonitor):
    """Also records the resource options the engine receives, by resource name."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.options: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        self.options[request.name] = {
            "retain_on_delete": request.retainOnDelete,
            "import_id": request.importId,
            "protect": request.protect,
            "delete_before_replace": request.deleteBeforeReplace,
            "depends_on": sorted(u.rsplit("::", 1)[-1] for u in request.dependencies),
        }
        return super().RegisterResource(request)


# Mocks must be in place before any resource is declared, or nothing resolves.
MOCKS = RecordingMocks()
MONITOR = OptionsMonitor(MOCKS)
pulumi.runtime.set_mocks(MOCKS, preview=False, monitor=MONITOR)

from cachelayer.components.cdn import CloudflareCdn, CloudflareCdnArgs  # noqa: E402


def cdn_settings(**overrides: Any) -> CdnSettings:
    loaded = load_cdn_settings({"zone_id": ZONE, "zone_name": "learn.example.com", **overrides}, required=True)
    assert loaded is not None
    return loaded


def declare(settings: CdnSettings, api_token: pulumi.Input[str] | None = None) -> dict[str, MockResourceArgs]:
    """Declare the component; return what the mocks received, by resource name."""
    MOCKS.resources.clear()
    MONITOR.options.clear()
    # Again for every declaration: other test modules (the program harness, the rehearsal) set
    # their own mocks, and a resource declared under theirs never reaches these.
    pulumi.runtime.set_mocks(MOCKS, preview=False, monitor=MONITOR)

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
    assert rules["video"]["cacheKey"] == {"cacheByDeviceType": True, "cacheDeceptionArmor": True}
    assert rules["content_api"]["edgeTtl"]["default"] == 300.0
    assert rules["content_api"]["browserTtl"] == {"mode": "bypass"}
    assert rules["static_assets"]["cacheKey"] == {"cacheDeceptionArmor": True}
    assert "statusCodeTtls" not in rules["content_api"]["edgeTtl"]  # Business zone: not sent
    assert rules["private_bypass"] == {"cache": False}


def test_status_code_ttls_on_the_wire_of_an_enterprise_zone() -> None:
    rules = {r["ref"]: r["actionParameters"] for r in declare(cdn_settings(plan="enterprise"))["cdn-cache-rules"].inputs["rules"]}
    assert rules["content_api"]["edgeTtl"]["statusCodeTtls"] == [
        {"statusCode": 404.0, "value": 60.0},
        {"statusCodeRange": {"from": 500.0, "to": 599.0}, "value": -1.0},
    ]


def test_page_rules_are_active_with_explicit_priorities() -> None:
    resources = declare(cdn_settings(static_host="static.learn.example.com", page_rules_enabled=True))
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
                "edgeCacheTtl": 2_419_200.0,  # the provider's page-rule maximum
                "browserCacheTtl": 31_536_000.0,
            },
        },
    }


def test_no_page_rules_by_default() -> None:
    resources = declare(cdn_settings())
    assert not [r for r in resources.values() if r.typ == "cloudflare:index/pageRule:PageRule"]


def test_page_rules_are_created_in_a_chain_so_cloudflare_keeps_their_priorities() -> None:
    declare(cdn_settings(page_rules_enabled=True))
    deps = {name: o["depends_on"] for name, o in MONITOR.options.items() if name.startswith("cdn-page-")}
    assert deps == {
        "cdn-page-session-cookie-bypass": [],
        "cdn-page-static-cache-everything-0": ["cdn-page-session-cookie-bypass"],
        "cdn-page-static-cache-everything-1": ["cdn-page-static-cache-everything-0"],
    }


def test_page_rule_edge_ttl_never_exceeds_the_providers_maximum() -> None:
    resources = declare(cdn_settings(page_rules_enabled=True))
    ttls = [
        r.inputs["actions"]["edgeCacheTtl"]
        for r in resources.values()
        if r.typ == "cloudflare:index/pageRule:PageRule" and "edgeCacheTtl" in r.inputs["actions"]
    ]
    assert ttls and max(ttls) <= 2_419_200


def test_zone_settings_and_tiered_caching_are_retained_on_delete() -> None:
    # The provider's delete is empty for these: preview must not promise a reset it cannot do.
    resources = declare(cdn_settings())
    kept = {
        name
        for name, options in MONITOR.options.items()
        if options["retain_on_delete"] and resources[name].typ.startswith("cloudflare:")
    }
    zone_settings = {r.name for r in resources.values() if r.typ == "cloudflare:index/zoneSetting:ZoneSetting"}
    assert kept == {*zone_settings, "cdn-tiered-caching"}
    assert len(zone_settings) == 5


def test_ruleset_is_replaced_delete_first_and_created_when_no_id_is_given() -> None:
    resources = declare(cdn_settings())
    assert MONITOR.options["cdn-cache-rules"]["delete_before_replace"] is True
    assert MONITOR.options["cdn-cache-rules"]["import_id"] == ""
    assert MONITOR.options["cdn-cache-rules"]["protect"] is False
    assert resources["cdn-cache-rules"].inputs["name"] == "cachelayer cache rules"


def test_an_adopted_entry_point_keeps_its_name_and_is_never_deleted() -> None:
    # A dashboard entry point has another name than ours; a name change replaces the ruleset, and
    # delete-before-replace would delete the zone's cache rules before creating ours.
    ruleset_id = "fedcba9876543210fedcba9876543210"
    resources = declare(cdn_settings(cache_ruleset_id=ruleset_id, cache_ruleset_name="default"))
    inputs = resources["cdn-cache-rules"].inputs
    assert (inputs["name"], inputs["kind"], inputs["phase"]) == ("default", "zone", "http_request_cache_settings")
    options = MONITOR.options["cdn-cache-rules"]
    assert options["import_id"] == f"zones/{ZONE}/{ruleset_id}"
    assert options["delete_before_replace"] is False
    assert options["protect"] is True


def test_url_normalization_is_pinned_to_what_evaluate_models() -> None:
    resources = declare(cdn_settings())
    # "both": the video rule keys by device type, so the origin gets the normalized URL too.
    assert resources["cdn-url-normalization"].inputs == {"zoneId": ZONE, "type": "cloudflare", "scope": "both"}


def test_zone_settings_and_smart_tiered_cache() -> None:
    resources = declare(cdn_settings(http3=False, polish="lossy", browser_cache_ttl=7200))
    zone_settings = {
        r.inputs["settingId"]: r.inputs["value"]
        for r in resources.values()
        if r.typ == "cloudflare:index/zoneSetting:ZoneSetting"
    }
    assert zone_settings == {
        "browser_cache_ttl": 7200.0,
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
    resources = declare(cdn_settings(page_rules_enabled=True), api_token=pulumi.Output.secret(TOKEN))
    children = [r for r in resources.values() if r.typ.startswith("cloudflare:index/")]
    assert len(children) == 12  # ruleset, URL normalization, 3 page rules, 5 zone settings, 2 tiered cache
    for child in children:
        assert child.provider is not None and "::cdn-provider::cdn-provider-id" in child.provider, child.name


def test_without_a_token_no_provider_is_declared() -> None:
    resources = declare(cdn_settings())
    assert not [r for r in resources.values() if r.typ.startswith("pulumi:providers:")]


@pulumi_test
def test_component_outputs() -> pulumi.Output[None]:
    cdn = CloudflareCdn("out", CloudflareCdnArgs(settings=cdn_settings(page_rules_enabled=True)))

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
