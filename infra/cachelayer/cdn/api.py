"""Cache purge and cache analytics through the official `cloudflare` SDK (the `cdn` commands).

Planning (what to purge, in which batches) is pure; `Purger` and `fetch_analytics` talk to the
API through a `cloudflare.Cloudflare` client they are given, so tests hand them a client whose
HTTP layer is mocked. Time is injected (`sleep`, `clock`): pacing is tested without waiting.
The API token lives only inside the client: no message here ever contains it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import cloudflare

from cachelayer.cdn.settings import CdnSettings
from cachelayer.errors import CachelayerError

PurgeKind = Literal["files", "prefixes", "tags", "hosts", "purge_everything"]


@dataclass(frozen=True)
class PurgeLimits:
    requests_per_second: float  # purge requests of any kind
    items_per_request: int  # tags, prefixes or hosts in one request
    urls_per_request: int  # URLs (single-file purge) in one request
    urls_per_second: int  # single-file purge throughput


# Cloudflare docs "Purge cache > Purge limits" (developers.cloudflare.com/cache/how-to/purge-cache/),
# per account, token bucket: Free 5/min (bucket 25), Pro 5/s (25), Business 10/s (50),
# Enterprise 50/s (500); 100 operations per request (URLs: 500 on Enterprise); single-file
# purge 800/1500/1500/3000 URLs per second. We pace to the sustained rate, never the burst.
PURGE_LIMITS: Final[dict[str, PurgeLimits]] = {
    "free": PurgeLimits(requests_per_second=5 / 60, items_per_request=100, urls_per_request=100, urls_per_second=800),
    "pro": PurgeLimits(requests_per_second=5, items_per_request=100, urls_per_request=100, urls_per_second=1500),
    "business": PurgeLimits(requests_per_second=10, items_per_request=100, urls_per_request=100, urls_per_second=1500),
    "enterprise": PurgeLimits(requests_per_second=50, items_per_request=100, urls_per_request=500, urls_per_second=3000),
}
MAX_ATTEMPTS: Final = 5  # per batch, for 429, 5xx and unreachable API
BACKOFF_SECONDS: Final = 1.0  # doubled after each failed attempt unless Retry-After says otherwise
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class CdnApiError(CachelayerError):
    """A refusal or failure to report; exit_code 1 = problem/refused, 2 = could not check."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class PurgeBatch:
    kind: PurgeKind
    items: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        """The JSON body the API receives."""
        return {"purge_everything": True} if self.kind == "purge_everything" else {self.kind: list(self.items)}

    def describe(self) -> str:
        return "everything" if self.kind == "purge_everything" else f"{len(self.items)} {self.kind}"


def strip_scheme(value: str) -> str:
    """Prefixes and hosts are written without a scheme (docs "Purge cache by prefix")."""
    return re.sub(r"^https?://", "", value)


def video_targets(settings: CdnSettings, video_id: str) -> tuple[list[str], list[str]]:
    """(prefixes, tags) covering everything the video rule caches for one video: every video
    path prefix on every host that serves it, plus its Cache-Tag when cdn.video_cache_tag is set.
    Prefixes, not URLs: the video rule keys by device type, and a prefix purge drops every variant."""
    if not _VIDEO_ID.match(video_id):
        raise CdnApiError(f"--video {video_id!r} is not a video id (letters, digits, - and _)", 1)
    hosts = [h for h in (settings.zone_name, settings.static_host) if h]
    if not hosts:
        raise CdnApiError("cdn.zone_name is needed to purge a video (prefixes are host/path)", 1)
    prefixes = [f"{host}{prefix}{video_id}/" for host in hosts for prefix in settings.video_path_prefixes]
    tags = [settings.video_cache_tag.format(id=video_id)] if settings.video_cache_tag else []
    if not prefixes and not tags:
        raise CdnApiError("no cdn.video_path_prefixes and no cdn.video_cache_tag: nothing identifies a video", 1)
    return prefixes, tags


def static_urls(settings: CdnSettings, paths: Sequence[str]) -> list[str]:
    """Full URLs for static paths, on the static host when there is one."""
    host = settings.static_host or settings.zone_name
    urls = []
    for path in paths:
        if re.match(r"^https?://", path):
            urls.append(path)
        elif not host:
            raise CdnApiError("cdn.zone_name is needed to turn a path into a URL; pass a full URL", 1)
        else:
            urls.append(f"https://{host}/{path.lstrip('/')}")
    return urls


def plan_purge(
    limits: PurgeLimits,
    *,
    files: Sequence[str] = (),
    prefixes: Sequence[str] = (),
    tags: Sequence[str] = (),
    hosts: Sequence[str] = (),
    everything: bool = False,
) -> list[PurgeBatch]:
    """The requests to send: one kind per request, each at most the plan's per-request size."""
    if everything:
        return [PurgeBatch("purge_everything")]
    batches: list[PurgeBatch] = []
    kinds: list[tuple[PurgeKind, Sequence[str], int]] = [
        ("files", files, limits.urls_per_request),
        ("prefixes", [strip_scheme(p) for p in prefixes], limits.items_per_request),
        ("tags", tags, limits.items_per_request),
        ("hosts", [strip_scheme(h) for h in hosts], limits.items_per_request),
    ]
    for kind, items, size in kinds:
        unique = list(dict.fromkeys(items))
        batches += [PurgeBatch(kind, tuple(unique[i : i + size])) for i in range(0, len(unique), size)]
    return batches


@dataclass
class BatchResult:
    batch: PurgeBatch
    attempts: int
    purge_id: str


@dataclass
class Purger:
    client: cloudflare.Cloudflare
    zone_id: str
    limits: PurgeLimits
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    notify: Callable[[str], None] = lambda _message: None  # waits and retries, for the operator
    _next_send: float | None = field(default=None, init=False)

    def run(self, batches: Sequence[PurgeBatch], on_done: Callable[[BatchResult], None]) -> list[BatchResult]:
        results = []
        for batch in batches:
            result = self._send(batch)
            on_done(result)
            results.append(result)
        return results

    def _interval(self, batch: PurgeBatch) -> float:
        interval = 1 / self.limits.requests_per_second
        if batch.kind == "files":
            interval = max(interval, len(batch.items) / self.limits.urls_per_second)
        return interval

    def _pace(self, batch: PurgeBatch) -> None:
        now = self.clock()
        if self._next_send is not None and now < self._next_send:
            self.sleep(self._next_send - now)
        self._next_send = max(now, self._next_send or now) + self._interval(batch)

    def _send(self, batch: PurgeBatch) -> BatchResult:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self._pace(batch)
            try:
                response = self._call(batch)
                return BatchResult(batch, attempt, response.id if response is not None else "")
            except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as error:
                raise permission_error(error, "Cache Purge") from None
            except (cloudflare.RateLimitError, cloudflare.InternalServerError, cloudflare.APIConnectionError) as error:
                if attempt == MAX_ATTEMPTS:
                    raise CdnApiError(
                        f"{batch.describe()}: {_short(error)} after {MAX_ATTEMPTS} attempts; purged nothing more", 2
                    ) from None
                wait = _retry_after(error) or BACKOFF_SECONDS * 2 ** (attempt - 1)
                self.notify(f"{batch.describe()}: {_short(error)}; retrying in {wait:g} s")
                self.sleep(wait)
            except cloudflare.APIStatusError as error:
                raise CdnApiError(f"{batch.describe()}: refused by Cloudflare: {_short(error)}", 1) from None
        raise AssertionError("unreachable")

    def _call(self, batch: PurgeBatch) -> Any:
        purge = self.client.cache.purge
        if batch.kind == "files":
            return purge(zone_id=self.zone_id, files=list(batch.items))
        if batch.kind == "prefixes":
            return purge(zone_id=self.zone_id, prefixes=list(batch.items))
        if batch.kind == "tags":
            return purge(zone_id=self.zone_id, tags=list(batch.items))
        if batch.kind == "hosts":
            return purge(zone_id=self.zone_id, hosts=list(batch.items))
        return purge(zone_id=self.zone_id, purge_everything=True)


def _retry_after(error: cloudflare.APIError) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our backoff


def _short(error: cloudflare.APIError) -> str:
    """The status and Cloudflare's own error messages; never headers (they carry the token)."""
    if isinstance(error, cloudflare.APIConnectionError):
        return "Cloudflare API unreachable"
    status = getattr(error, "status_code", None)
    body = error.body if isinstance(error.body, dict) else {}
    messages = [str(e.get("message")) for e in body.get("errors", []) if isinstance(e, dict)]
    return f"HTTP {status}" + (f" ({'; '.join(messages)})" if messages else "")


def permission_error(error: cloudflare.APIError, permission: str) -> CdnApiError:
    return CdnApiError(
        f"the API token was refused ({_short(error)}): it needs the zone permission \"{permission}\" "
        "on this zone (dashboard > My Profile > API Tokens)",
        1,
    )


# -- Analytics ----------------------------------------------------------------------------------

# GraphQL Analytics API: hourly sums (httpRequests1hGroups) and requests by cache status
# (httpRequestsAdaptiveGroups, dimension cacheStatus). How wide one query's window may be
# (maxDuration) and how far back it may reach (notOlderThan) depend on the plan and the dataset:
# they are read first from the zone's `settings` node (docs "GraphQL Analytics API > Settings
# node"), and a window wider than maxDuration is split into several queries.
HOURLY: Final = "httpRequests1hGroups"
ADAPTIVE: Final = "httpRequestsAdaptiveGroups"
LIMITS_QUERY: Final = f"""
query AnalyticsLimits($zoneTag: string!) {{
  viewer {{
    zones(filter: {{zoneTag: $zoneTag}}) {{
      settings {{
        {HOURLY} {{ maxDuration notOlderThan }}
        {ADAPTIVE} {{ maxDuration notOlderThan }}
      }}
    }}
  }}
}}
""".strip()
_FIELDS: Final = {
    HOURLY: f"""hours: {HOURLY}(limit: 1000, orderBy: [datetime_ASC],
                                  filter: {{datetime_geq: $since, datetime_lt: $until}}) {{
        dimensions {{ datetime }}
        sum {{ requests cachedRequests bytes cachedBytes }}
      }}""",
    ADAPTIVE: f"""statuses: {ADAPTIVE}(limit: 50, orderBy: [count_DESC],
                                           filter: {{datetime_geq: $since, datetime_lt: $until}}) {{
        count
        dimensions {{ cacheStatus }}
      }}""",
}


def analytics_query(*datasets: str) -> str:
    """The data query for one window, reading the given datasets."""
    fields = "\n      ".join(_FIELDS[d] for d in datasets)
    return f"""
query CacheAnalytics($zoneTag: string!, $since: Time!, $until: Time!) {{
  viewer {{
    zones(filter: {{zoneTag: $zoneTag}}) {{
      {fields}
    }}
  }}
}}
""".strip()


ANALYTICS_QUERY: Final = analytics_query(HOURLY, ADAPTIVE)


@dataclass(frozen=True)
class DatasetLimits:
    max_duration: timedelta  # widest window one query may ask for
    not_older_than: timedelta  # how far back the dataset reaches


def split_window(since: datetime, until: datetime, width: timedelta) -> list[tuple[datetime, datetime]]:
    """[since, until) cut into consecutive windows at most `width` wide, oldest first."""
    windows = []
    start = since
    while start < until:
        end = min(start + width, until)
        windows.append((start, end))
        start = end
    return windows


@dataclass(frozen=True)
class Hour:
    start: str
    requests: int
    cached_requests: int
    bytes: int
    cached_bytes: int


@dataclass(frozen=True)
class AnalyticsReport:
    since: str
    until: str
    hours: tuple[Hour, ...]
    statuses: tuple[tuple[str, int], ...]  # (cacheStatus, requests), most first

    @property
    def requests(self) -> int:
        return sum(h.requests for h in self.hours)

    @property
    def cached_requests(self) -> int:
        return sum(h.cached_requests for h in self.hours)

    @property
    def bytes(self) -> int:
        return sum(h.bytes for h in self.hours)

    @property
    def cached_bytes(self) -> int:
        return sum(h.cached_bytes for h in self.hours)

    @property
    def hit_ratio(self) -> float | None:
        return self.cached_requests / self.requests if self.requests else None

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "bytes": self.bytes,
            "cached_bytes": self.cached_bytes,
            "hit_ratio": self.hit_ratio,
            "by_cache_status": dict(self.statuses),
            "hourly": [h.__dict__ for h in self.hours],
        }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _graphql(client: cloudflare.Cloudflare, zone_id: str, query: str, variables: dict[str, str]) -> dict[str, Any]:
    """The first zone node of one GraphQL answer; every failure as a CdnApiError."""
    body = {"query": query, "variables": {"zoneTag": zone_id, **variables}}
    try:
        data = client.post("/graphql", body=body, cast_to=object)
    except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as error:
        raise permission_error(error, "Analytics Read") from None
    except (cloudflare.RateLimitError, cloudflare.InternalServerError, cloudflare.APIConnectionError) as error:
        raise CdnApiError(f"could not read analytics: {_short(error)}", 2) from None
    except cloudflare.APIStatusError as error:
        raise CdnApiError(f"analytics refused by Cloudflare: {_short(error)}", 1) from None
    if not isinstance(data, dict):
        raise CdnApiError("the GraphQL API answered with something that is not JSON", 2)
    errors = data.get("errors") or []
    if errors:
        text = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
        if re.search(r"not authori[sz]ed|permission|authentication", text, re.IGNORECASE):
            raise CdnApiError(
                f"the API token was refused ({text}): it needs the zone permission \"Analytics Read\" on this zone", 1
            )
        raise CdnApiError(f"the GraphQL API reported: {text}", 1)
    zones = ((data.get("data") or {}).get("viewer") or {}).get("zones") or []
    if not zones:
        raise CdnApiError(f"no analytics for zone {zone_id}: check cdn.zone_id and the token's zone", 1)
    zone: dict[str, Any] = zones[0]
    return zone


def fetch_limits(client: cloudflare.Cloudflare, zone_id: str) -> dict[str, DatasetLimits]:
    """maxDuration and notOlderThan (seconds) of both datasets, from the zone's settings node."""
    settings = _graphql(client, zone_id, LIMITS_QUERY, {}).get("settings") or {}
    limits = {}
    for dataset in (HOURLY, ADAPTIVE):
        node = settings.get(dataset) or {}
        try:
            limits[dataset] = DatasetLimits(
                max_duration=timedelta(seconds=int(node["maxDuration"])),
                not_older_than=timedelta(seconds=int(node["notOlderThan"])),
            )
        except (KeyError, TypeError, ValueError):
            raise CdnApiError(f"the GraphQL settings node gave no limits for {dataset} on this zone's plan", 1) from None
    return limits


def _describe(span: timedelta) -> str:
    hours = int(span.total_seconds() // 3600)
    return f"{hours // 24}d" if hours % 24 == 0 and hours >= 24 else f"{hours}h"


def fetch_analytics(client: cloudflare.Cloudflare, zone_id: str, since: datetime, until: datetime) -> AnalyticsReport:
    """The report for [since, until): limits first, then one query per window each dataset allows."""
    limits = fetch_limits(client, zone_id)
    for dataset, limit in limits.items():
        if until - since > limit.not_older_than:
            raise CdnApiError(
                f"--since {_describe(until - since)} reaches further back than this plan keeps {dataset} "
                f"({_describe(limit.not_older_than)})",
                1,
            )
    hourly_windows = split_window(since, until, limits[HOURLY].max_duration)
    adaptive_windows = split_window(since, until, limits[ADAPTIVE].max_duration)
    zones: list[tuple[dict[str, Any], ...]] = []
    if len(hourly_windows) == 1 and len(adaptive_windows) == 1:
        zones.append((_graphql(client, zone_id, ANALYTICS_QUERY, {"since": _iso(since), "until": _iso(until)}),))
    else:
        for dataset, windows in ((HOURLY, hourly_windows), (ADAPTIVE, adaptive_windows)):
            query = analytics_query(dataset)
            zones.append(
                tuple(_graphql(client, zone_id, query, {"since": _iso(a), "until": _iso(b)}) for a, b in windows)
            )
    nodes = [zone for group in zones for zone in group]
    hours = tuple(
        Hour(
            start=str(h["dimensions"]["datetime"]),
            requests=int(h["sum"]["requests"]),
            cached_requests=int(h["sum"]["cachedRequests"]),
            bytes=int(h["sum"]["bytes"]),
            cached_bytes=int(h["sum"]["cachedBytes"]),
        )
        for zone in nodes
        for h in zone.get("hours") or []
    )
    counts: dict[str, int] = {}
    for zone in nodes:
        for s in zone.get("statuses") or []:
            status = str(s["dimensions"]["cacheStatus"])
            counts[status] = counts.get(status, 0) + int(s["count"])
    statuses = tuple(sorted(counts.items(), key=lambda item: -item[1]))
    return AnalyticsReport(_iso(since), _iso(until), hours, statuses)
