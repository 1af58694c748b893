"""The stack key `cdn` as typed data: the seed TTL table and the CdnSettings dataclass.

The lowest CDN module (stdlib only): `cdn.rules` plans from these types and `cdn.settings` loads
and checks them, so neither of those imports the other's caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

MINUTE: Final = 60
DAY: Final = 86_400
YEAR: Final = 365 * DAY  # also Cloudflare's longest cache-rule TTL

# The seed TTL table, in seconds: the ONE place these numbers are written. Settings defaults
# (cdn.ttls.*), the rules and docs/cdn.md all come from it.
CACHE_TTLS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "static_edge": YEAR,  # CSS, JS, images, fonts: 1 year at the edge...
        "static_browser": YEAR,  # ...and in browsers (assets are fingerprinted)
        "video_edge": 7 * DAY,  # video segments and playlists: 7 days at the edge
        "video_browser": DAY,  # 1 day in browsers
        "content_api_edge": 5 * MINUTE,  # public content APIs: 5 minutes at the edge
        "content_api_browser": 0,  # 0 = not cached in browsers (browser TTL mode "bypass")
        # Status-code TTLs are sent on Enterprise zones only (docs/cdn.md, "Limits"):
        "not_found_edge": MINUTE,  # 404: short, so content published later shows up soon
        "server_error_edge": -1,  # 5xx: never stored (-1 = no-store)
        # Legacy page rules only (off by default): the provider's page-rule maximum, 28 days.
        "page_rule_edge": 28 * DAY,
    }
)

Plan = Literal["free", "pro", "business", "enterprise"]
Polish = Literal["off", "lossless", "lossy"]


@dataclass(frozen=True)
class CacheTtls:
    """Overrides for the TTL table, in seconds; field names are the table's keys."""

    static_edge: int = CACHE_TTLS["static_edge"]
    static_browser: int = CACHE_TTLS["static_browser"]
    video_edge: int = CACHE_TTLS["video_edge"]
    video_browser: int = CACHE_TTLS["video_browser"]
    content_api_edge: int = CACHE_TTLS["content_api_edge"]
    content_api_browser: int = CACHE_TTLS["content_api_browser"]
    not_found_edge: int = CACHE_TTLS["not_found_edge"]
    server_error_edge: int = CACHE_TTLS["server_error_edge"]
    page_rule_edge: int = CACHE_TTLS["page_rule_edge"]


@dataclass(frozen=True)
class CdnSettings:
    """The stack key `cdn`. Without `zone_id` (dev) no CDN resource is declared."""

    zone_id: str = ""
    zone_name: str = ""  # e.g. learn.example.com; page rule targets need it
    plan: Plan = "business"  # the zone's plan: it sets the lowest TTL Cloudflare accepts
    static_host: str = ""  # optional host that serves only static files
    static_path_prefixes: tuple[str, ...] = ("/static/", "/assets/")
    static_extensions: tuple[str, ...] = (
        "css", "js", "mjs", "map", "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico",
        "woff", "woff2", "ttf", "otf", "eot",
    )  # fmt: skip
    video_path_prefixes: tuple[str, ...] = ("/video/",)
    video_extensions: tuple[str, ...] = ("mp4", "webm", "m3u8", "ts")
    # Everything the application API serves: static and video rules never match inside it, and
    # only content_api_prefixes are cached there (web cache deception).
    api_prefixes: tuple[str, ...] = ("/api/",)
    content_api_prefixes: tuple[str, ...] = ("/api/v1/courses/", "/api/v1/catalog/")
    session_api_prefixes: tuple[str, ...] = ("/api/v1/session/", "/api/v1/users/", "/api/v1/me/")
    session_cookie: str = "lp_session"
    video_cache_tag: str = ""  # Cache-Tag the origin sets on a video's files, e.g. "video-{id}" (for purge)
    ttls: CacheTtls = field(default_factory=CacheTtls)
    browser_cache_ttl: int = 14400  # zone default when no rule sets one (Cloudflare's default)
    http3: bool = True
    early_hints: bool = True
    polish: Polish = "lossless"
    webp: bool = True
    tiered_cache: bool = True  # Smart Tiered Cache
    # Page rules are deprecated and cache rules override them: only for zones that still need them.
    page_rules_enabled: bool = False
    # Cache Deception Armor on the static and video rules (a cache-key field of a cache rule, not
    # a zone setting): Cloudflare caches only when the Content-Type matches the URL's extension.
    cache_deception_armor: bool = True
    # Adopt the zone's existing cache-rules entry point (created in the dashboard) by its id, and
    # keep its name: a name change would make Pulumi replace, i.e. delete, the entry point.
    cache_ruleset_id: str = ""
    cache_ruleset_name: str = ""
