"""The rebalance/drain post-check waits for gossip to settle, and no longer (the moves
themselves run against real clusters in tests/integration/test_ops_rebalance.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachelayer.ops import rebalance
from cachelayer.ops.rebalance import RebalanceError, postcheck
from cachelayer.ops.target import Endpoint, Target

TARGET = Target("test", "test", "cluster", (Endpoint("redis-7000", "127.0.0.1", 7000),))


def test_a_view_that_catches_up_by_gossip_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    views = [["redis-7001 sees 3 of 16384 slots unassigned"], ["redis-7001 sees 1 of 16384 slots unassigned"], []]
    monkeypatch.setattr(rebalance, "slot_problems", lambda target: views.pop(0))
    postcheck(TARGET, settle=5)
    assert views == []


def test_a_problem_that_stays_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Target] = []

    def stuck(target: Target) -> list[str]:
        calls.append(target)
        return ["slot 42 is open (migrating)"]

    monkeypatch.setattr(rebalance, "slot_problems", stuck)
    with pytest.raises(RebalanceError, match=r"after the move: slot 42 is open"):
        postcheck(TARGET, settle=0.5)
    assert len(calls) >= 2  # it looked again before giving up


def test_a_move_stopped_midway_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-cli killed by the bound (or Ctrl-C) leaves a slot open: the error says how to close it."""
    fake = tmp_path / "redis-cli"
    fake.write_text("#!/bin/sh\nsleep 5\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RebalanceError) as stopped:
        rebalance.redis_cli_cluster(TARGET, "rebalance", "127.0.0.1:7000", timeout=0.2)
    message = str(stopped.value)
    assert "did not finish within 0 s and was stopped" in message
    assert "--cluster fix 127.0.0.1:7000` finishes the move" in message and "--user admin" in message


def test_the_receiving_masters_must_have_room_for_the_moved_data(monkeypatch: pytest.MonkeyPatch) -> None:
    leaving, small, roomy = (Endpoint(f"redis-700{i}", "127.0.0.1", 7000 + i) for i in range(3))
    memory = {  # used_memory, used_memory_dataset, maxmemory, slots
        leaving: (9_000_000, 8_000_000, 100_000_000, 5461),
        small: (6_000_000, 5_000_000, 9_000_000, 5461),  # 6 MB + 4 MB > 9 MB
        roomy: (6_000_000, 5_000_000, 100_000_000, 5462),
    }
    monkeypatch.setattr(rebalance, "master_memory", lambda target: memory)
    problems = rebalance.headroom_problems(TARGET, leaving=leaving)
    assert problems == [
        "redis-7001 would hold 10,000,000 bytes after the move, above its maxmemory 9,000,000 (it would evict "
        "keys): raise redis.maxmemory or add shards first"]
    memory[small] = (6_000_000, 5_000_000, 0, 5461)  # no maxmemory: nothing to pass
    assert rebalance.headroom_problems(TARGET, leaving=leaving) == []
    # A rebalance evens the datasets out (6 MB each): the emptiest master takes the most.
    memory[small] = (1_000_000, 0, 4_000_000, 0)
    assert [p.split(" would")[0] for p in rebalance.headroom_problems(TARGET)] == ["redis-7001"]
