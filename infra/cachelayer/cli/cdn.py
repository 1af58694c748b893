"""`cachelayer cdn purge | analytics | explain` (docs/cdn.md).

The zone comes from the stack file (cdn.zone_id; the default stack is dev, as for every command,
and a stack without CDN settings is named with the stacks that have them); the token comes from
CLOUDFLARE_API_TOKEN and is never printed. Exit codes: common.ExitCode.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.table import Table

from cachelayer.cli.common import (
    DEFAULT_STACK,
    JsonOption,
    Runtime,
    StackOption,
    YesOption,
    confirm_change,
    console,
    emit_json,
    errors,
    reported,
    runtime_of,
    usage_error,
    whole_column,
)
from cachelayer.errors import CachelayerError, SettingsError

if TYPE_CHECKING:
    from cachelayer.cdn.api import AnalyticsReport, BatchResult
    from cachelayer.cdn.rules import Request
    from cachelayer.cdn.settings import CdnSettings

cdn_app = typer.Typer(help="The Cloudflare CDN: purge, analytics, explain.\n\n"
                      "Purge cached content, read the zone's analytics, and see which cache rules a URL meets.",
                      no_args_is_help=True, rich_markup_mode=None)

TOKEN_ENV = "CLOUDFLARE_API_TOKEN"


def register(app: typer.Typer) -> None:
    app.add_typer(cdn_app, name="cdn")


def stacks_with_cdn() -> list[str]:
    """The project's stacks whose file sets cdn.zone_id."""
    from cachelayer.config.stack_file import read_stack_config
    from cachelayer.paths import project_root

    found = []
    for path in sorted(project_root().glob("Pulumi.*.yaml")):
        name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        cdn = read_stack_config(name).get("cdn")
        if isinstance(cdn, dict) and cdn.get("zone_id"):
            found.append(name)
    return found


def cdn_settings(stack: str) -> CdnSettings:
    """The stack's CDN settings; a stack without them is a settings error that names the stacks
    that have them."""
    from cachelayer.cdn.settings import load_cdn_settings
    from cachelayer.config.stack_file import read_stack_config

    raw = read_stack_config(stack).get("cdn")
    if not (isinstance(raw, dict) and raw.get("zone_id")):
        others = [name for name in stacks_with_cdn() if name != stack]
        raise SettingsError(
            "cdn.zone_id",
            f"stack {stack} has no CDN settings (no cachelayer:cdn.zone_id in Pulumi.{stack}.yaml)",
            f"pass --stack {' or --stack '.join(others)}, which has them" if others
            else f"set cachelayer:cdn: {{zone_id: <32-hex zone id>}} in Pulumi.{stack}.yaml",
        )
    settings = load_cdn_settings(raw, required=True)
    assert settings is not None  # required=True
    return settings


def _client(runtime: Runtime, permission: str) -> Any:
    token = runtime.env.get(TOKEN_ENV, "")
    if not token:
        raise CachelayerError(f"{TOKEN_ENV} is not set: create an API token with the zone permission \"{permission}\"")
    return runtime.cloudflare_client(token)


@cdn_app.command()
def purge(
    context: typer.Context,
    stack: StackOption = DEFAULT_STACK,
    video: Annotated[list[str] | None, typer.Option(
        "--video", metavar="ID", show_default=False, help="Video id: its prefixes (and tag).")] = None,
    static: Annotated[list[str] | None, typer.Option(
        "--static", metavar="PATH", show_default=False, help="Static file path or URL.")] = None,
    prefix: Annotated[list[str] | None, typer.Option(
        "--prefix", metavar="PREFIX", show_default=False, help="host/path prefix.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", metavar="TAG", show_default=False, help="Cache-Tag.")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", metavar="HOST", show_default=False, help="Hostname.")] = None,
    everything: Annotated[bool, typer.Option("--everything", help="Purge the whole zone.")] = False,
    yes: YesOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the requests, send nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Purge cached content.

    Batched to the plan's per-request limit and paced to its rate limit.
    """
    from cachelayer.cdn.api import PURGE_LIMITS, Purger, plan_purge, static_urls, video_targets

    runtime = runtime_of(context)
    with reported(as_json):
        settings = cdn_settings(stack)
        limits = PURGE_LIMITS[settings.plan]
        prefixes, tags = list(prefix or []), list(tag or [])
        for video_id in video or []:
            video_prefixes, video_tags = video_targets(settings, video_id)
            prefixes += video_prefixes
            tags += video_tags
        files = static_urls(settings, static or [])
    if everything and (files or prefixes or tags or host):
        raise usage_error("--everything purges the whole zone: give it alone", as_json)
    batches = plan_purge(limits, files=files, prefixes=prefixes, tags=tags, hosts=host or [], everything=everything)
    if not batches:
        raise usage_error("nothing to purge: give --video, --static, --prefix, --tag, --host or --everything", as_json)
    endpoint = f"POST /zones/{settings.zone_id}/purge_cache"
    if dry_run:
        if as_json:
            emit_json({"command": "cdn purge", "ok": True, "dry_run": True,
                       "requests": [{"request": endpoint, "body": batch.body()} for batch in batches]})
            return
        for number, batch in enumerate(batches, 1):
            console.print(f"[{number}/{len(batches)}] {endpoint} {json.dumps(batch.body())}", highlight=False, soft_wrap=True)
        console.print(f"dry run: {len(batches)} request(s), nothing sent", highlight=False)
        return
    zone = settings.zone_name or settings.zone_id
    what = "EVERYTHING cached for the zone" if everything else f"{len(batches)} purge request(s)"
    confirm_change(context, f"purge {what}: the origin serves every purged URL again", stack=stack,
                   where=f"Cloudflare zone {zone}, from Pulumi.{stack}.yaml", yes=yes, as_json=as_json)

    def done(result: BatchResult) -> None:
        if as_json:
            return
        number = batches.index(result.batch) + 1
        retried = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        console.print(
            f"[{number}/{len(batches)}] purged {result.batch.describe()}{retried} (id {result.purge_id or '-'})",
            highlight=False,
        )

    with reported(as_json):
        purger = Purger(
            _client(runtime, "Cache Purge"), settings.zone_id, limits, sleep=runtime.sleep, clock=runtime.clock,
            notify=lambda message: errors.print(f"[yellow]{escape(message)}[/]", highlight=False),
        )  # fmt: skip
        results = purger.run(batches, done)
    items = sum(len(r.batch.items) for r in results)
    if as_json:
        emit_json({"command": "cdn purge", "ok": True, "dry_run": False, "items": items,
                   "requests": [{"body": r.batch.body(), "attempts": r.attempts, "purge_id": r.purge_id} for r in results]})
        return
    console.print(f"done: {len(results)} request(s), {items or 'all'} item(s) purged", highlight=False)


def _since(text: str, as_json: bool) -> timedelta:
    match = re.fullmatch(r"(\d+)([hd])", text)
    if not match or int(match.group(1)) == 0:
        raise usage_error(f"--since {text!r}: write hours or days, e.g. 24h or 3d", as_json)
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
    context: typer.Context,
    stack: StackOption = DEFAULT_STACK,
    since: Annotated[str, typer.Option(metavar="AGE", help="How far back: 24h, 3d...")] = "24h",
    as_json: JsonOption = False,
) -> None:
    """The zone's requests and hit ratio.

    Requests, cached requests, bandwidth from cache, hit ratio, by cache status and by hour.
    """
    from cachelayer.cdn.api import fetch_analytics

    runtime = runtime_of(context)
    window = _since(since, as_json)
    with reported(as_json):
        settings = cdn_settings(stack)
        until = runtime.now().replace(minute=0, second=0, microsecond=0)  # whole hours: the hourly dataset's unit
        report = fetch_analytics(_client(runtime, "Analytics Read"), settings.zone_id, until - window, until)
    if as_json:
        emit_json(report.as_json())
        return
    ratio = f"{report.hit_ratio:.1%}" if report.hit_ratio is not None else "-"
    console.print(f"{report.since} .. {report.until}", highlight=False)
    console.print(
        f"requests {report.requests:,}  cached {report.cached_requests:,}  hit ratio {ratio}  "
        f"bandwidth {_size(report.bytes)}, from cache {_size(report.cached_bytes)}",
        highlight=False,
    )
    table = Table(title="by cache status")
    whole_column(table, "cacheStatus", [status for status, _ in report.statuses])
    table.add_column("requests", justify="right")
    for status, count in report.statuses:
        table.add_row(status, f"{count:,}")
    console.print(table)
    for line in chart(report):
        console.print(line, highlight=False)


@cdn_app.command()
def explain(
    url: Annotated[str, typer.Argument(help="URL or path, e.g. https://learn.example.com/static/app.css")],
    cookie: Annotated[list[str] | None, typer.Option(
        "--cookie", metavar="NAME=VALUE", show_default=False, help="A request cookie; repeatable.")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="mobile, tablet or desktop.")] = "desktop",
    stack: StackOption = DEFAULT_STACK,
    as_json: JsonOption = False,
) -> None:
    """Which cache rules a URL meets (offline).

    The rules that match, in order, and the resulting TTLs and cache key.
    """
    from cachelayer.cdn.rules import Request, build_cache_rules, evaluate

    if device not in ("mobile", "tablet", "desktop"):
        raise usage_error(f"--device must be mobile, tablet or desktop, not {device!r}", as_json)
    for item in cookie or []:
        if "=" not in item:
            raise usage_error(f"--cookie {item!r}: write NAME=VALUE", as_json)
    with reported(as_json):
        settings = cdn_settings(stack)
    parts = urlsplit(url if "//" in url else f"//{settings.zone_name}{'' if url.startswith('/') else '/'}{url}")
    request = Request(parts.path or "/", host=parts.hostname or settings.zone_name, cookie="; ".join(cookie or []))
    rules = build_cache_rules(settings)
    decision = evaluate(rules, request)
    rows = []
    for number, rule in enumerate(rules, 1):
        hit = rule.ref in decision.matched
        won = sorted(k for k, ref in decision.decided_by.items() if ref == rule.ref)
        rows.append((number, rule.ref, hit, won if hit else []))
    lines = describe_decision(decision.settings, request, parts.query, device)
    if as_json:
        emit_json({"command": "cdn explain", "ok": True, "stack": stack, "host": request.host, "path": request.path,
                   "normalized_path": request.normalized_path,
                   "rules": [{"order": n, "rule": ref, "matches": hit, "sets": won} for n, ref, hit, won in rows],
                   "settings": decision.settings or {}, "decision": lines})
        return
    console.print(f"{request.host}{request.path}  (rules see {request.normalized_path})", highlight=False, soft_wrap=True)
    table = Table(title="cache rules, in evaluation order (the last match wins each setting)")
    whole_column(table, "#", [str(len(rows))])
    whole_column(table, "rule", [ref for _, ref, _, _ in rows])
    whole_column(table, "matches", ["yes"])
    table.add_column("sets", overflow="fold")
    for number, ref, hit, won in rows:
        table.add_row(str(number), ref, "[green]yes" if hit else "no", ", ".join(won))
    console.print(table)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


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
