"""The app user's policy table (acl_policy.py) is consistent; the real-server check is in
tests/integration/test_acl_policy.py."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from cachelayer.plan.acl_policy import (
    NEWER_COMMANDS,
    SCRIPTING_COMMANDS,
    app_policy,
    app_rules,
    markdown_table,
    verdicts,
)

# The denylist the app user had before the allowlist: every one must still be refused.
OLD_DENYLIST = (
    "flushall", "flushdb", "config", "debug", "shutdown", "keys", "monitor", "save", "bgsave", "bgrewriteaof",
    "replicaof", "slaveof", "cluster", "failover", "module", "acl", "script", "function",
)  # fmt: skip
# Found by the review: the old denylist let these through.
REVIEW_FINDINGS = (
    "sync", "psync", "replconf", "client|pause", "client|kill", "eval", "migrate", "slowlog|reset", "latency|reset",
)  # fmt: skip
# What a cache/session client (redis-py RedisCluster, Sentinel-managed Redis) sends.
CLIENT_NEEDS = (
    "get", "set", "del", "expire", "scan", "hset", "hgetall", "auth", "hello", "ping", "select", "command|docs",
    "command|info", "command|count", "command|list", "cluster|slots", "cluster|shards", "cluster|nodes",
    "readonly", "readwrite", "asking", "wait", "client|setname", "client|setinfo", "multi", "exec", "subscribe",
)  # fmt: skip
NAME = re.compile(r"^[a-z_-]+(\|[a-z_-]+)?$")


@pytest.mark.parametrize("scripting", [False, True])
def test_no_command_is_listed_twice(scripting: bool) -> None:
    counts = Counter(c for group in app_policy(scripting) for c in group.commands)
    assert [c for c, n in counts.items() if n > 1] == []


@pytest.mark.parametrize("scripting", [False, True])
def test_every_group_has_a_reason_and_well_formed_names(scripting: bool) -> None:
    for group in app_policy(scripting):
        assert group.reason.strip() and group.commands, group
        assert "\n" not in group.reason  # one line in docs/security.md
        bad = [c for c in group.commands if not NAME.match(c)]
        assert bad == [], group.reason


def test_explicit_rules_name_only_commands_redis_7_0_knows() -> None:
    # An ACL file naming a command the server lacks does not load at all.
    for scripting in (False, True):
        for group in app_policy(scripting):
            if group.explicit:
                assert not NEWER_COMMANDS & set(group.commands), group.reason


def _refused(name: str, table: dict[str, bool]) -> bool:
    """A plain name (CONFIG) stands for the command or all of its subcommands."""
    entries = [allowed for command, allowed in table.items() if command == name or command.startswith(name + "|")]
    assert entries, f"{name} is not in the table"
    return not any(entries)


def test_the_old_denylist_and_the_review_findings_stay_refused() -> None:
    table = verdicts()
    for name in (*OLD_DENYLIST, *REVIEW_FINDINGS):
        if name in ("cluster", "acl"):  # read-only discovery and WHOAMI are allowed on purpose
            continue
        assert _refused(name, table), name
    cluster_allowed = {c for c, allowed in table.items() if allowed and c.startswith("cluster|")}
    assert cluster_allowed == {"cluster|slots", "cluster|shards", "cluster|nodes", "cluster|info", "cluster|keyslot", "cluster|myid"}
    assert {c for c, allowed in table.items() if allowed and c.startswith("acl|")} == {"acl|whoami"}


def test_what_clients_need_is_allowed() -> None:
    table = verdicts()
    assert [c for c in CLIENT_NEEDS if not table.get(c)] == []


def test_scripting_flips_only_the_scripting_commands() -> None:
    off, on = verdicts(False), verdicts(True)
    assert off.keys() == on.keys()
    assert {c for c in off if off[c] != on[c]} == set(SCRIPTING_COMMANDS)
    assert all(on[c] and not off[c] for c in SCRIPTING_COMMANDS)
    for never in ("script|flush", "script|kill", "script|debug", "fcall", "function|load"):
        assert not on[never], never


def test_rules_start_from_nothing_and_end_with_the_operators_denials() -> None:
    rules = app_rules(False, ("KEYS", "Scan"))
    assert rules[0] == "-@all"
    assert rules[-2:] == ("-keys", "-scan")
    assert "+eval" not in rules
    assert "+eval" in app_rules(True)


def test_docs_security_shows_exactly_the_table(repo_root: Path) -> None:
    text = (repo_root / "docs" / "security.md").read_text()
    assert markdown_table() in text, "regenerate docs/security.md's table from acl_policy.markdown_table()"
    # and the rendered line it quotes is the one the code builds
    quoted = text.split("```\n", 2)[1].split("```")[0].split()
    assert quoted == list(app_rules())
