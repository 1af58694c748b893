"""Cache rules, precedence, page rules and zone settings, planned from settings (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from cachelayer.cdn_rules import (
    CACHE_TTLS,
    EXPRESSION_MAX_CHARS,
    CacheRule,
    Request,
    build_cache_rules,
    build_page_rules,
    evaluate,
    page_rule_for,
    quote,
    zone_setting_values,
)
from cachelayer.cdn_settings import CdnSettings, load_cdn_settings

ZONE = "0123456789abcdef0123456789abcdef"
SMALL: dict[str, Any] = {
    "zone_id": ZONE,
    "zone_name": "learn.example.com",
    "static_extensions": ["css", "woff2"],
    "static_path_prefixes": ["/static/"],
    "video_extensions": ["mp4", "m3u8"],
    "video_path_prefixes": ["/video/"],
    "content_api_prefixes": ["/api/v1/courses/"],
    "session_api_prefixes": ["/api/v1/me/", "/api/v1/courses/progress/"],
    "session_cookie": "lp_session",
}
STATUS_TTLS = [
    {"status_code": 404, "value": 60},
    {"status_code_range": {"from": 500, "to": 599}, "value": -1},
]


def settings(**overrides: Any) -> CdnSettings:
    loaded = load_cdn_settings({**SMALL, **overrides}, required=True)
    assert loaded is not None
    return loaded


def rules_by_ref(s: CdnSettings) -> dict[str, CacheRule]:
    return {rule.ref: rule for rule in build_cache_rules(s)}


def test_seed_table_values() -> None:
    assert dict(CACHE_TTLS) == {
        "static_edge": 31_536_000,
        "static_browser": 31_536_000,
        "video_edge": 604_800,
        "video_browser": 86_400,
        "content_api_edge": 300,
        "content_api_browser": 0,
        "not_found_edge": 60,
        "server_error_edge": -1,
    }


def test_quote_escapes_backslash_and_double_quote() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


def test_bypass_rule_is_last_so_it_wins() -> None:
    assert [r.ref for r in build_cache_rules(settings())] == ["static_assets", "video", "content_api", "private_bypass"]


def test_static_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["static_assets"]
    assert rule.expression == (
        '(http.request.uri.path.extension in {"css" "woff2"}) or (starts_with(http.request.uri.path, "/static/"))'
    )
    assert rule.action.parameters() == {
        "cache": True,
        "edge_ttl": {"mode": "override_origin", "default": 31_536_000, "status_code_ttls": STATUS_TTLS},
        "browser_ttl": {"mode": "override_origin", "default": 31_536_000},
        "serve_stale": {"disable_stale_while_updating": False},
    }


def test_static_host_joins_the_static_rule() -> None:
    rule = rules_by_ref(settings(static_host="static.learn.example.com"))["static_assets"]
    assert rule.expression.endswith('(http.host eq "static.learn.example.com")')


def test_video_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["video"]
    assert rule.expression == (
        '(http.request.uri.path.extension in {"mp4" "m3u8"}) or (starts_with(http.request.uri.path, "/video/"))'
    )
    assert rule.action.parameters() == {
        "cache": True,
        "edge_ttl": {"mode": "override_origin", "default": 604_800, "status_code_ttls": STATUS_TTLS},
        "browser_ttl": {"mode": "override_origin", "default": 86_400},
        "cache_key": {"cache_by_device_type": True},
        "origin_range_requests": {"mode": "on"},
        "serve_stale": {"disable_stale_while_updating": False},
    }


def test_content_api_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["content_api"]
    assert rule.expression == 'starts_with(http.request.uri.path, "/api/v1/courses/")'
    assert rule.action.parameters() == {
        "cache": True,
        "edge_ttl": {"mode": "override_origin", "default": 300, "status_code_ttls": STATUS_TTLS},
        "browser_ttl": {"mode": "bypass"},
        "serve_stale": {"disable_stale_while_updating": False},
    }


def test_private_bypass_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["private_bypass"]
    static = '(http.request.uri.path.extension in {"css" "woff2"}) or (starts_with(http.request.uri.path, "/static/"))'
    video = '(http.request.uri.path.extension in {"mp4" "m3u8"}) or (starts_with(http.request.uri.path, "/video/"))'
    assert rule.expression == (
        '(starts_with(http.request.uri.path, "/api/v1/me/")) or '
        '(starts_with(http.request.uri.path, "/api/v1/courses/progress/")) or '
        f'((http.cookie contains "lp_session=") and (not ({static} or {video})))'
    )
    assert rule.action.parameters() == {"cache": False}


def test_ttl_overrides_reach_the_rules() -> None:
    rule = rules_by_ref(settings(ttls={"content_api_edge": 120, "not_found_edge": 0}))["content_api"]
    params = rule.action.parameters()
    assert params["edge_ttl"]["default"] == 120
    assert params["edge_ttl"]["status_code_ttls"][0] == {"status_code": 404, "value": 0}


def test_default_expressions_fit_cloudflares_limit() -> None:
    loaded = load_cdn_settings({"zone_id": ZONE, "zone_name": "learn.example.com"}, required=True)
    assert loaded is not None
    assert all(0 < len(r.expression) <= EXPRESSION_MAX_CHARS for r in build_cache_rules(loaded))


# -- precedence -----------------------------------------------------------------------------------


def test_content_api_is_cached_five_minutes_at_the_edge_and_not_in_browsers() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/api/v1/courses/42"))
    assert decision.matched == ("content_api",)
    assert decision.cached is True
    assert decision.settings["edge_ttl"]["default"] == 300
    assert decision.settings["browser_ttl"] == {"mode": "bypass"}


def test_session_cookie_on_the_content_api_bypasses_cache() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/api/v1/courses/42", cookie="a=1; lp_session=xyz"))
    assert decision.matched == ("content_api", "private_bypass")
    assert decision.cached is False
    assert decision.decided_by["cache"] == "private_bypass"


def test_user_path_inside_the_content_api_bypasses_for_the_same_path() -> None:
    # /api/v1/courses/progress/ is both a content path and a user path: the bypass must win.
    decision = evaluate(build_cache_rules(settings()), Request("/api/v1/courses/progress/42"))
    assert decision.matched == ("content_api", "private_bypass")
    assert decision.cached is False
    assert decision.decided_by["cache"] == "private_bypass"


def test_order_is_what_makes_the_bypass_win() -> None:
    # The same rules in the opposite order would cache the user's data: the evaluator honours order.
    rules = build_cache_rules(settings())
    reversed_decision = evaluate(tuple(reversed(rules)), Request("/api/v1/courses/progress/42"))
    assert reversed_decision.cached is True


def test_user_api_with_an_image_extension_is_never_cached() -> None:
    decision = evaluate(build_cache_rules(settings(static_extensions=["png"])), Request("/api/v1/me/avatar.png"))
    assert decision.matched == ("static_assets", "private_bypass")
    assert decision.cached is False


def test_static_assets_stay_cached_for_logged_in_users() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/static/app.css", cookie="lp_session=xyz"))
    assert decision.matched == ("static_assets",)
    assert decision.cached is True
    assert decision.settings["browser_ttl"]["default"] == 31_536_000


def test_video_settings_win_for_a_file_under_the_video_prefix() -> None:
    decision = evaluate(build_cache_rules(settings(static_extensions=["css", "jpg"])), Request("/video/poster.jpg"))
    assert decision.matched == ("static_assets", "video")
    assert decision.settings["edge_ttl"]["default"] == 604_800
    assert decision.decided_by["edge_ttl"] == "video"


def test_video_segment_by_extension_is_keyed_by_device_and_served_in_ranges() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/media/lesson1/master.m3u8", cookie="lp_session=1"))
    assert decision.matched == ("video",)
    assert decision.settings["cache_key"] == {"cache_by_device_type": True}
    assert decision.settings["origin_range_requests"] == {"mode": "on"}


def test_unmatched_request_is_left_to_cloudflare_defaults() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/courses/intro"))
    assert decision.matched == ()
    assert decision.cached is None


def test_page_with_the_session_cookie_bypasses() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/courses/intro", cookie="lp_session=1"))
    assert decision.cached is False


def test_cookie_match_needs_the_cookie_name_not_just_its_value() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/courses/intro", cookie="theme=lp_session"))
    assert decision.cached is None


@pytest.mark.parametrize(
    ("path", "extension"),
    [("/a/b.CSS", "css"), ("/a.b/c", ""), ("/x/archive.tar.gz", "gz"), ("/", "")],
)
def test_request_extension_follows_cloudflares_field(path: str, extension: str) -> None:
    assert Request(path).extension == extension


# -- page rules -----------------------------------------------------------------------------------


def test_page_rules_targets_priorities_and_actions() -> None:
    plans = build_page_rules(settings())
    assert [(p.ref, p.target, p.priority) for p in plans] == [
        ("session_cookie_bypass", "learn.example.com/*", 1),
        ("static_cache_everything_0", "learn.example.com/static/*", 2),
    ]
    assert plans[0].actions() == {"bypass_cache_on_cookie": "lp_session=.*"}
    assert plans[1].actions() == {
        "cache_level": "cache_everything",
        "edge_cache_ttl": 31_536_000,
        "browser_cache_ttl": 31_536_000,
    }


def test_static_page_rule_outranks_the_zone_wide_cookie_bypass() -> None:
    plans = build_page_rules(settings())
    static = page_rule_for(plans, "https://learn.example.com/static/app.css")
    other = page_rule_for(plans, "learn.example.com/api/v1/me/")
    assert static is not None and static.ref == "static_cache_everything_0"
    assert other is not None and other.ref == "session_cookie_bypass"
    assert page_rule_for(plans, "elsewhere.org/static/app.css") is None


def test_static_host_gets_one_cache_everything_page_rule() -> None:
    plans = build_page_rules(settings(static_host="static.learn.example.com"))
    assert [p.target for p in plans] == ["learn.example.com/*", "static.learn.example.com/*"]
    assert len({p.priority for p in plans}) == len(plans)


def test_page_rules_can_be_switched_off() -> None:
    assert build_page_rules(settings(page_rules_enabled=False)) == ()


# -- zone settings --------------------------------------------------------------------------------


def test_zone_settings_defaults() -> None:
    assert zone_setting_values(settings()) == {
        "browser_cache_ttl": 14400,
        "brotli": "on",
        "http3": "on",
        "early_hints": "on",
        "polish": "lossless",
        "webp": "on",
    }


def test_zone_settings_switches() -> None:
    values = zone_setting_values(
        settings(brotli=False, http3=False, early_hints=False, polish="off", webp=False, browser_cache_ttl=0)
    )
    assert values == {
        "browser_cache_ttl": 0,
        "brotli": "off",
        "http3": "off",
        "early_hints": "off",
        "polish": "off",
        "webp": "off",
    }
