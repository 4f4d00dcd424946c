"""The per-key token bucket of the api's budgets (pure)."""

from __future__ import annotations

import pytest

from api.security import RateLimiter

pytestmark = pytest.mark.unit


def test_a_key_gets_its_burst_then_waits_for_the_refill_and_others_are_untouched() -> None:
    budget = RateLimiter(per_minute=6, burst=2)
    assert [budget.take("alice", now=0) for _ in range(2)] == [0, 0]
    assert budget.take("alice", now=0) == pytest.approx(10.0)
    assert budget.take("alice", now=5) == pytest.approx(5.0), "a refused try costs nothing"
    assert budget.take("alice", now=10) == 0
    assert budget.take("bob", now=0) == 0


def test_the_buckets_kept_are_bounded_and_full_ones_are_forgotten_first() -> None:
    budget = RateLimiter(per_minute=6, burst=2, max_keys=10)
    budget.take("drained", now=100)
    budget.take("drained", now=100)
    for i in range(100):
        budget.take(f"k{i}", now=100)
        assert len(budget._buckets) <= 10
    assert budget.take("drained", now=100) > 0, "a drained bucket is kept over full ones"
