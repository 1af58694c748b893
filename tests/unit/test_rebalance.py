"""The rebalance/drain post-check waits for gossip to settle, and no longer (the moves
themselves run against real clusters in tests/integration/test_ops_rebalance.py)."""

from __future__ import annotations

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
