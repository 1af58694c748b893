"""`cachelayer report`'s ACL LOG rows (ops.report.acl_log_entries) from entries shaped as redis-py
parses them; the real server's entries are read in tests/integration/test_ops_failover_report.py."""

from __future__ import annotations

from typing import Any

from cachelayer.ops.report import UNKNOWN_USER, acl_log_entries
from platform_cache.keys import Keys


class LoggedClient:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.asked: list[int] = []

    def acl_log(self, count: int) -> list[dict[str, Any]]:
        self.asked.append(count)
        return self.rows[:count]


def row(reason: str, username: str, refused: str, count: int = 1) -> dict[str, Any]:
    return {"count": count, "reason": reason, "context": "toplevel", "object": refused, "username": username,
            "age-seconds": 1.5, "client-info": {"addr": "10.0.0.7:51234", "name": "worker-3", "user": username}}  # fmt: skip


def entries(rows: list[dict[str, Any]], count: int = 10) -> list[dict[str, Any]]:
    client: Any = LoggedClient(rows)
    return acl_log_entries(client, count)


def test_a_user_name_that_is_not_the_platforms_is_never_shown() -> None:
    # `AUTH <password> <user>` swapped: Redis logs the password as the user name.
    shown = entries([row("auth", "Sw4pped-Pa55word", "AUTH"), row("auth", "app", "AUTH", count=40)])
    assert [e["user"] for e in shown] == [UNKNOWN_USER, "app"]
    assert "Sw4pped-Pa55word" not in str(shown)
    assert shown[1] | {"age_seconds": 0} == {"count": 40, "reason": "auth", "context": "toplevel", "user": "app",
                                             "object": "AUTH", "client": "10.0.0.7:51234", "client_name": "worker-3",
                                             "age_seconds": 0, "expected": False}  # fmt: skip


def test_a_refused_session_key_or_channel_is_redacted() -> None:
    key = Keys("lms").session("b3arer-t0ken")
    shown = entries([row("key", "app", key), row("channel", "app", key), row("command", "app", "flushall")])
    assert [e["object"] for e in shown] == ["~session:lms:<redacted>", "~session:lms:<redacted>", "flushall"]
    assert "b3arer-t0ken" not in str(shown)


def test_only_the_exporters_own_refusals_are_marked_expected() -> None:
    shown = entries([row("command", "monitor", "config|get"), row("command", "monitor", "slowlog|get"),
                     row("command", "monitor", "keys"), row("command", "app", "config|get")])  # fmt: skip
    assert [e["expected"] for e in shown] == [True, True, False, False]


def test_zero_entries_asks_nothing() -> None:
    logged = LoggedClient([row("auth", "app", "AUTH")])
    client: Any = logged
    assert acl_log_entries(client, 0) == [] and logged.asked == []
