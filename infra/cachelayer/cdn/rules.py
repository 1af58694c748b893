"""Cloudflare cache rules, page rules and zone settings, planned from typed CDN settings.

Pure core: no pulumi import. The Pulumi component (components/cdn.py) only turns these plans
into resources, so everything that decides CDN behaviour is checked here without Cloudflare.

Cache rules live in one entry-point ruleset in the `http_request_cache_settings` phase. In that
phase every matching rule applies, in order, and when two matching rules set the same setting the
LAST one wins (Cloudflare docs, "Cache Rules > Order and priority"). So the bypass rule for
sessions and user data is placed last. It sends only `cache: false`: Cloudflare documents the
TTL, cache-key, serve-stale and range settings only for cacheable rules, and one refused rule
fails the whole ruleset. Where the bypass overlaps a cacheable rule (only the content-API rule,
and only with the session cookie), `cache: false` still wins, being last; tests prove that with
`evaluate()`.

Expressions are never taken from config as text: each rule is a small condition tree built from
typed lists (extensions, path prefixes, hosts, a cookie name). The same tree renders the Rules
language string that Cloudflare gets and evaluates a sample request in `evaluate`, so the tests of
precedence check the very conditions that are deployed.

Web cache deception: the static and video rules override the origin's TTL, so they must never
match a path the application API serves, whatever the extension an attacker appends. Paths are
compared lowercased (`lower(http.request.uri.path)`), API roots are matched anywhere in the path,
and paths with `;` (path parameters) or an encoded slash or backslash are never cached by them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

from cachelayer.cdn.model import CdnSettings

RULESET_PHASE: Final = "http_request_cache_settings"
EXPRESSION_MAX_CHARS: Final = 4096  # Cloudflare's limit for one rule expression
SERVER_ERRORS: Final = (500, 599)
PATH: Final = "lower(http.request.uri.path)"  # every path test is case-insensitive
# Never cached by the static/video rules: path parameters (`/api;/me`, `..;/`) and encoded
# slashes or backslashes, which some origin frameworks resolve after Cloudflare has matched.
SUSPICIOUS_PATH_PARTS: Final = (";", "%2f", "%5c")
_UNRESERVED: Final = re.compile(r"%(4[1-9a-fA-F]|5[0-9aA]|6[1-9a-fA-F]|7[0-9aA]|3[0-9]|2[dDeE]|5[fF]|7[eE])")

# -- Rules-language conditions ------------------------------------------------------------------


def quote(text: str) -> str:
    """A Rules-language quoted string: backslash and double quote are the escaped characters."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def normalize_path(raw: str) -> str:
    """The path as rules see it after Cloudflare URL normalization of incoming URLs (type
    "cloudflare", which the component pins): unreserved characters percent-decoded, back
    slashes turned into slashes, repeated slashes merged, dot segments removed."""
    path = _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), raw).replace("\\", "/")
    path = re.sub(r"/{2,}", "/", path)
    segments: list[str] = []
    parts = path.split("/")
    for index, segment in enumerate(parts):
        last = index == len(parts) - 1
        if segment == ".":
            if last:
                segments.append("")
        elif segment == "..":
            if len(segments) > 1:
                segments.pop()
            if last:
                segments.append("")
        else:
            segments.append(segment)
    joined = "/".join(segments)
    return joined if joined.startswith("/") else "/" + joined


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request that the generated expressions look at."""

    path: str  # as sent; normalized the way Cloudflare does before rules see it
    host: str = "example.com"
    cookie: str = ""  # the raw Cookie header, as `http.cookie` sees it

    @property
    def normalized_path(self) -> str:
        return normalize_path(self.path)

    @property
    def lower_path(self) -> str:
        """`lower(http.request.uri.path)`."""
        return self.normalized_path.lower()

    @property
    def extension(self) -> str:
        """Like `http.request.uri.path.extension`: lowercased, no dot, after the last dot of the last
        segment; a segment whose only dot is its first character (`/.mp3`, a hidden file) has
        none (Rules language field reference: `/.mp3` -> "", `/.foo.mp3` -> "mp3")."""
        basename = self.normalized_path.rsplit("/", 1)[-1]
        if "." not in basename.lstrip(".") and basename.startswith("."):
            return ""
        return basename.rsplit(".", 1)[1].lower() if "." in basename else ""


class Condition(Protocol):
    def render(self) -> str: ...
    def matches(self, request: Request) -> bool: ...


@dataclass(frozen=True)
class ExtensionIn:
    extensions: tuple[str, ...]

    def render(self) -> str:
        return f"http.request.uri.path.extension in {{{' '.join(quote(e) for e in self.extensions)}}}"

    def matches(self, request: Request) -> bool:
        return request.extension in self.extensions


@dataclass(frozen=True)
class PathStartsWith:
    """Lowercased path starts with `prefix` (settings keep prefixes lowercase)."""

    prefix: str

    def render(self) -> str:
        return f"starts_with({PATH}, {quote(self.prefix)})"

    def matches(self, request: Request) -> bool:
        return request.lower_path.startswith(self.prefix)


@dataclass(frozen=True)
class PathContains:
    """Lowercased path contains `text` anywhere."""

    text: str

    def render(self) -> str:
        return f"{PATH} contains {quote(self.text)}"

    def matches(self, request: Request) -> bool:
        return self.text in request.lower_path


@dataclass(frozen=True)
class HostIs:
    host: str

    def render(self) -> str:
        return f"http.host eq {quote(self.host)}"

    def matches(self, request: Request) -> bool:
        return request.host.lower() == self.host


@dataclass(frozen=True)
class CookieContains:
    """`http.cookie contains "name="`: Cloudflare's own bypass-on-cookie example uses this form.

    It can also match a longer cookie name ending in `name`; that only bypasses more, never
    serves a private response from cache, so it errs on the safe side.
    """

    name: str

    def render(self) -> str:
        return f"http.cookie contains {quote(self.name + '=')}"

    def matches(self, request: Request) -> bool:
        return f"{self.name}=" in request.cookie


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]

    def leaves(self) -> tuple[Condition, ...]:
        """The parts with nested AnyOf flattened: `or` is associative, fewer parentheses."""
        return tuple(leaf for p in self.parts for leaf in (p.leaves() if isinstance(p, AnyOf) else (p,)))

    def render(self) -> str:
        leaves = self.leaves()
        if len(leaves) == 1:
            return leaves[0].render()
        return " or ".join(f"({p.render()})" for p in leaves)

    def matches(self, request: Request) -> bool:
        return any(p.matches(request) for p in self.parts)


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Condition, ...]

    def render(self) -> str:
        return " and ".join(f"({p.render()})" for p in self.parts)

    def matches(self, request: Request) -> bool:
        return all(p.matches(request) for p in self.parts)


@dataclass(frozen=True)
class Not:
    part: Condition

    def render(self) -> str:
        return f"not ({self.part.render()})"

    def matches(self, request: Request) -> bool:
        return not self.part.matches(request)


# -- Cache rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusTtl:
    """Edge TTL for one status code or an inclusive range; -1 = no-store, 0 = no-cache."""

    value: int
    code: int | None = None
    code_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class CacheAction:
    """The `set_cache_settings` parameters of one rule; `cache=False` is a bypass."""

    cache: bool
    edge_ttl: int | None = None  # override the origin with this TTL
    browser_ttl: int | None = None  # override the origin; 0 = do not cache in browsers
    status_ttls: tuple[StatusTtl, ...] = ()
    cache_by_device_type: bool = False
    cache_deception_armor: bool = False  # cache only when Content-Type matches the URL's extension
    origin_range_requests: bool = False
    serve_stale: bool = False  # serve stale while the edge revalidates

    def parameters(self) -> dict[str, Any]:
        """The action parameters as the pulumi-cloudflare inputs name them (snake_case), as plain
        data; tests/support/cloudflare_contract.py maps them to the API's JSON."""
        if not self.cache:
            return dict(BYPASS_PARAMETERS)
        params: dict[str, Any] = {"cache": True}
        if self.edge_ttl is not None:
            edge: dict[str, Any] = {"mode": "override_origin", "default": self.edge_ttl}
            if self.status_ttls:
                edge["status_code_ttls"] = [_status_ttl(s) for s in self.status_ttls]
            params["edge_ttl"] = edge
        if self.browser_ttl is not None:
            params["browser_ttl"] = (
                {"mode": "bypass"}
                if self.browser_ttl == 0
                else {"mode": "override_origin", "default": self.browser_ttl}
            )
        cache_key = {
            name: True
            for name, on in (
                ("cache_by_device_type", self.cache_by_device_type),
                ("cache_deception_armor", self.cache_deception_armor),
            )
            if on
        }
        if cache_key:
            params["cache_key"] = cache_key
        if self.origin_range_requests:
            params["origin_range_requests"] = {"mode": "on"}
        if self.serve_stale:
            params["serve_stale"] = {"disable_stale_while_updating": False}
        return params


# The bypass rule sends `cache: false` and nothing else: Cloudflare documents edge/browser TTL,
# cache key, serve stale and origin range requests as settings of cacheable rules only, and a
# rule the API refuses fails the whole ruleset. Being last it wins `cache` wherever it overlaps;
# the only overlap is the content-API rule with the session cookie, whose other settings
# (browser TTL "bypass", a 5-minute edge TTL that never applies to an uncached response) make
# nothing private cacheable (tests/unit/test_cdn_rules.py proves both with evaluate()).
BYPASS_PARAMETERS: Final[Mapping[str, Any]] = MappingProxyType({"cache": False})

# Status-code TTLs in cache rules: one Cloudflare page says Enterprise only, another all plans
# (docs/cdn.md, "Limits"). Sent only where no source doubts them.
STATUS_TTL_PLANS: Final = frozenset({"enterprise"})


def _status_ttl(s: StatusTtl) -> dict[str, Any]:
    if s.code_range is not None:
        return {"status_code_range": {"from": s.code_range[0], "to": s.code_range[1]}, "value": s.value}
    return {"status_code": s.code, "value": s.value}


@dataclass(frozen=True)
class CacheRule:
    ref: str  # stable rule reference, kept across reorders
    description: str
    condition: Condition
    action: CacheAction
    source_keys: tuple[str, ...]  # stack keys the expression is built from, biggest share first

    @property
    def expression(self) -> str:
        return self.condition.render()


Keyed = list[tuple[str, Condition]]  # (stack key, the condition built from it)


def _keyed(parts: Sequence[tuple[str, Condition | None]]) -> Keyed:
    return [(key, cond) for key, cond in parts if cond is not None]


def _rule_parts(keyed: Keyed) -> AnyOf:
    return AnyOf(tuple(cond for _, cond in keyed))


def _source_keys(keyed: Keyed) -> tuple[str, ...]:
    """Keys ordered by how many expression characters they account for."""
    return tuple(key for key, _ in sorted(keyed, key=lambda kc: -len(kc[1].render())))


def _prefixes(prefixes: Sequence[str]) -> Condition | None:
    return AnyOf(tuple(PathStartsWith(p) for p in prefixes)) if prefixes else None


def _anywhere(prefixes: Sequence[str]) -> Condition | None:
    """The prefixes without their trailing slash, matched anywhere in the path: `/api` also
    catches `/api;x/...` and `/static/..;/api/...`, which some origins route into the API."""
    return AnyOf(tuple(PathContains(p.rstrip("/") or p) for p in prefixes)) if prefixes else None


def _roots_anywhere(prefixes: Sequence[str]) -> tuple[Condition, ...]:
    """Like _anywhere, without roots that contain a shorter one (`/api/v1/me` when `/api` is there)."""
    roots = [p.rstrip("/") or p for p in prefixes]
    kept = [r for r in roots if not any(o != r and o in r for o in roots)]
    return tuple(PathContains(r) for r in dict.fromkeys(kept))


def _extensions(extensions: Sequence[str]) -> Condition | None:
    return ExtensionIn(tuple(extensions)) if extensions else None


def _all(*parts: Condition | None) -> Condition:
    present = tuple(p for p in parts if p is not None)
    return present[0] if len(present) == 1 else AllOf(present)


def build_cache_rules(settings: CdnSettings) -> tuple[CacheRule, ...]:
    """The cache rules in evaluation order; later rules win conflicting settings."""
    ttl = settings.ttls
    status_ttls = (
        (
            StatusTtl(value=ttl.not_found_edge, code=404),
            StatusTtl(value=ttl.server_error_edge, code_range=SERVER_ERRORS),
        )
        if settings.plan in STATUS_TTL_PLANS
        else ()
    )
    armor = settings.cache_deception_armor
    static_keyed = _keyed(
        [
            ("cdn.static_extensions", _extensions(settings.static_extensions)),
            ("cdn.static_path_prefixes", _prefixes(settings.static_path_prefixes)),
            ("cdn.static_host", HostIs(settings.static_host) if settings.static_host else None),
        ]
    )
    video_keyed = _keyed(
        [
            ("cdn.video_extensions", _extensions(settings.video_extensions)),
            ("cdn.video_path_prefixes", _prefixes(settings.video_path_prefixes)),
        ]
    )
    content_keyed = _keyed([("cdn.content_api_prefixes", _prefixes(settings.content_api_prefixes))])
    session_keyed = _keyed([("cdn.session_api_prefixes", _anywhere(settings.session_api_prefixes))])
    api_keyed = _keyed([("cdn.api_prefixes", _anywhere(settings.api_prefixes))])
    suspicious = AnyOf(tuple(PathContains(part) for part in SUSPICIOUS_PATH_PARTS))
    # Static and video rules override the origin's TTL, so they never match an API or session
    # path, whatever its extension or letter case (web cache deception).
    never_static = AnyOf((*_roots_anywhere([*settings.api_prefixes, *settings.session_api_prefixes]), suspicious))
    static = _all(_rule_parts(static_keyed), Not(never_static))
    video = _all(_rule_parts(video_keyed), Not(never_static))
    content = _all(_rule_parts(content_keyed), Not(AnyOf((*(c for _, c in session_keyed), suspicious))))
    # A browser sends the session cookie with every same-site request, assets included; the
    # cookie bypass leaves static and video alone so logged-in users still get cached assets.
    # Session paths, and API paths outside the public content prefixes, bypass unconditionally.
    cookie = CookieContains(settings.session_cookie)
    api_not_content = _all(*(c for _, c in api_keyed), Not(content)) if api_keyed else None
    bypass_parts = [c for _, c in session_keyed]
    if api_not_content is not None:
        bypass_parts.append(api_not_content)
    bypass_parts.append(suspicious)  # else Cloudflare's default caching by extension would apply
    bypass_parts.append(AllOf((cookie, Not(AnyOf((static, video))))))
    exclusion_keys: Keyed = [*api_keyed, *session_keyed]
    return (
        CacheRule(
            ref="static_assets",
            description="Static assets (CSS, JS, images, fonts): 1 year at the edge and in browsers; never API paths",
            condition=static,
            action=CacheAction(
                cache=True,
                edge_ttl=ttl.static_edge,
                browser_ttl=ttl.static_browser,
                status_ttls=status_ttls,
                cache_deception_armor=armor,
                serve_stale=True,  # fingerprinted files: a stale copy is the same bytes
            ),
            source_keys=_source_keys([*static_keyed, *exclusion_keys]),
        ),
        CacheRule(
            ref="video",
            description="Video: 7 days at the edge, 1 day in browsers, keyed by device type, ranges from cache",
            condition=video,
            action=CacheAction(
                cache=True,
                edge_ttl=ttl.video_edge,
                browser_ttl=ttl.video_browser,
                status_ttls=status_ttls,
                cache_by_device_type=True,  # mobile and desktop get different renditions
                cache_deception_armor=armor,
                origin_range_requests=True,  # cold misses fetch cache-aligned ranges, not whole files
                serve_stale=True,  # published videos do not change in place
            ),
            source_keys=_source_keys([*video_keyed, *exclusion_keys]),
        ),
        CacheRule(
            ref="content_api",
            description="Public content APIs: 5 minutes at the edge, not cached in browsers",
            condition=content,
            action=CacheAction(
                cache=True,
                edge_ttl=ttl.content_api_edge,
                browser_ttl=ttl.content_api_browser,
                status_ttls=status_ttls,
                serve_stale=True,  # public data, already allowed to be minutes old
            ),
            source_keys=_source_keys([*content_keyed, *session_keyed]),
        ),
        CacheRule(
            ref="private_bypass",
            description="Session and non-public API paths, and the session cookie: bypass (last, so it wins)",
            condition=AnyOf(tuple(bypass_parts)),
            action=CacheAction(cache=False),
            source_keys=_source_keys(
                [*session_keyed, *api_keyed, ("cdn.session_cookie", cookie), *static_keyed, *video_keyed, *content_keyed]
            ),
        ),
    )


@dataclass(frozen=True)
class CacheDecision:
    """What the cache-settings phase does with one request."""

    matched: tuple[str, ...]  # refs of the matching rules, in evaluation order
    settings: Mapping[str, Any]  # merged action parameters; the last matching rule wins each
    decided_by: Mapping[str, str]  # setting -> ref of the rule whose value won

    @property
    def cached(self) -> bool | None:
        """True/False as the rules decide; None when no rule matched (Cloudflare's defaults)."""
        value = self.settings.get("cache")
        return None if value is None else bool(value)


def evaluate(rules: Sequence[CacheRule], request: Request) -> CacheDecision:
    """Apply the rules as Cloudflare's cache-settings phase does: all matches, last one wins."""
    merged: dict[str, Any] = {}
    decided_by: dict[str, str] = {}
    matched: list[str] = []
    for rule in rules:
        if not rule.condition.matches(request):
            continue
        matched.append(rule.ref)
        for setting, value in rule.action.parameters().items():
            merged[setting] = value
            decided_by[setting] = rule.ref
    return CacheDecision(tuple(matched), MappingProxyType(merged), MappingProxyType(decided_by))


# -- Page rules ---------------------------------------------------------------------------------

CacheLevel = Literal["bypass", "basic", "simplified", "aggressive", "cache_everything"]


@dataclass(frozen=True)
class PageRulePlan:
    """One page rule. Only the highest-priority matching page rule applies to a URL, and a
    higher number is a higher priority. Cache rules take precedence over page rules, and
    Cloudflare renumbers priorities 1..n in creation order (the component chains them)."""

    ref: str
    target: str  # URL pattern, `*` is the wildcard
    priority: int
    cache_level: CacheLevel | None = None
    edge_cache_ttl: int | None = None
    browser_cache_ttl: int | None = None
    bypass_cache_on_cookie: str | None = None

    def actions(self) -> dict[str, Any]:
        """The page rule actions in the API's (snake_case) shape, as plain data."""
        fields = {
            "cache_level": self.cache_level,
            "edge_cache_ttl": self.edge_cache_ttl,
            "browser_cache_ttl": self.browser_cache_ttl,
            "bypass_cache_on_cookie": self.bypass_cache_on_cookie,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def matches(self, url: str) -> bool:
        """Whether `url` ("host/path", scheme optional) matches the target pattern."""
        bare = re.sub(r"^https?://", "", url)
        pattern = ".*".join(re.escape(part) for part in self.target.split("*"))
        return re.fullmatch(pattern, bare) is not None


def build_page_rules(settings: CdnSettings) -> tuple[PageRulePlan, ...]:
    """Cache-everything on the static host (or static paths) above a zone-wide cookie bypass."""
    if not settings.page_rules_enabled:
        return ()
    ttl = settings.ttls
    static_targets = (
        [f"{settings.static_host}/*"]
        if settings.static_host
        else [f"{settings.zone_name}{prefix}*" for prefix in settings.static_path_prefixes]
    )
    # Priority 1 (lowest) for the catch-all, so every static rule outranks it.
    rules = [
        PageRulePlan(
            ref="session_cookie_bypass",
            target=f"{settings.zone_name}/*",
            priority=1,
            bypass_cache_on_cookie=f"{settings.session_cookie}=.*",  # Cloudflare's basic cookie regex
        )
    ]
    for index, target in enumerate(static_targets):
        rules.append(
            PageRulePlan(
                ref=f"static_cache_everything_{index}",
                target=target,
                priority=2 + index,
                cache_level="cache_everything",
                edge_cache_ttl=ttl.page_rule_edge,  # the provider caps page rules lower than cache rules
                browser_cache_ttl=ttl.static_browser,
            )
        )
    return tuple(rules)


def page_rule_for(rules: Sequence[PageRulePlan], url: str) -> PageRulePlan | None:
    """The one page rule Cloudflare applies to `url`: the highest-priority match."""
    matching = [r for r in rules if r.matches(url)]
    return max(matching, key=lambda r: r.priority) if matching else None


# -- Zone settings and URL normalization ----------------------------------------------------------


def zone_setting_values(settings: CdnSettings) -> dict[str, str | int]:
    """`ZoneSetting` id -> value, for the switches in stack config. Brotli is not here: it is
    no longer a zone setting (always on since 2024-06-14, Cloudflare API deprecations). Neither
    is Cache Deception Armor: it is a cache-key field of the static and video rules."""

    def on(flag: bool) -> str:
        return "on" if flag else "off"

    return {
        "browser_cache_ttl": settings.browser_cache_ttl,
        "http3": on(settings.http3),
        "early_hints": on(settings.early_hints),
        "polish": settings.polish,
        "webp": on(settings.webp),
    }


def url_normalization(rules: Sequence[CacheRule]) -> dict[str, str]:
    """The zone's URL normalization: type "cloudflare" (what `normalize_path` models), applied to
    incoming URLs, and to the URLs sent to the origin too ("both") when a cached rule keys by
    device type, as Cloudflare advises: the origin then renders for the very URL the cache key
    was built from."""
    by_device = any(rule.action.cache and rule.action.cache_by_device_type for rule in rules)
    return {"type": "cloudflare", "scope": "both" if by_device else "incoming"}
