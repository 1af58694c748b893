"""`cachelayer cdn ...`: purge, analytics and an offline explain of the cache rules.

The zone comes from the stack file (cdn.zone_id); the token from CLOUDFLARE_API_TOKEN, and it
is never printed. Exit codes: 0 ok, 1 problem or refused, 2 could not check (API unreachable).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

import cloudflare
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cachelayer.cdn.api import (
    PURGE_LIMITS,
    AnalyticsReport,
    BatchResult,
    CdnApiError,
    Purger,
    fetch_analytics,
    plan_purge,
    static_urls,
    video_targets,
)
from cachelayer.cdn.rules import Request, build_cache_rules, evaluate
from cachelayer.cdn.settings import CdnSettings, load_cdn_settings
from cachelayer.config.stack_file import read_stack_config
from cachelayer.errors import SettingsError

cdn_app = typer.Typer(help="The Cloudflare CDN: purge, analytics, and which cache rules a URL meets.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
# Seams for tests: the client (its HTTP layer) and time. Never real network or time in tests.
make_client: Callable[[str], cloudflare.Cloudflare] = lambda token: cloudflare.Cloudflare(  # noqa: E731
    api_token=token, max_retries=0  # retries are ours: paced, and honouring Retry-After
)
sleep: Callable[[float], None] = time.sleep
clock: Callable[[], float] = time.monotonic
now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack whose Pulumi.<stack>.yaml is read.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def _settings(stack: str) -> CdnSettings:
    try:
        settings = load_cdn_settings(read_stack_config(stack).get("cdn"), required=True)
    except SettingsError as error:
        raise _fail(str(error)) from None
    assert settings is not None  # required=True
    return settings


def _client(permission: str) -> cloudflare.Cloudflare:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise _fail(f"{TOKEN_ENV} is not set: create an API token with the zone permission \"{permission}\"")
    return make_client(token)


@cdn_app.command()
def purge(
    stack: StackOption = "prod",
    video: Annotated[list[str] | None, typer.Option("--video", help="Video id: its prefixes (and tag).")] = None,
    static: Annotated[list[str] | None, typer.Option("--static", help="Static file path or URL.")] = None,
    prefix: Annotated[list[str] | None, typer.Option("--prefix", help="host/path prefix.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Cache-Tag.")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", help="Hostname.")] = None,
    everything: Annotated[bool, typer.Option("--everything", help="Purge the whole zone.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before --everything.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the requests, send nothing.")] = False,
) -> None:
    """Purge cached content, batched to the plan's per-request limit and paced to its rate limit."""
    settings = _settings(stack)
    limits = PURGE_LIMITS[settings.plan]
    prefixes, tags = list(prefix or []), list(tag or [])
    try:
        for video_id in video or []:
            video_prefixes, video_tags = video_targets(settings, video_id)
            prefixes += video_prefixes
            tags += video_tags
        files = static_urls(settings, static or [])
    except CdnApiError as error:
        raise _fail(str(error), error.exit_code) from None
    if everything and (files or prefixes or tags or host):
        raise _fail("--everything purges the whole zone: give it alone")
    batches = plan_purge(limits, files=files, prefixes=prefixes, tags=tags, hosts=host or [], everything=everything)
    if not batches:
        raise _fail("nothing to purge: give --video, --static, --prefix, --tag, --host or --everything")
    endpoint = f"POST /zones/{settings.zone_id}/purge_cache"
    if dry_run:
        for number, batch in enumerate(batches, 1):
            console.print(f"[{number}/{len(batches)}] {endpoint} {json.dumps(batch.body())}", highlight=False, soft_wrap=True)
        console.print(f"dry run: {len(batches)} request(s), nothing sent", highlight=False)
        return
    if everything and not yes and not typer.confirm(f"Purge EVERYTHING cached for zone {settings.zone_name or settings.zone_id}?"):
        raise _fail("not confirmed; nothing purged")

    def done(result: BatchResult) -> None:
        number = batches.index(result.batch) + 1
        retried = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        console.print(
            f"[{number}/{len(batches)}] purged {result.batch.describe()}{retried} (id {result.purge_id or '-'})",
            highlight=False,
        )

    purger = Purger(
        _client("Cache Purge"), settings.zone_id, limits, sleep=sleep, clock=clock,
        notify=lambda message: errors.print(f"[yellow]{escape(message)}[/]", highlight=False),
    )  # fmt: skip
    try:
        results = purger.run(batches, done)
    except CdnApiError as error:
        raise _fail(str(error), error.exit_code) from None
    items = sum(len(r.batch.items) for r in results)
    console.print(f"done: {len(results)} request(s), {items or 'all'} item(s) purged", highlight=False)


def _since(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([hd])", text)
    if not match or int(match.group(1)) == 0:
        raise _fail(f"--since {text!r}: write hours or days, e.g. 24h or 3d")
    amount = int(match.group(1))
    return timedelta(hours=amount) if match.group(2) == "h" else timedelta(days=amount)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def chart(report: AnalyticsReport, width: int = 30) -> list[str]:
    """One line per hour: a bar of requests, its cached share filled in."""
    peak = max((h.requests for h in report.hours), default=0)
    lines = []
    for hour in report.hours:
        total = round(width * hour.requests / peak) if peak else 0
        cached = round(width * hour.cached_requests / peak) if peak else 0
        ratio = f"{hour.cached_requests / hour.requests:4.0%}" if hour.requests else "   -"
        lines.append(f"{hour.start[5:16].replace('T', ' ')} {'█' * cached}{'░' * (total - cached)}"
                     f"{' ' * (width - total)} {hour.requests:>9,} req {ratio} hit")  # fmt: skip
    return lines


@cdn_app.command()
def analytics(
    stack: StackOption = "prod",
    since: Annotated[str, typer.Option(help="How far back: 24h, 3d...")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Requests, cached requests, bandwidth from cache, hit ratio, by cache status and by hour."""
    settings = _settings(stack)
    window = _since(since)
    until = now().replace(minute=0, second=0, microsecond=0)  # whole hours: the hourly dataset's unit
    try:
        report = fetch_analytics(_client("Analytics Read"), settings.zone_id, until - window, until)
    except CdnApiError as error:
        raise _fail(str(error), error.exit_code) from None
    if as_json:
        console.print_json(json.dumps(report.as_json()))
        return
    ratio = f"{report.hit_ratio:.1%}" if report.hit_ratio is not None else "-"
    console.print(f"{report.since} .. {report.until}", highlight=False)
    console.print(
        f"requests {report.requests:,}  cached {report.cached_requests:,}  hit ratio {ratio}  "
        f"bandwidth {_size(report.bytes)}, from cache {_size(report.cached_bytes)}",
        highlight=False,
    )
    table = Table(title="by cache status")
    table.add_column("cacheStatus")
    table.add_column("requests", justify="right")
    for status, count in report.statuses:
        table.add_row(status, f"{count:,}")
    console.print(table)
    for line in chart(report):
        console.print(line, highlight=False)


@cdn_app.command()
def explain(
    url: Annotated[str, typer.Argument(help="URL or path, e.g. https://learn.example.com/static/app.css")],
    cookie: Annotated[list[str] | None, typer.Option("--cookie", help="NAME=VALUE, repeatable.")] = None,
    device: Annotated[str, typer.Option(help="mobile, tablet or desktop.")] = "desktop",
    stack: StackOption = "prod",
) -> None:
    """Which cache rules match, in order, and the resulting TTLs and cache key (offline)."""
    if device not in ("mobile", "tablet", "desktop"):
        raise _fail(f"--device must be mobile, tablet or desktop, not {device!r}")
    for item in cookie or []:
        if "=" not in item:
            raise _fail(f"--cookie {item!r}: write NAME=VALUE")
    settings = _settings(stack)
    parts = urlsplit(url if "//" in url else f"//{settings.zone_name}{'' if url.startswith('/') else '/'}{url}")
    request = Request(parts.path or "/", host=parts.hostname or settings.zone_name, cookie="; ".join(cookie or []))
    rules = build_cache_rules(settings)
    decision = evaluate(rules, request)
    console.print(f"{request.host}{request.path}  (rules see {request.normalized_path})", highlight=False)
    table = Table(title="cache rules, in evaluation order (the last match wins each setting)")
    for column in ("#", "rule", "matches", "sets"):
        table.add_column(column)
    for number, rule in enumerate(rules, 1):
        hit = rule.ref in decision.matched
        won = sorted(k for k, ref in decision.decided_by.items() if ref == rule.ref)
        table.add_row(str(number), rule.ref, "[green]yes" if hit else "no", ", ".join(won) if hit else "")
    console.print(table)
    for line in describe_decision(decision.settings, request, parts.query, device):
        console.print(line, highlight=False)


def describe_decision(settings: Any, request: Request, query: str, device: str) -> list[str]:
    if not settings:
        return ["no rule matches: Cloudflare's default caching applies (by extension, respecting origin headers)"]
    if not settings.get("cache"):
        return ["cache: bypass (not stored at the edge); edge TTL: origin; browser TTL: origin headers"]
    edge, browser = settings.get("edge_ttl", {}), settings.get("browser_ttl", {})
    key = f"{request.host}{request.normalized_path}" + (f"?{query}" if query else "")
    if settings.get("cache_key", {}).get("cache_by_device_type"):
        key += f" + device type {device}"
    return [
        "cache: eligible",
        f"edge TTL: {edge.get('default', 'origin')} s" if edge.get("mode") == "override_origin" else "edge TTL: origin",
        {"override_origin": f"browser TTL: {browser.get('default')} s", "bypass": "browser TTL: not cached in browsers"}.get(
            browser.get("mode", ""), "browser TTL: origin headers"
        ),
        f"cache key: {key}",
    ]
