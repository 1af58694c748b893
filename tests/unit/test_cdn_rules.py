"""Cache rules, precedence, page rules and zone settings, planned from settings (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from cachelayer.cdn.model import CACHE_TTLS
from cachelayer.cdn.rules import (
    EXPRESSION_MAX_CHARS,
    CacheAction,
    CacheRule,
    PathStartsWith,
    Request,
    build_cache_rules,
    build_page_rules,
    evaluate,
    normalize_path,
    page_rule_for,
    quote,
    url_normalization,
    zone_setting_values,
)
from cachelayer.cdn.settings import CdnSettings, load_cdn_settings

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
STATUS_TTLS = [  # sent on Enterprise zones only
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
        "page_rule_edge": 2_419_200,
    }


def test_quote_escapes_backslash_and_double_quote() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


def test_bypass_rule_is_last_so_it_wins() -> None:
    assert [r.ref for r in build_cache_rules(settings())] == ["static_assets", "video", "content_api", "private_bypass"]


P = "lower(http.request.uri.path)"
NEVER_STATIC = f'(not (({P} contains "/api") or ({P} contains ";") or ({P} contains "%2f") or ({P} contains "%5c")))'
STATIC = f'((http.request.uri.path.extension in {{"css" "woff2"}}) or (starts_with({P}, "/static/"))) and {NEVER_STATIC}'
VIDEO = f'((http.request.uri.path.extension in {{"mp4" "m3u8"}}) or (starts_with({P}, "/video/"))) and {NEVER_STATIC}'
NOT_SESSION = (
    f'(not (({P} contains "/api/v1/me") or ({P} contains "/api/v1/courses/progress") or ({P} contains ";") '
    f'or ({P} contains "%2f") or ({P} contains "%5c")))'
)
CONTENT = f'(starts_with({P}, "/api/v1/courses/")) and {NOT_SESSION}'
BYPASS = {"cache": False}


def test_static_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["static_assets"]
    assert rule.expression == STATIC
    assert rule.action.parameters() == {
        "cache": True,
        "edge_ttl": {"mode": "override_origin", "default": 31_536_000},
        "browser_ttl": {"mode": "override_origin", "default": 31_536_000},
        "cache_key": {"cache_deception_armor": True},
        "serve_stale": {"disable_stale_while_updating": False},
    }


def test_static_host_joins_the_static_rule() -> None:
    rule = rules_by_ref(settings(static_host="static.learn.example.com"))["static_assets"]
    assert '(http.host eq "static.learn.example.com")) and (not (' in rule.expression


def test_video_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["video"]
    assert rule.expression == VIDEO
    assert rule.action.parameters() == {
        "cache": True,
        "edge_ttl": {"mode": "override_origin", "default": 604_800},
        "browser_ttl": {"mode": "override_origin", "default": 86_400},
        "cache_key": {"cache_by_device_type": True, "cache_deception_armor": True},
        "origin_range_requests": {"mode": "on"},
        "serve_stale": {"disable_stale_while_updating": False},
    }


def test_content_api_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["content_api"]
    assert rule.expression == CONTENT
    assert rule.action.parameters() == {
        "cache": True,
        "edge_ttl": {"mode": "override_origin", "default": 300},
        "browser_ttl": {"mode": "bypass"},
        "serve_stale": {"disable_stale_while_updating": False},
    }


def test_private_bypass_rule_expression_and_action() -> None:
    rule = rules_by_ref(settings())["private_bypass"]
    assert rule.expression == (
        f'({P} contains "/api/v1/me") or ({P} contains "/api/v1/courses/progress") or '
        f'(({P} contains "/api") and (not ({CONTENT}))) or '
        f'({P} contains ";") or ({P} contains "%2f") or ({P} contains "%5c") or '
        f'((http.cookie contains "lp_session=") and (not (({STATIC}) or ({VIDEO}))))'
    )
    assert rule.action.parameters() == BYPASS


def test_status_code_ttls_are_sent_on_enterprise_zones_only() -> None:
    # Sources disagree whether plans below Enterprise accept them; one refused rule fails the ruleset.
    for plan in ("business", "pro"):
        s = settings(plan=plan, ttls={"content_api_edge": 3600}, page_rules_enabled=False)
        assert not any("status_code_ttls" in r.action.parameters().get("edge_ttl", {}) for r in build_cache_rules(s))
    enterprise = rules_by_ref(settings(plan="enterprise"))
    for ref in ("static_assets", "video", "content_api"):
        assert enterprise[ref].action.parameters()["edge_ttl"]["status_code_ttls"] == STATUS_TTLS, ref


def test_cache_deception_armor_is_in_the_cache_key_of_the_extension_rules_and_can_be_switched_off() -> None:
    rules = rules_by_ref(settings())
    armored = {ref for ref, r in rules.items() if r.action.parameters().get("cache_key", {}).get("cache_deception_armor")}
    assert armored == {"static_assets", "video"}
    off = rules_by_ref(settings(cache_deception_armor=False))
    assert "cache_key" not in off["static_assets"].action.parameters()
    assert off["video"].action.parameters()["cache_key"] == {"cache_by_device_type": True}


# Requests built from every list and disguise, with and without the session cookie: the overlap
# proof below runs each through evaluate().
def _overlap_requests(s: CdnSettings) -> list[Request]:
    paths = ["/", "/courses/intro", "/catalog/trailer.mp4", *DECEPTION]
    for prefix in (*s.static_path_prefixes, *s.video_path_prefixes, *s.content_api_prefixes,
                   *s.session_api_prefixes, *s.api_prefixes):
        for ext in (*s.static_extensions, *s.video_extensions, "html", ""):
            paths.append(f"{prefix}42{'.' + ext if ext else ''}")
            paths.append(f"{prefix.upper()}x/y{'.' + ext if ext else ''}")
    for ext in (*s.static_extensions, *s.video_extensions):
        paths += [f"/x/a.{ext}", f"/api/v1/me/a.{ext}", f"/.{ext}"]
    hosts = [s.zone_name or "learn.example.com", *([s.static_host] if s.static_host else [])]
    cookies = ["", f"{s.session_cookie}=1", f"a=1; {s.session_cookie}=x"]
    return [Request(p.split("?")[0], host=h, cookie=c) for p in paths for h in hosts for c in cookies]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"content_api_prefixes": ["/catalog/"]}, {"static_host": "static.learn.example.com"}, {"plan": "enterprise"}],
    ids=["small", "content-outside-api", "static-host", "enterprise"],
)
def test_the_bypass_wins_wherever_it_overlaps_and_overlaps_only_content_with_the_cookie(overrides: dict[str, Any]) -> None:
    # The bypass sends `cache: false` only, so it must be last and must never share a request with
    # a rule whose other settings would make a private response cacheable (say a 1-year browser TTL).
    s = settings(**overrides)
    rules = build_cache_rules(s)
    assert rules[-1].ref == "private_bypass" and rules[-1].action.parameters() == BYPASS
    overlaps = 0
    for request in _overlap_requests(s):
        decision = evaluate(rules, request)
        if "private_bypass" not in decision.matched:
            continue
        assert decision.cached is False and decision.decided_by["cache"] == "private_bypass", request
        others = set(decision.matched) - {"private_bypass"}
        if others:
            overlaps += 1
            assert others == {"content_api"}, request
            assert s.session_cookie + "=" in request.cookie, request
            # What the content rule leaves behind keeps the response out of browser caches too.
            assert decision.settings["browser_ttl"] == {"mode": "bypass"}, request
    assert overlaps, "the grid must reach the one overlap (content path + session cookie)"


def test_bypassed_private_response_keeps_no_browser_ttl_from_the_static_rule() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/courses/intro.css", cookie="lp_session=1"))
    assert decision.matched == ("static_assets",)  # assets stay cached for logged-in users...
    decision = evaluate(build_cache_rules(settings()), Request("/api/v1/me/avatar.css", cookie="lp_session=1"))
    assert decision.cached is False  # ...and private paths bypass with nothing left over
    assert dict(decision.settings) == BYPASS
    assert set(decision.decided_by.values()) == {"private_bypass"}


def test_ttl_overrides_reach_the_rules() -> None:
    rule = rules_by_ref(settings(plan="enterprise", ttls={"content_api_edge": 120, "not_found_edge": 0}))["content_api"]
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
    # /api/v1/courses/progress/ is inside a content prefix but is a user path: only the bypass matches.
    decision = evaluate(build_cache_rules(settings()), Request("/api/v1/courses/progress/42"))
    assert decision.matched == ("private_bypass",)
    assert decision.cached is False


def test_order_is_what_makes_the_bypass_win() -> None:
    # A content path with the session cookie matches both: reversed, the user's response would be cached.
    rules = build_cache_rules(settings())
    request = Request("/api/v1/courses/42", cookie="lp_session=1")
    assert evaluate(rules, request).matched == ("content_api", "private_bypass")
    assert evaluate(rules, request).cached is False
    assert evaluate(tuple(reversed(rules)), request).cached is True


def test_user_api_with_an_image_extension_is_never_cached() -> None:
    decision = evaluate(build_cache_rules(settings(static_extensions=["png"])), Request("/api/v1/me/avatar.png"))
    assert decision.matched == ("private_bypass",)
    assert decision.cached is False


# Paths an attacker would send, with and without the victim's session cookie (web cache deception).
DECEPTION = [
    "/api/v1/me/profile.css",
    "/API/V1/ME/x.CSS",
    "/Api/v1/Me/x.Jpg",
    "/api/v1/users/42/profile.woff2",
    "/api/v1/me;.css",
    "/api/v1/me/;.css",
    "/api;/v1/me/x.css",
    "/api/v1/session/;.mp4",
    "/api/v1/me/%2e.css",
    "/api/v1/me/x.json.css",
    "/api/v1/me/x.css/",
    "/api/v1/me/x.css?v=1",
    "/api/v1/me/.css",
    "//api/v1/me/x.css",
    "/./api/v1/me/x.css",
    "/static/../api/v1/me/x.css",
    "/static/..;/api/v1/me/x.css",
    "/static/%2e%2e/api/v1/me/x.css",
    "/static%2f..%2fapi/v1/me/x.css",
    "/static\\..\\api\\v1\\me\\x.css",
    "/%61pi/v1/me/x.css",
    "/video/../api/v1/me/x.m3u8",
    "/api/v1/orders/7/invoice.css",  # an API path in no list: not public, so never cached
    "/api/v1/courses/progress/1.css",
    "/api/v1/courses/42;.css",
    "/api/v1/courses/..;/me/x.css",
]


@pytest.mark.parametrize("cookie", ["lp_session=victim", ""], ids=["with-cookie", "no-cookie"])
@pytest.mark.parametrize("path", DECEPTION)
def test_no_cacheable_rule_matches_a_private_api_path(path: str, cookie: str) -> None:
    s = settings(static_extensions=["css", "woff2", "jpg", "json"])
    decision = evaluate(build_cache_rules(s), Request(path.split("?")[0], cookie=cookie))
    assert decision.cached is False, decision
    assert dict(decision.settings) == BYPASS
    assert decision.matched == ("private_bypass",)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("//api//v1/me", "/api/v1/me"),
        ("/a/./b/../c", "/a/c"),
        ("/../x", "/x"),
        ("/a/..", "/"),
        ("/%41%2e%2F", "/A.%2F"),
        ("/a\\b", "/a/b"),
        ("/static/..;/api", "/static/..;/api"),
    ],
)
def test_paths_are_normalized_as_cloudflare_does(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


def test_public_content_stays_cached_whatever_its_case() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/API/v1/Courses/42"))
    assert decision.matched == ("content_api",)
    assert decision.settings["edge_ttl"]["default"] == 300


def test_static_assets_stay_cached_for_logged_in_users() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/static/app.css", cookie="lp_session=xyz"))
    assert decision.matched == ("static_assets",)
    assert decision.cached is True
    assert decision.settings["browser_ttl"]["default"] == 31_536_000


def test_video_settings_win_for_a_file_under_the_video_prefix() -> None:
    # Static extension x video prefix: both match, the later video rule wins every setting it sets.
    decision = evaluate(build_cache_rules(settings(static_extensions=["css", "jpg"])), Request("/video/poster.jpg"))
    assert decision.matched == ("static_assets", "video")
    assert decision.settings["edge_ttl"]["default"] == 604_800
    assert decision.settings["browser_ttl"]["default"] == 86_400
    assert set(decision.decided_by.values()) == {"video"}


def test_a_video_file_under_the_content_api_prefix_is_content() -> None:
    # Video extension x content prefix: the video rule never matches inside the API, so content alone applies.
    decision = evaluate(build_cache_rules(settings()), Request("/api/v1/courses/42/intro.mp4"))
    assert decision.matched == ("content_api",)
    assert decision.settings["edge_ttl"]["default"] == 300
    assert "cache_key" not in decision.settings


def test_a_video_file_under_a_static_prefix_gets_the_video_settings() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/static/intro.mp4"))
    assert decision.matched == ("static_assets", "video")
    assert decision.decided_by["edge_ttl"] == "video"


def test_content_outside_the_api_root_with_a_video_extension_merges_settings() -> None:
    # A content prefix outside api_prefixes: video then content both match; content wins what it
    # sets, the video rule's device-type cache key and range requests remain.
    s = settings(content_api_prefixes=["/catalog/"])
    decision = evaluate(build_cache_rules(s), Request("/catalog/trailer.mp4"))
    assert decision.matched == ("video", "content_api")
    assert decision.decided_by["edge_ttl"] == "content_api"
    assert decision.decided_by["cache_key"] == "video"


def test_video_segment_by_extension_is_keyed_by_device_and_served_in_ranges() -> None:
    decision = evaluate(build_cache_rules(settings()), Request("/media/lesson1/master.m3u8", cookie="lp_session=1"))
    assert decision.matched == ("video",)
    assert decision.settings["cache_key"] == {"cache_by_device_type": True, "cache_deception_armor": True}
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
    [
        ("/a/b.CSS", "css"), ("/a.b/c", ""), ("/x/archive.tar.gz", "gz"), ("/", ""),
        # The Rules language field reference's own table: a leading dot alone is a hidden file.
        ("/foo", ""), ("/foo.mp3", "mp3"), ("/.mp3", ""), ("/.foo.mp3", "mp3"), ("/foo.tar.bz2", "bz2"),
        ("/foo.", ""), ("/foo.MP3", "mp3"), ("/video/.mp4", ""),
    ],
)  # fmt: skip
def test_request_extension_follows_cloudflares_field(path: str, extension: str) -> None:
    assert Request(path).extension == extension


def test_a_hidden_file_with_a_video_name_is_not_matched_by_extension() -> None:
    # `/.mp4` has no extension for Cloudflare: only a prefix rule can match it.
    assert evaluate(build_cache_rules(settings()), Request("/media/.mp4")).matched == ()
    assert evaluate(build_cache_rules(settings()), Request("/media/.x.mp4")).matched == ("video",)


# -- page rules -----------------------------------------------------------------------------------


def test_page_rules_are_off_by_default() -> None:
    assert build_page_rules(settings()) == ()


def test_page_rules_targets_priorities_and_actions() -> None:
    plans = build_page_rules(settings(page_rules_enabled=True))
    assert [(p.ref, p.target, p.priority) for p in plans] == [
        ("session_cookie_bypass", "learn.example.com/*", 1),
        ("static_cache_everything_0", "learn.example.com/static/*", 2),
    ]
    assert plans[0].actions() == {"bypass_cache_on_cookie": "lp_session=.*"}
    assert plans[1].actions() == {
        "cache_level": "cache_everything",
        "edge_cache_ttl": 2_419_200,  # the provider's page-rule cap, not the static rule's year
        "browser_cache_ttl": 31_536_000,
    }


def test_static_page_rule_outranks_the_zone_wide_cookie_bypass() -> None:
    plans = build_page_rules(settings(page_rules_enabled=True))
    static = page_rule_for(plans, "https://learn.example.com/static/app.css")
    other = page_rule_for(plans, "learn.example.com/api/v1/me/")
    assert static is not None and static.ref == "static_cache_everything_0"
    assert other is not None and other.ref == "session_cookie_bypass"
    assert page_rule_for(plans, "elsewhere.org/static/app.css") is None


def test_static_host_gets_one_cache_everything_page_rule() -> None:
    plans = build_page_rules(settings(static_host="static.learn.example.com", page_rules_enabled=True))
    assert [p.target for p in plans] == ["learn.example.com/*", "static.learn.example.com/*"]
    assert len({p.priority for p in plans}) == len(plans)


def test_page_rules_can_be_switched_off() -> None:
    assert build_page_rules(settings(page_rules_enabled=False)) == ()


# -- zone settings --------------------------------------------------------------------------------


def test_zone_settings_defaults() -> None:
    assert zone_setting_values(settings()) == {
        "browser_cache_ttl": 14400,
        "http3": "on",
        "early_hints": "on",
        "polish": "lossless",
        "webp": "on",
    }


def test_zone_settings_switches() -> None:
    values = zone_setting_values(
        settings(http3=False, early_hints=False, polish="off", webp=False, browser_cache_ttl=0)
    )
    assert values == {
        "browser_cache_ttl": 0,
        "http3": "off",
        "early_hints": "off",
        "polish": "off",
        "webp": "off",
    }


def test_url_normalization_reaches_the_origin_when_the_cache_key_has_the_device_type() -> None:
    # Cloudflare's advice: with the device type in the cache key, normalize the URL sent to the
    # origin too, so the origin renders for the very URL the cache key was built from.
    rules = build_cache_rules(settings())
    assert any(r.action.cache_by_device_type for r in rules)
    assert url_normalization(rules) == {"type": "cloudflare", "scope": "both"}
    without = tuple(r for r in rules if not r.action.cache_by_device_type)
    assert url_normalization(without) == {"type": "cloudflare", "scope": "incoming"}
    bypass_only = (CacheRule("x", "x", PathStartsWith("/x"), CacheAction(cache=False), ()),)
    assert url_normalization(bypass_only)["scope"] == "incoming"
