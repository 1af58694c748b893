"""Settings for `cdn`: defaults are the seed TTL table; every refusal names its stack key."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cachelayer.cdn.model import CACHE_TTLS
from cachelayer.cdn.rules import build_cache_rules
from cachelayer.cdn.settings import CacheTtls, CdnSettings, load_cdn_settings
from cachelayer.errors import SettingsError

ZONE = "0123456789abcdef0123456789abcdef"
BASE: dict[str, Any] = {"zone_id": ZONE, "zone_name": "learn.example.com"}


def load(**overrides: Any) -> CdnSettings:
    settings = load_cdn_settings({**BASE, **overrides}, required=True)
    assert settings is not None
    return settings


def test_ttl_defaults_are_the_seed_table() -> None:
    ttls = CacheTtls()
    assert {f.name: getattr(ttls, f.name) for f in dataclasses.fields(CacheTtls)} == dict(CACHE_TTLS)
    assert (ttls.static_edge, ttls.static_browser) == (31_536_000, 31_536_000)
    assert (ttls.video_edge, ttls.video_browser) == (604_800, 86_400)
    assert (ttls.content_api_edge, ttls.content_api_browser) == (300, 0)
    assert (ttls.not_found_edge, ttls.server_error_edge) == (60, -1)


def test_minimal_prod_block_loads_with_the_table_defaults() -> None:
    settings = load()
    assert settings.zone_id == ZONE
    assert settings.ttls == CacheTtls()
    assert (settings.http3, settings.early_hints, settings.webp, settings.tiered_cache) == (True, True, True, True)
    assert settings.page_rules_enabled is False  # deprecated, and overridden by cache rules anyway


@pytest.mark.parametrize("raw", [None, {}, {"http3": False}])
def test_dev_without_a_zone_declares_no_cdn(raw: dict[str, Any] | None) -> None:
    assert load_cdn_settings(raw, required=False) is None


@pytest.mark.parametrize("raw", [None, {}, {"zone_name": "learn.example.com"}])
def test_where_a_zone_is_required_its_absence_is_refused(raw: dict[str, Any] | None) -> None:
    with pytest.raises(SettingsError, match=r"'cdn\.zone_id'") as err:
        load_cdn_settings(raw, required=True)
    assert err.value.key == "cdn.zone_id"


def test_a_misspelt_key_is_refused_even_in_dev() -> None:
    # Otherwise `zoneid: ...` would silently leave the CDN undeclared.
    with pytest.raises(SettingsError, match="did you mean 'zone_id'") as err:
        load_cdn_settings({"zoneid": ZONE}, required=False)
    assert err.value.key == "cdn.zoneid"


@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize("value", [True, False])
def test_brotli_is_refused_as_no_longer_a_setting(value: bool, required: bool) -> None:
    raw = {**BASE, "brotli": value} if required else {"brotli": value}
    with pytest.raises(SettingsError) as err:
        load_cdn_settings(raw, required=required)
    assert err.value.key == "cdn.brotli"
    assert "remove it, Brotli is always on" in str(err.value)


def test_page_rule_edge_ttl_defaults_to_the_providers_maximum() -> None:
    assert load(page_rules_enabled=True).ttls.page_rule_edge == 2_419_200


def test_adopting_an_existing_ruleset_takes_its_id_and_its_own_name() -> None:
    settings = load(cache_ruleset_id="fedcba9876543210fedcba9876543210", cache_ruleset_name="default")
    assert (settings.cache_ruleset_id, settings.cache_ruleset_name) == ("fedcba9876543210fedcba9876543210", "default")


def test_adopting_without_the_entry_points_name_is_refused() -> None:
    # Our name would differ from the dashboard's, and a renamed ruleset is replaced: deleted.
    with pytest.raises(SettingsError, match=r"jq -r \.result\.name") as err:
        load(cache_ruleset_id="fedcba9876543210fedcba9876543210")
    assert err.value.key == "cdn.cache_ruleset_name"
    with pytest.raises(SettingsError, match="cache_ruleset_id is empty"):
        load(cache_ruleset_name="default")


@pytest.mark.parametrize("browser", [1, 60, 300, 3599])
@pytest.mark.parametrize("plan", ["free", "pro", "business", "enterprise"])
def test_a_browser_ttl_of_one_second_or_more_loads_on_every_plan(plan: str, browser: int) -> None:
    # Only the edge TTL minimum depends on the plan (docs "Edge and Browser Cache TTL").
    settings = load(plan=plan, ttls={"content_api_edge": 7200, "static_browser": browser}, polish="off", webp=False)
    assert settings.ttls.static_browser == browser


@pytest.mark.parametrize("value", [0, 1, 100, 14400, 31_536_000])
def test_zone_browser_cache_ttl_is_any_integer_within_a_year(value: int) -> None:
    # An integer in the current API (cloudflare SDK types/zones/browser_cache_ttl_param.py), not a fixed list.
    assert load(browser_cache_ttl=value).browser_cache_ttl == value


def test_ttl_overrides_replace_single_rows() -> None:
    settings = load(ttls={"content_api_edge": 600})
    assert settings.ttls.content_api_edge == 600
    assert settings.ttls.static_edge == CACHE_TTLS["static_edge"]


def test_session_prefix_inside_a_content_prefix_is_an_allowed_carve_out() -> None:
    settings = load(content_api_prefixes=["/api/v1/courses/"], session_api_prefixes=["/api/v1/courses/progress/"])
    assert settings.session_api_prefixes == ("/api/v1/courses/progress/",)


def test_free_plan_with_ttls_it_accepts_loads() -> None:
    settings = load(plan="free", ttls={"content_api_edge": 7200}, polish="off", webp=False, page_rules_enabled=False)
    assert settings.plan == "free"


REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("bad zone id", {"zone_id": "not-a-zone"}, "cdn.zone_id", "is not a zone id"),
    ("plan below minimum", {"plan": "free", "polish": "off", "webp": False}, "cdn.ttls.content_api_edge", "free plan"),
    ("edge TTL over a year", {"ttls": {"static_edge": 31_536_001}}, "cdn.ttls.static_edge", "outside"),
    ("edge TTL zero", {"ttls": {"video_edge": 0}}, "cdn.ttls.video_edge", "outside"),
    ("negative browser TTL", {"ttls": {"video_browser": -5}}, "cdn.ttls.video_browser", "outside"),
    ("status TTL below -1", {"ttls": {"server_error_edge": -2}}, "cdn.ttls.server_error_edge", "status-code TTL"),
    ("zone browser TTL over a year", {"browser_cache_ttl": 31_536_001}, "cdn.browser_cache_ttl", "14400"),
    ("negative zone browser TTL", {"browser_cache_ttl": -1}, "cdn.browser_cache_ttl", "outside"),
    ("rule browser TTL below 1 s", {"ttls": {"static_browser": -1}}, "cdn.ttls.static_browser", "1..31536000"),
    ("empty extensions", {"static_extensions": []}, "cdn.static_extensions", "is empty"),
    ("empty session prefixes", {"session_api_prefixes": []}, "cdn.session_api_prefixes", "is empty"),
    ("empty content prefixes", {"content_api_prefixes": []}, "cdn.content_api_prefixes", "is empty"),
    ("duplicate extension", {"video_extensions": ["mp4", "mp4"]}, "cdn.video_extensions", "listed twice"),
    ("dotted extension", {"static_extensions": [".css"]}, "cdn.static_extensions", "'.css' is not valid"),
    ("extension in both lists", {"video_extensions": ["mp4", "svg"]}, "cdn.video_extensions", "svg also in"),
    ("relative prefix", {"content_api_prefixes": ["api/"]}, "cdn.content_api_prefixes", "'api/' is not valid"),
    ("quote in prefix", {"static_path_prefixes": ['/a"b/']}, "cdn.static_path_prefixes", "is not valid"),
    ("root prefix", {"video_path_prefixes": ["/"]}, "cdn.video_path_prefixes", "matches every request"),
    (
        "static and content overlap",
        {"content_api_prefixes": ["/static/api/"]},
        "cdn.content_api_prefixes",
        "depend on rule order",
    ),
    ("nested in one list", {"static_path_prefixes": ["/static/", "/static/css/"]}, "cdn.static_path_prefixes", "same"),
    (
        "cacheable inside session",
        {"content_api_prefixes": ["/api/v1/me/feed/"]},
        "cdn.content_api_prefixes",
        "never applies",
    ),
    ("bad cookie", {"session_cookie": "a b"}, "cdn.session_cookie", "cookie name"),
    ("static host outside zone", {"static_host": "cdn.other.org"}, "cdn.static_host", "not in the zone"),
    ("webp without polish", {"polish": "off"}, "cdn.webp", "part of Polish"),
    (
        "polish on free",
        {"plan": "free", "ttls": {"content_api_edge": 7200}, "page_rules_enabled": False},
        "cdn.polish",
        "Pro plan",
    ),
    ("page rules need a zone name", {"zone_name": "", "page_rules_enabled": True}, "cdn.zone_name", "page rule"),
    (
        "cookie page rule on pro",
        {"plan": "pro", "ttls": {"content_api_edge": 3600}, "page_rules_enabled": True},
        "cdn.page_rules_enabled",
        "pro",
    ),
    (
        "page rule edge TTL over the provider's cap",
        {"ttls": {"page_rule_edge": 31_536_000}},
        "cdn.ttls.page_rule_edge",
        "2419200 s (28 days)",
    ),
    ("bad ruleset id", {"cache_ruleset_id": "abc"}, "cdn.cache_ruleset_id", "not a ruleset id"),
    ("video tag without id", {"video_cache_tag": "video"}, "cdn.video_cache_tag", "placeholder"),
    ("uppercase prefix", {"static_path_prefixes": ["/Static/"]}, "cdn.static_path_prefixes", "is not valid"),
    ("static prefix inside the API", {"static_path_prefixes": ["/api/files/"]}, "cdn.static_path_prefixes", "never"),
    ("video prefix inside the API", {"video_path_prefixes": ["/api/v1/video/"]}, "cdn.video_path_prefixes", "never"),
    ("bad api prefix", {"api_prefixes": ["api"]}, "cdn.api_prefixes", "is not valid"),
    ("unknown plan", {"plan": "gold"}, "cdn.plan", "not one of the choices"),
    ("unknown ttl row", {"ttls": {"static": 5}}, "cdn.ttls.static", "not a known setting"),
]


@pytest.mark.parametrize(("raw", "key", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_stack_key(raw: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(**raw)
    assert err.value.key == key
    assert f"stack setting '{key}'" in str(err.value)
    assert fragment in str(err.value)
    assert "Fix:" in str(err.value)


def test_expression_over_4096_characters_is_refused_naming_the_biggest_list() -> None:
    # The private bypass rule repeats the static and video lists, so it crosses the limit first.
    prefixes = [f"/course-{i:04d}/" for i in range(40)]
    with pytest.raises(SettingsError) as err:
        load(static_path_prefixes=prefixes)
    assert err.value.key == "cdn.static_path_prefixes"
    assert "private_bypass rule expression 4145 characters long, over Cloudflare's 4096" in str(err.value)


def test_expression_just_under_the_limit_is_accepted() -> None:
    settings = load(static_path_prefixes=[f"/course-{i:04d}/" for i in range(39)])
    assert max(len(rule.expression) for rule in build_cache_rules(settings)) == 4081
