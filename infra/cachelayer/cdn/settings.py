"""Settings for the stack key `cdn`: load the typed `CdnSettings` (cdn.model) and refuse what
Cloudflare would refuse.

Pure core: no pulumi import. Every refusal is a SettingsError naming the stack key. The limits
checked here, their sources and which are still unconfirmed are tabled in docs/cdn.md
("Cloudflare limits and plan rules we rely on"):

- a cache rule's edge TTL has a plan minimum (Free 2 h, Pro 1 h, Business and Enterprise 1 s);
  its browser TTL minimum is 1 s on every plan (docs "Edge and Browser Cache TTL"); both at most
  1 year (31,536,000 s);
- a page rule's `edge_cache_ttl` is at most 2,419,200 s (28 days): pulumi-cloudflare v6 is
  generated from terraform-provider-cloudflare v5, whose page-rule schema
  (internal/services/page_rule/schema.go) caps it there, and the bridge checks that before any API
  call (cloudflare/terraform-provider-cloudflare#6779), so preview and up would stop;
- the zone `browser_cache_ttl` setting is an integer (cloudflare SDK 5.x,
  types/zones/browser_cache_ttl_param.py; the old fixed list is gone), 0 = respect origin;
- a rule expression is at most 4,096 characters (docs "Rules language > Expressions");
- status-code TTLs take -1 (no-store), 0 (no-cache) or a number of seconds;
- a ruleset id (to adopt an existing cache-rules entry point) is 32 lowercase hex characters, and
  an adopted entry point keeps its own name (a name change replaces it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from cachelayer.cdn.model import CACHE_TTLS, YEAR, CacheTtls, CdnSettings, Plan, Polish
from cachelayer.cdn.rules import EXPRESSION_MAX_CHARS, build_cache_rules
from cachelayer.errors import SettingsError
from cachelayer.fields import from_mapping

__all__ = [
    "BROWSER_TTL_MINIMUM",
    "CACHE_TTLS",
    "EDGE_TTL_MINIMUM",
    "PAGE_RULE_EDGE_TTL_MAX",
    "REMOVED_KEYS",
    "YEAR",
    "CacheTtls",
    "CdnSettings",
    "Plan",
    "Polish",
    "load_cdn_settings",
    "validate",
]  # fmt: skip

# terraform-provider-cloudflare v5, internal/services/page_rule/schema.go (issue #6779).
PAGE_RULE_EDGE_TTL_MAX: Final = 2_419_200
# Keys that Cloudflare no longer has: a stack file that still sets one is refused with the reason.
REMOVED_KEYS: Final[Mapping[str, str]] = {
    "brotli": "remove it, Brotli is always on (Cloudflare API deprecations: the setting's end of life was 2024-06-14)",
}
# Lowest edge TTL a cache rule may set, per plan; the browser TTL minimum is 1 s on every plan.
EDGE_TTL_MINIMUM: Final[Mapping[str, int]] = {"free": 7200, "pro": 3600, "business": 1, "enterprise": 1}
BROWSER_TTL_MINIMUM: Final = 1

_ZONE_ID = re.compile(r"^[0-9a-f]{32}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,16}$")
# Lowercase only: rules compare the lowercased path (`lower(http.request.uri.path)`).
_PATH_PREFIX = re.compile(r"^/[a-z0-9._~/-]*$")
_COOKIE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def load_cdn_settings(raw: Mapping[str, Any] | None, *, required: bool) -> CdnSettings | None:
    """The validated `cdn` settings, or None when no zone is configured and none is required."""
    if raw is not None and not isinstance(raw, Mapping):
        raise SettingsError(
            "cdn", f"expected a mapping of settings, got {type(raw).__name__}", "write cdn: as key: value pairs"
        )
    for key, fix in REMOVED_KEYS.items():
        if raw and key in raw:
            raise SettingsError(f"cdn.{key}", "is no longer a Cloudflare setting", fix)
    # Parse even without a zone, so a misspelt key (say `zoneid`) is refused, not silently ignored.
    settings = from_mapping(CdnSettings, raw or {}, "cdn")
    if not settings.zone_id:
        if required:
            raise SettingsError(
                "cdn.zone_id",
                "is missing, and this stack declares the Cloudflare CDN",
                "set cachelayer:cdn: {zone_id: <32-hex zone id>} (Cloudflare dashboard > zone > Overview)",
            )
        return None
    validate(settings)
    return settings


def validate(s: CdnSettings) -> None:
    """Refuse what Cloudflare would reject, or rules whose order would change the result."""
    _check_zone(s)
    _check_lists(s)
    _check_ttls(s)
    _check_overlaps(s)
    _check_zone_settings(s)
    _check_page_rules(s)
    _check_expressions(s)


def _check_zone(s: CdnSettings) -> None:
    if not _ZONE_ID.match(s.zone_id):
        raise SettingsError(
            "cdn.zone_id",
            f"{s.zone_id!r} is not a zone id",
            "copy the 32 lowercase hex characters from the zone's Overview page",
        )
    if s.cache_ruleset_id and not _ZONE_ID.match(s.cache_ruleset_id):
        raise SettingsError(
            "cdn.cache_ruleset_id",
            f"{s.cache_ruleset_id!r} is not a ruleset id",
            "copy the 32 hex `id` of GET /zones/{zone_id}/rulesets/phases/http_request_cache_settings/entrypoint, "
            "or leave it empty",
        )
    if s.cache_ruleset_id and not s.cache_ruleset_name.strip():
        raise SettingsError(
            "cdn.cache_ruleset_name",
            "is needed with cdn.cache_ruleset_id: Pulumi would rename the adopted entry point, and a rename "
            "replaces (deletes) it",
            "copy its `name` from GET /zones/{zone_id}/rulesets/phases/http_request_cache_settings/entrypoint "
            "(jq -r .result.name)",
        )
    if s.cache_ruleset_name and not s.cache_ruleset_id:
        raise SettingsError(
            "cdn.cache_ruleset_name",
            "is only used to adopt an existing entry point, and cdn.cache_ruleset_id is empty",
            "set cdn.cache_ruleset_id too, or remove cdn.cache_ruleset_name",
        )
    if s.video_cache_tag and "{id}" not in s.video_cache_tag:
        raise SettingsError(
            "cdn.video_cache_tag",
            f"{s.video_cache_tag!r} has no {{id}} placeholder",
            "write the tag with {id} where the video id goes, e.g. video-{id}",
        )
    for key, host in (("cdn.zone_name", s.zone_name), ("cdn.static_host", s.static_host)):
        if host and not _HOSTNAME.match(host):
            raise SettingsError(
                key, f"{host!r} is not a hostname", "write a lowercase DNS name such as learn.example.com"
            )
    if (
        s.static_host
        and s.zone_name
        and not (s.static_host == s.zone_name or s.static_host.endswith("." + s.zone_name))
    ):
        raise SettingsError(
            "cdn.static_host",
            f"{s.static_host!r} is not in the zone {s.zone_name!r}",
            "use a host of this zone, or leave it empty",
        )


def _check_lists(s: CdnSettings) -> None:
    required = {"cdn.static_extensions", "cdn.video_extensions", "cdn.content_api_prefixes", "cdn.session_api_prefixes"}
    lists: list[tuple[str, Sequence[str], re.Pattern[str], str]] = [
        (
            "cdn.static_extensions",
            s.static_extensions,
            _EXTENSION,
            "write extensions lowercase, without the dot (css, woff2)",
        ),
        (
            "cdn.video_extensions",
            s.video_extensions,
            _EXTENSION,
            "write extensions lowercase, without the dot (mp4, m3u8)",
        ),
        (
            "cdn.api_prefixes",
            s.api_prefixes,
            _PATH_PREFIX,
            "start with / and use only lowercase letters, digits and - . _ ~ /",
        ),
        (
            "cdn.static_path_prefixes",
            s.static_path_prefixes,
            _PATH_PREFIX,
            "start with / and use only lowercase letters, digits and - . _ ~ /",
        ),
        (
            "cdn.video_path_prefixes",
            s.video_path_prefixes,
            _PATH_PREFIX,
            "start with / and use only lowercase letters, digits and - . _ ~ /",
        ),
        (
            "cdn.content_api_prefixes",
            s.content_api_prefixes,
            _PATH_PREFIX,
            "start with / and use only lowercase letters, digits and - . _ ~ /",
        ),
        (
            "cdn.session_api_prefixes",
            s.session_api_prefixes,
            _PATH_PREFIX,
            "start with / and use only lowercase letters, digits and - . _ ~ /",
        ),
    ]
    for key, items, pattern, fix in lists:
        if not items and key in required:
            raise SettingsError(key, "is empty, so its cache rule would match nothing", "list at least one entry")
        seen: set[str] = set()
        for item in items:
            if not pattern.match(item):
                raise SettingsError(key, f"{item!r} is not valid here", fix)
            if item == "/":
                raise SettingsError(key, "'/' matches every request", "use a narrower prefix such as /static/")
            if item in seen:
                raise SettingsError(key, f"{item!r} is listed twice", "list each entry once")
            seen.add(item)
    if not _COOKIE.match(s.session_cookie):
        raise SettingsError(
            "cdn.session_cookie",
            f"{s.session_cookie!r} is not a cookie name this layer accepts",
            "use letters, digits, - and _ only",
        )
    both = sorted(set(s.static_extensions) & set(s.video_extensions))
    if both:
        raise SettingsError(
            "cdn.video_extensions",
            f"{', '.join(both)} also in cdn.static_extensions: which TTL applies would depend on rule order",
            "keep each extension in one list",
        )


def _check_ttls(s: CdnSettings) -> None:
    t = s.ttls
    for name in ("static_edge", "video_edge", "content_api_edge"):
        _check_rule_ttl(f"cdn.ttls.{name}", getattr(t, name), EDGE_TTL_MINIMUM[s.plan], s.plan, zero_means="")
    for name in ("static_browser", "video_browser", "content_api_browser"):
        _check_rule_ttl(
            f"cdn.ttls.{name}", getattr(t, name), BROWSER_TTL_MINIMUM, s.plan, zero_means="not cached in browsers"
        )
    if not 0 <= t.page_rule_edge <= PAGE_RULE_EDGE_TTL_MAX:
        raise SettingsError(
            "cdn.ttls.page_rule_edge",
            f"{t.page_rule_edge} s is over the {PAGE_RULE_EDGE_TTL_MAX} s (28 days) the Cloudflare provider "
            "accepts for a page rule's edge_cache_ttl, so preview and up would stop",
            f"use 0..{PAGE_RULE_EDGE_TTL_MAX} (the static cache rule, which wins anyway, keeps its own TTL)",
        )
    for name in ("not_found_edge", "server_error_edge"):
        value = getattr(t, name)
        if not -1 <= value <= YEAR:
            raise SettingsError(
                f"cdn.ttls.{name}",
                f"{value} is not a status-code TTL Cloudflare accepts",
                f"use -1 (no-store), 0 (no-cache) or 1..{YEAR} seconds",
            )
    if not 0 <= s.browser_cache_ttl <= YEAR:
        raise SettingsError(
            "cdn.browser_cache_ttl",
            f"{s.browser_cache_ttl} s is outside 0..{YEAR} s for the zone Browser Cache TTL",
            f"use 0 (respect origin headers) or 1..{YEAR} seconds, e.g. 14400",
        )


def _check_rule_ttl(key: str, value: int, minimum: int, plan: str, *, zero_means: str) -> None:
    if value == 0 and zero_means:
        return
    if value < minimum or value > YEAR:
        zero = f", or 0 ({zero_means})" if zero_means else ""
        raise SettingsError(
            key,
            f"{value} s is outside what a cache rule on the {plan} plan accepts ({minimum}..{YEAR} s)",
            f"use {minimum}..{YEAR} seconds{zero}, or set cdn.plan to the zone's real plan",
        )


def _nested(inner: str, outer: str) -> bool:
    return inner.startswith(outer)


def _check_overlaps(s: CdnSettings) -> None:
    """Cacheable path prefixes must not overlap across rules: which TTL applies would then depend
    on rule order. A session prefix may sit inside a cacheable one (a carve-out: the bypass rule
    is last and wins), but not the other way round: that cacheable prefix would never apply."""
    cacheable = [
        ("cdn.static_path_prefixes", s.static_path_prefixes),
        ("cdn.video_path_prefixes", s.video_path_prefixes),
        ("cdn.content_api_prefixes", s.content_api_prefixes),
    ]
    flat = [(key, prefix) for key, prefixes in cacheable for prefix in prefixes]
    for i, (key_a, a) in enumerate(flat):
        for key_b, b in flat[i + 1 :]:
            if _nested(a, b) or _nested(b, a):
                outer, inner = (b, a) if _nested(a, b) else (a, b)
                same = key_a == key_b
                raise SettingsError(
                    key_b,
                    f"{inner!r} lies inside {outer!r}"
                    + (" in the same list" if same else f" from {key_a}: which TTL applies would depend on rule order"),
                    "drop the redundant prefix" if same else "keep each path in one list",
                )
    # Session and API prefixes are matched anywhere in the path, without their trailing slash.
    never = [("cdn.session_api_prefixes", session) for session in s.session_api_prefixes]
    for key, prefixes in cacheable:
        excluded = never if key == "cdn.content_api_prefixes" else [*never, *(("cdn.api_prefixes", a) for a in s.api_prefixes)]
        for prefix in prefixes:
            for other_key, other in excluded:
                if other.rstrip("/") in prefix:
                    raise SettingsError(
                        key,
                        f"{prefix!r} contains {other!r} from {other_key}: "
                        "those paths are never cached by this rule, so it never applies",
                        f"remove it, or narrow {other_key}",
                    )
    _check_nested_within("cdn.session_api_prefixes", s.session_api_prefixes)


def _check_nested_within(key: str, prefixes: Iterable[str]) -> None:
    items = list(prefixes)
    for a in items:
        for b in items:
            if a != b and _nested(a, b):
                raise SettingsError(key, f"{a!r} lies inside {b!r} in the same list", "drop the redundant prefix")


def _check_zone_settings(s: CdnSettings) -> None:
    if s.polish != "off" and s.plan == "free":
        raise SettingsError(
            "cdn.polish",
            "Polish needs a Pro plan or higher",
            "set polish: 'off', or set cdn.plan to the zone's real plan",
        )
    if s.webp and s.polish == "off":
        raise SettingsError(
            "cdn.webp",
            "WebP conversion is part of Polish, which is off",
            "set polish to lossless or lossy, or webp: false",
        )


def _check_page_rules(s: CdnSettings) -> None:
    if not s.page_rules_enabled:
        return
    if not s.zone_name:
        raise SettingsError(
            "cdn.zone_name",
            "is needed for page rule targets",
            "set the zone's domain (e.g. learn.example.com), or page_rules_enabled: false",
        )
    if s.plan in ("free", "pro"):
        raise SettingsError(
            "cdn.page_rules_enabled",
            f"the session-cookie bypass page rule needs a Business plan or higher, not {s.plan}",
            "set page_rules_enabled: false (the cache rules already bypass on the cookie)",
        )


def _check_expressions(s: CdnSettings) -> None:
    for rule in build_cache_rules(s):
        length = len(rule.expression)
        if length > EXPRESSION_MAX_CHARS:
            raise SettingsError(
                rule.source_keys[0],
                f"makes the {rule.ref} rule expression {length} characters long, "
                f"over Cloudflare's {EXPRESSION_MAX_CHARS} (built from {', '.join(rule.source_keys)})",
                "shorten the list, e.g. use one common path prefix instead of many",
            )
