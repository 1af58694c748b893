"""Every Cloudflare request the program would make, checked against the `cloudflare` SDK's
published types (tests/support/cloudflare_contract.py), for both stacks and every CDN setting
combination the settings allow; and each defect of issue 22 fails the contract when reintroduced."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from cachelayer.cdn import rules as cdn_rules
from cachelayer.cdn.api import PURGE_LIMITS, plan_purge
from cachelayer.cdn.settings import YEAR, CdnSettings, load_cdn_settings
from cachelayer.errors import SettingsError
from support import cloudflare_contract as contract
from support.program_harness import run_program
from support.pulumi_mocks import RecordingMocks, pulumi_test

ZONE = "0123456789abcdef0123456789abcdef"
RULESET_ID = "fedcba9876543210fedcba9876543210"
Resource = tuple[str, str, dict[str, Any]]




MOCKS = RecordingMocks()


def declare(settings: CdnSettings) -> list[Resource]:
    """What CloudflareCdn registers for `settings`, as (type, name, wire inputs)."""
    from cachelayer.components.cdn import CloudflareCdn, CloudflareCdnArgs

    MOCKS.resources.clear()
    pulumi.runtime.set_mocks(MOCKS, preview=False)  # again: other modules set their own mocks

    @pulumi_test
    def run() -> pulumi.Output[Any]:
        return CloudflareCdn("cdn", CloudflareCdnArgs(settings=settings)).ruleset_id

    run()
    return [(r.typ, r.name, dict(r.inputs)) for r in MOCKS.resources]


def cdn(**overrides: Any) -> CdnSettings:
    loaded = load_cdn_settings({"zone_id": ZONE, "zone_name": "learn.example.com", **overrides}, required=True)
    assert loaded is not None
    return loaded


def problems(settings: CdnSettings) -> list[str]:
    return contract.check_resources(declare(settings), settings.plan)


# -- the contract itself ---------------------------------------------------------------------------


def test_the_checker_refuses_unknown_keys_enum_values_and_wrong_types() -> None:
    from cloudflare.types.rulesets.set_cache_settings_rule_param import ActionParameters

    assert contract.check_value({"cache": True, "edge_ttl": {"mode": "override_origin", "default": 60}}, ActionParameters) == []
    assert contract.check_value({"cache": True, "edge_ttls": {}}, ActionParameters)  # unknown key
    assert contract.check_value({"edge_ttl": {"mode": "override"}}, ActionParameters)  # not in the Literal
    assert contract.check_value({"edge_ttl": {"default": 60}}, ActionParameters)  # mode is Required
    assert contract.check_value({"edge_ttl": {"mode": "override_origin", "default": "60"}}, ActionParameters)
    assert contract.check_value({"cache": 1}, ActionParameters)  # a number is not a boolean


def test_zone_setting_ids_and_values_come_from_the_sdk() -> None:
    assert {"browser_cache_ttl", "http3", "early_hints", "polish", "webp"} <= set(contract.ZONE_SETTING_TYPES)
    assert "cache_deception_armor" not in contract.ZONE_SETTING_TYPES
    assert len(contract.ZONE_SETTING_TYPES) > 60


def test_a_resource_kind_without_a_mapping_is_a_gap_not_a_pass() -> None:
    with pytest.raises(contract.ContractGap, match="no contract for cloudflare:index/dnsRecord:DnsRecord"):
        contract.requests_for("cloudflare:index/dnsRecord:DnsRecord", "x", {"zoneId": ZONE})


def test_every_purge_body_fits_the_purge_params() -> None:
    batches = plan_purge(PURGE_LIMITS["business"], files=["https://a.example/x.css"], prefixes=["a.example/v/"],
                         tags=["video-1"], hosts=["a.example"]) + plan_purge(PURGE_LIMITS["business"], everything=True)  # fmt: skip
    assert {b.kind for b in batches} == {"files", "prefixes", "tags", "hosts", "purge_everything"}
    for batch in batches:
        assert contract.check_request(contract.purge_request(ZONE, batch.body())) == [], batch


# -- both stacks, through the program as the language host runs it ----------------------------------


def test_prod_stack_sends_only_what_the_api_accepts() -> None:
    run = run_program("prod")
    resources = [(r.type, r.name, r.inputs) for r in run.resources]
    kinds = {t for t, _n, _i in resources if t.startswith("cloudflare:")}
    assert kinds == {
        "cloudflare:index/ruleset:Ruleset",
        "cloudflare:index/zoneSetting:ZoneSetting",
        "cloudflare:index/urlNormalizationSettings:UrlNormalizationSettings",
        "cloudflare:index/argoTieredCaching:ArgoTieredCaching",
        "cloudflare:index/tieredCache:TieredCache",
    }
    assert contract.check_resources(resources, "business") == []


def test_dev_stack_declares_no_cloudflare_resource() -> None:
    run = run_program("dev")
    assert not [r for r in run.resources if r.type.startswith(("cloudflare:", "pulumi:providers:cloudflare"))]


def test_prod_stack_with_page_rules_and_an_adopted_entry_point() -> None:
    overrides = {"cdn": {"zone_id": ZONE, "zone_name": "learn.example.com", "plan": "enterprise",
                         "static_host": "static.learn.example.com", "page_rules_enabled": True,
                         "cache_ruleset_id": RULESET_ID, "cache_ruleset_name": "default"}}  # fmt: skip
    run = run_program("prod", config_overrides=overrides)
    resources = [(r.type, r.name, r.inputs) for r in run.resources]
    assert [t for t, _n, _i in resources].count("cloudflare:index/pageRule:PageRule") == 2
    assert contract.check_resources(resources, "enterprise") == []


# -- every combination the settings allow ----------------------------------------------------------


def combinations() -> Iterator[dict[str, Any]]:
    """Every plan x page rules x adoption x armor x static host, then every value of each other
    switch on each plan; combinations the settings refuse are skipped (they never reach Cloudflare)."""
    for plan, pages, adopt, armor, host in itertools.product(
        ("free", "pro", "business", "enterprise"), (False, True), (False, True), (False, True), (False, True)
    ):
        yield {
            "plan": plan, "page_rules_enabled": pages, "cache_deception_armor": armor,
            **({"cache_ruleset_id": RULESET_ID, "cache_ruleset_name": "default"} if adopt else {}),
            **({"static_host": "static.learn.example.com"} if host else {}),
            **({"polish": "off", "webp": False, "ttls": {"content_api_edge": 7200}} if plan == "free" else {}),
            **({"ttls": {"content_api_edge": 3600}} if plan == "pro" else {}),
        }  # fmt: skip
    for plan in ("pro", "business", "enterprise"):
        floor = {"pro": 3600, "business": 1, "enterprise": 1}[plan]
        yield from (
            {"plan": plan, "ttls": {"content_api_edge": max(floor, 300)}, **switch}
            for switch in (
                {"polish": "lossy"}, {"polish": "lossless", "webp": False}, {"polish": "off", "webp": False},
                {"http3": False}, {"early_hints": False}, {"tiered_cache": False},
                {"browser_cache_ttl": 0}, {"browser_cache_ttl": 1}, {"browser_cache_ttl": YEAR},
                {"ttls": {"static_edge": floor, "static_browser": 1, "video_edge": YEAR, "video_browser": YEAR,
                          "content_api_edge": max(floor, 300), "content_api_browser": 0,
                          "not_found_edge": 0, "server_error_edge": YEAR}},
            )
        )  # fmt: skip


def test_every_setting_combination_sends_only_what_the_api_accepts() -> None:
    checked = 0
    for overrides in combinations():
        try:
            settings = cdn(**overrides)
        except SettingsError:
            continue
        assert problems(settings) == [], overrides
        checked += 1
    assert checked >= 60, checked  # the loop must not pass by skipping everything


# -- each defect of issue 22, reintroduced, fails the contract --------------------------------------


def test_defect_cache_deception_armor_as_a_zone_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachelayer.components import cdn as component

    original = component.zone_setting_values
    monkeypatch.setattr(component, "zone_setting_values", lambda s: {**original(s), "cache_deception_armor": "on"})
    found = problems(cdn())
    assert any("'cache_deception_armor' is not a zone setting" in p and "1006" in p for p in found), found


def test_defect_bypass_rule_carrying_cacheable_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachelayer.components import cdn as component

    original = component.action_parameters

    def resetting(action: cdn_rules.CacheAction) -> Any:
        if action.cache:
            return original(action)
        return {"cache": False, "edge_ttl": {"mode": "respect_origin"}, "browser_ttl": {"mode": "respect_origin"},
                "cache_key": {"cache_by_device_type": False}, "origin_range_requests": {"mode": "default"},
                "serve_stale": {"disable_stale_while_updating": False}}  # fmt: skip

    monkeypatch.setattr(component, "action_parameters", resetting)
    found = problems(cdn())
    assert any("private_bypass: a bypass (cache: false) also sends" in p for p in found), found


def test_defect_status_code_ttls_on_a_business_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cdn_rules, "STATUS_TTL_PLANS", frozenset({"business", "enterprise"}))
    found = problems(cdn(plan="business"))
    assert any("status-code TTLs on a business zone" in p for p in found), found


def test_defect_status_code_ttls_under_their_pulumi_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pulumi says `statusCodeTtls`, the API `status_code_ttl`: without the mapping the SDK refuses it.
    monkeypatch.setattr(contract, "WIRE_RENAMES", {})
    found = problems(cdn(plan="enterprise"))
    assert any("status_code_ttls: not a field of ActionParametersEdgeTTL" in p for p in found), found


def test_defect_rule_browser_ttl_below_one_second() -> None:
    request = contract.ApiRequest("cdn-cache-rules", "POST", "/zones/z/rulesets", {"rules": [
        {"ref": "static", "action": "set_cache_settings", "expression": "true",
         "action_parameters": {"cache": True, "browser_ttl": {"mode": "override_origin", "default": 0}}}]},
        None, "")  # fmt: skip
    assert contract.documented_problems(request, "business")


def test_defect_unknown_url_normalization_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachelayer.components import cdn as component

    monkeypatch.setattr(component, "url_normalization", lambda rules: {"type": "cloudflare", "scope": "origin"})
    found = problems(cdn())
    assert any("body.scope: 'origin' is not one of ['incoming', 'both', 'none']" in p for p in found), found


def test_defect_polish_value_the_api_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachelayer.components import cdn as component

    original = component.zone_setting_values
    monkeypatch.setattr(component, "zone_setting_values", lambda s: {**original(s), "polish": "lossier"})
    found = problems(cdn())
    assert any("settings/polish: body.value: 'lossier' is not one of" in p for p in found), found
