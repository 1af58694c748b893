"""`cdn` commands with the real `cloudflare` SDK and its HTTP layer mocked: no network, no real time.

The fakes are passed in, as a caller of `main` would: a Runtime (an API client on a mock
transport, a fake clock) and a project directory of stack files (CACHELAYER_PROJECT)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest
import yaml

from cachelayer.cdn.api import PURGE_LIMITS, plan_purge
from cachelayer.cli.app import main
from cachelayer.cli.common import Runtime
from support.repo import REPO_ROOT

TOKEN = "cf-token-never-printed-0123456789"
ZONE = "0123456789abcdef0123456789abcdef"
PURGE_URL = f"https://api.cloudflare.com/client/v4/zones/{ZONE}/purge_cache"
Handler = Callable[[httpx.Request], httpx.Response]


def ok(purge_id: str = "p1") -> httpx.Response:
    return httpx.Response(200, json={"success": True, "errors": [], "messages": [], "result": {"id": purge_id}})


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"success": False, "errors": [{"code": 10000, "message": message}], "messages": [], "result": None}
    return httpx.Response(status, json=body, headers=headers)


class Api:
    """Answers from a script of responses; records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response | Exception] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if self.responses else ok()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds

    def clock(self) -> float:
        return self.now


CDN: dict[str, Any] = {
    "zone_id": ZONE,
    "zone_name": "learn.example.com",
    "plan": "business",
    "static_host": "static.learn.example.com",
    "video_cache_tag": "video-{id}",
}


def write_project(root: Path, cdn: dict[str, Any]) -> Path:
    """A project whose stack `test` has these CDN settings (and the repository's dev and prod)."""
    root.mkdir(exist_ok=True)
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        (root / name).write_text((REPO_ROOT / name).read_text())
    (root / "Pulumi.test.yaml").write_text(yaml.safe_dump({"config": {"cachelayer:cdn": cdn}}))
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CACHELAYER_PROJECT", str(write_project(tmp_path / "project", dict(CDN))))
    return tmp_path / "project"


@pytest.fixture
def api(project: Path) -> Api:
    return Api()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def runtime(api: Api, fake_time: FakeTime) -> Runtime:
    return Runtime(
        cloudflare_client=lambda token: cloudflare.Cloudflare(
            api_token=token, max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(api.handler))
        ),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        now=lambda: datetime(2026, 3, 2, 10, 41, 5, tzinfo=UTC),
        env={"CLOUDFLARE_API_TOKEN": TOKEN},
        interactive=lambda: True,
        ask=lambda question: "test",  # the operator types the stack name
    )


def run(capsys: pytest.CaptureFixture[str], runtime: Runtime, *argv: str, stack: str = "test") -> tuple[int, str]:
    code = main(["cdn", *argv, "--stack", stack], runtime)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert TOKEN not in output
    return code, " ".join(output.split())  # rich wraps long lines


def test_static_purge_is_batched_to_the_plan_limit_and_paced(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    paths = [f"/css/{i}.css" for i in range(250)]
    code, out = run(capsys, runtime, "purge", *[arg for p in paths for arg in ("--static", p)])
    assert code == 0
    assert [str(r.url) for r in api.requests] == [PURGE_URL] * 3
    assert all(r.method == "POST" for r in api.requests)
    assert api.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    bodies = api.bodies()
    assert [len(b["files"]) for b in bodies] == [100, 100, 50]
    assert bodies[0]["files"][0] == "https://static.learn.example.com/css/0.css"
    assert bodies[2]["files"][-1] == "https://static.learn.example.com/css/249.css"
    assert fake_time.sleeps == [0.1, 0.1]  # Business: 10 purge requests per second
    assert "[1/3] purged 100 files" in out and "[3/3] purged 50 files" in out
    assert "done: 3 request(s), 250 item(s) purged" in out


def test_free_plan_paces_to_five_requests_a_minute(
    api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any, project: Path
) -> None:
    free = {**CDN, "plan": "free", "polish": "off", "webp": False, "ttls": {"content_api_edge": 7200}}
    write_project(project, free)
    code, _ = run(capsys, runtime, "purge", "--tag", "a", "--host", "learn.example.com", "--prefix", "learn.example.com/x/")
    assert code == 0
    assert fake_time.sleeps == [12.0, 12.0]
    assert api.bodies() == [{"prefixes": ["learn.example.com/x/"]}, {"tags": ["a"]}, {"hosts": ["learn.example.com"]}]


def test_video_purge_sends_its_prefixes_on_every_host_and_its_tag(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    code, _ = run(capsys, runtime, "purge", "--video", "lesson-42")
    assert code == 0
    assert api.bodies() == [
        {"prefixes": ["learn.example.com/video/lesson-42/", "static.learn.example.com/video/lesson-42/"]},
        {"tags": ["video-lesson-42"]},
    ]


def test_enterprise_sends_up_to_500_urls_and_100_tags_per_request() -> None:
    limits = PURGE_LIMITS["enterprise"]
    batches = plan_purge(limits, files=[f"https://a/{i}" for i in range(501)], tags=[str(i) for i in range(101)])
    assert [(b.kind, len(b.items)) for b in batches] == [("files", 500), ("files", 1), ("tags", 100), ("tags", 1)]


def test_dry_run_shows_the_requests_and_sends_nothing(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    code, out = run(capsys, runtime, "purge", "--tag", "t1", "--tag", "t2", "--dry-run")
    assert code == 0
    assert api.requests == []
    assert f'POST /zones/{ZONE}/purge_cache {{"tags": ["t1", "t2"]}}' in out
    assert "nothing sent" in out


def test_429_waits_as_retry_after_says_then_succeeds(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    api.responses = [error(429, "Rate limited", {"retry-after": "7"}), ok()]
    code, out = run(capsys, runtime, "purge", "--tag", "t")
    assert code == 0
    assert fake_time.sleeps == [7.0]
    assert len(api.requests) == 2
    assert "HTTP 429 (Rate limited); retrying in 7 s" in out
    assert "purged 1 tags after 2 attempts" in out


def test_5xx_backs_off_exponentially(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    api.responses = [error(500, "Internal"), error(502, "Bad gateway"), ok()]
    code, _ = run(capsys, runtime, "purge", "--tag", "t")
    assert code == 0
    assert fake_time.sleeps == [1.0, 2.0]


def test_5xx_that_persists_is_could_not_check(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    api.responses = [error(503, "Unavailable")] * 5
    code, out = run(capsys, runtime, "purge", "--tag", "t")
    assert code == 2
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert "1 tags: HTTP 503 (Unavailable) after 5 attempts" in out


def test_unreachable_api_is_exit_2(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    api.responses = [httpx.ConnectError("no route")] * 5
    code, out = run(capsys, runtime, "purge", "--tag", "t")
    assert code == 2
    assert "Cloudflare API unreachable after 5 attempts" in out


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_names_the_cache_purge_permission(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any, status: int) -> None:
    api.responses = [error(status, "Authentication error")]
    code, out = run(capsys, runtime, "purge", "--tag", "t")
    assert code == 1
    assert len(api.requests) == 1  # never retried
    assert f'HTTP {status} (Authentication error)): it needs the zone permission "Cache Purge"' in out


def test_missing_token_names_the_permission(api: Api, runtime: Runtime, capsys: Any) -> None:
    code, out = run(capsys, replace(runtime, env={}), "purge", "--tag", "t")
    assert code == 1
    assert 'CLOUDFLARE_API_TOKEN is not set: create an API token with the zone permission "Cache Purge"' in out
    assert api.requests == []


def test_everything_asks_first(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    code, out = run(capsys, replace(runtime, ask=lambda question: "prod"), "purge", "--everything")
    assert code == 1
    assert api.requests == []
    assert "about to purge EVERYTHING cached for the zone" in out and "from Pulumi.test.yaml" in out
    assert "not confirmed ('prod' is not 'test'): nothing changed" in out


def test_a_purge_without_a_terminal_needs_yes(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    code, out = run(capsys, replace(runtime, interactive=lambda: False), "purge", "--tag", "t")
    assert code == 64 and api.requests == []
    assert "refusing to purge 1 purge request(s)" in out and "without --yes: stdin is not a terminal" in out
    code, _ = run(capsys, replace(runtime, interactive=lambda: False), "purge", "--tag", "t", "--yes")
    assert code == 0 and len(api.requests) == 1


def test_everything_with_yes_purges_the_zone(api: Api, fake_time: FakeTime, runtime: Runtime, capsys: Any) -> None:
    code, _ = run(capsys, runtime, "purge", "--everything", "--yes")
    assert code == 0
    assert api.bodies() == [{"purge_everything": True}]


def test_everything_with_other_targets_is_refused(api: Api, runtime: Runtime, capsys: Any) -> None:
    code, out = run(capsys, runtime, "purge", "--everything", "--yes", "--tag", "t")
    assert code == 64  # ExitCode.USAGE: the command line is wrong
    assert "give it alone" in out
    assert api.requests == []


# -- analytics ------------------------------------------------------------------------------------


def graphql(hours: list[tuple[str, int, int, int, int]], statuses: list[tuple[str, int]]) -> httpx.Response:
    zone = {
        "hours": [
            {
                "dimensions": {"datetime": t},
                "sum": {"requests": r, "cachedRequests": c, "bytes": b, "cachedBytes": cb},
            }
            for t, r, c, b, cb in hours
        ],
        "statuses": [{"count": n, "dimensions": {"cacheStatus": s}} for s, n in statuses],
    }
    return httpx.Response(200, json={"data": {"viewer": {"zones": [zone]}}, "errors": None})


def limits(hourly: int = 3 * 86_400, adaptive: int = 86_400, back: int = 30 * 86_400) -> httpx.Response:
    """The zone's GraphQL settings node: maxDuration and notOlderThan per dataset, in seconds."""
    settings = {
        "httpRequests1hGroups": {"maxDuration": hourly, "notOlderThan": back},
        "httpRequestsAdaptiveGroups": {"maxDuration": adaptive, "notOlderThan": back},
    }
    return httpx.Response(200, json={"data": {"viewer": {"zones": [{"settings": settings}]}}, "errors": None})


def test_analytics_json_sums_hours_and_breaks_down_by_cache_status(api: Api, runtime: Runtime, capsys: Any) -> None:
    api.responses = [
        limits(),
        graphql(
            [("2026-03-02T08:00:00Z", 1000, 900, 5_000_000, 4_000_000), ("2026-03-02T09:00:00Z", 3000, 2100, 9_000_000, 6_000_000)],
            [("hit", 2800), ("miss", 900), ("dynamic", 300)],
        )
    ]
    code = main(["cdn", "analytics", "--since", "2h", "--json", "--stack", "test"], runtime)
    out = capsys.readouterr().out
    assert code == 0
    assert TOKEN not in out
    report = json.loads(out)
    assert (report["requests"], report["cached_requests"], report["bytes"], report["cached_bytes"]) == (
        4000, 3000, 14_000_000, 10_000_000,
    )  # fmt: skip
    assert report["hit_ratio"] == 0.75
    assert report["by_cache_status"] == {"hit": 2800, "miss": 900, "dynamic": 300}
    assert [h["requests"] for h in report["hourly"]] == [1000, 3000]
    first, request = api.requests
    assert "settings" in json.loads(first.content)["query"]  # the plan's limits are read first
    assert str(request.url) == "https://api.cloudflare.com/client/v4/graphql"
    body = json.loads(request.content)
    assert body["variables"] == {"zoneTag": ZONE, "since": "2026-03-02T08:00:00Z", "until": "2026-03-02T10:00:00Z"}
    assert "httpRequests1hGroups" in body["query"] and "httpRequestsAdaptiveGroups" in body["query"]
    assert "cacheStatus" in body["query"]


def test_analytics_text_has_totals_and_an_hourly_chart(api: Api, runtime: Runtime, capsys: Any) -> None:
    api.responses = [limits(), graphql([("2026-03-02T08:00:00Z", 1000, 500, 2000, 1000), ("2026-03-02T09:00:00Z", 2000, 2000, 10, 10)], [])]
    code, out = run(capsys, runtime, "analytics", "--since", "2h")
    assert code == 0
    assert "requests 3,000 cached 2,500 hit ratio 83.3%" in out
    assert "03-02 08:00 " + "█" * 8 + "░" * 7 in out  # half of half the peak cached
    assert "03-02 09:00 " + "█" * 30 in out


def test_analytics_window_wider_than_the_adaptive_datasets_range_is_split(api: Api, runtime: Runtime, capsys: Any) -> None:
    # --since 3d on a plan whose httpRequestsAdaptiveGroups answers at most 1 day per query.
    api.responses = [
        limits(hourly=3 * 86_400, adaptive=86_400),
        graphql([("2026-02-27T10:00:00Z", 10, 5, 100, 50)], []),
        graphql([], [("hit", 5), ("miss", 1)]),
        graphql([], [("hit", 7)]),
        graphql([], [("miss", 2), ("dynamic", 1)]),
    ]
    code = main(["cdn", "analytics", "--since", "3d", "--json", "--stack", "test"], runtime)
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["by_cache_status"] == {"hit": 12, "miss": 3, "dynamic": 1}
    queries = [json.loads(r.content) for r in api.requests[1:]]
    hourly = [q["variables"] for q in queries if "httpRequests1hGroups" in q["query"]]
    adaptive = [q["variables"] for q in queries if "httpRequestsAdaptiveGroups" in q["query"]]
    assert hourly == [{"zoneTag": ZONE, "since": "2026-02-27T10:00:00Z", "until": "2026-03-02T10:00:00Z"}]
    assert [(v["since"], v["until"]) for v in adaptive] == [
        ("2026-02-27T10:00:00Z", "2026-02-28T10:00:00Z"),
        ("2026-02-28T10:00:00Z", "2026-03-01T10:00:00Z"),
        ("2026-03-01T10:00:00Z", "2026-03-02T10:00:00Z"),
    ]


def test_analytics_further_back_than_the_plan_keeps_is_refused(api: Api, runtime: Runtime, capsys: Any) -> None:
    api.responses = [limits(back=86_400)]
    code, out = run(capsys, runtime, "analytics", "--since", "3d")
    assert code == 1
    assert "--since 3d reaches further back than this plan keeps" in out and "(1d)" in out
    assert len(api.requests) == 1  # nothing queried that the plan would refuse


@pytest.mark.parametrize("status", [401, 403])
def test_analytics_refusal_names_analytics_read(api: Api, runtime: Runtime, capsys: Any, status: int) -> None:
    api.responses = [error(status, "Unauthorized")]
    code, out = run(capsys, runtime, "analytics")
    assert code == 1
    assert 'needs the zone permission "Analytics Read"' in out


def test_analytics_graphql_authorization_error_names_analytics_read(api: Api, runtime: Runtime, capsys: Any) -> None:
    api.responses = [httpx.Response(200, json={"data": None, "errors": [{"message": "not authorized for that zone"}]})]
    code, out = run(capsys, runtime, "analytics")
    assert code == 1
    assert '"Analytics Read"' in out


def test_analytics_unreachable_is_exit_2(api: Api, runtime: Runtime, capsys: Any) -> None:
    api.responses = [httpx.ConnectError("down")]
    code, out = run(capsys, runtime, "analytics")
    assert code == 2
    assert "could not read analytics: Cloudflare API unreachable" in out


def test_bad_since_is_refused(api: Api, runtime: Runtime, capsys: Any) -> None:
    code, out = run(capsys, runtime, "analytics", "--since", "yesterday")
    assert code == 64  # ExitCode.USAGE
    assert "24h or 3d" in out


# -- explain --------------------------------------------------------------------------------------


def test_explain_a_deception_attempt_shows_the_bypass(capsys: Any, runtime: Runtime) -> None:
    code, out = run(capsys, runtime, "explain", "https://learn.example.com/API/v1/me/x.CSS", "--cookie", "lp_session=1")
    assert code == 0
    assert "│ 1 │ static_assets │ no" in out
    assert "│ 4 │ private_bypass │ yes" in out
    assert "cache: bypass" in out


def test_explain_video_shows_ttls_and_the_device_in_the_key(capsys: Any, runtime: Runtime) -> None:
    code, out = run(capsys, runtime, "explain", "/video/a/seg1.ts?x=1", "--device", "mobile")
    assert code == 0
    assert "edge TTL: 604800 s" in out and "browser TTL: 86400 s" in out
    assert "cache key: learn.example.com/video/a/seg1.ts?x=1 + device type mobile" in out


def test_explain_reads_the_real_prod_stack_file(capsys: Any, runtime: Runtime) -> None:
    code, out = run(capsys, runtime, "explain", "/api/v1/courses/42", stack="prod")
    assert code == 0
    assert "edge TTL: 300 s" in out and "browser TTL: not cached in browsers" in out


def test_a_stack_without_a_cdn_names_the_stacks_that_have_one(capsys: Any, runtime: Runtime) -> None:
    """Every command defaults to dev; dev has no CDN, and the error says where the CDN is."""
    for argv in (["explain", "/x"], ["purge", "--tag", "t"], ["analytics"]):
        code = main(["cdn", *argv], runtime)
        out = " ".join(capsys.readouterr().err.split())
        assert code == 3, (argv, out)  # ExitCode.SETTINGS, as any stack setting that is wrong
        assert "stack dev has no CDN settings" in out and "pass --stack prod" in out, out


def test_explain_json_names_every_rule_and_the_decision(capsys: Any, runtime: Runtime) -> None:
    code = main(["cdn", "explain", "/video/a/seg1.ts", "--json", "--stack", "prod"], runtime)
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["ok"] is True
    matched = [rule["rule"] for rule in document["rules"] if rule["matches"]]
    assert "video" in " ".join(matched), document["rules"]
    assert "edge TTL: 604800 s" in document["decision"]


def test_analytics_errors_under_json_are_json(api: Api, runtime: Runtime, capsys: Any) -> None:
    api.responses = [httpx.Response(401, json={"success": False, "errors": [{"code": 10000, "message": "no"}],
                                               "messages": [], "result": None})]
    code = main(["cdn", "analytics", "--json", "--stack", "test"], runtime)
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 1 and document["ok"] is False and document["exit_code"] == 1
    assert "Analytics Read" in document["error"]
    assert captured.err == ""
