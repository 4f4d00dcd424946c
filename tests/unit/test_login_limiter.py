"""The login budget: per name and address, and per address across names (pure)."""

from __future__ import annotations

import pytest

from api.security import LoginLimiter

pytestmark = pytest.mark.unit


def test_a_name_gets_its_burst_then_waits_for_the_refill() -> None:
    limiter = LoginLimiter(per_minute=6, burst=3)
    assert [limiter.take("alice", "10.0.0.1", now=0) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("alice", "10.0.0.1", now=0) == pytest.approx(10.0)
    assert limiter.take("alice", "10.0.0.1", now=10) == 0
    assert limiter.take("Alice", "10.0.0.2", now=0) == 0, "another address has its own budget"


def test_rotating_names_from_one_address_runs_into_the_address_budget() -> None:
    limiter = LoginLimiter(per_minute=6, burst=3)
    allowed = [limiter.take(f"user{i}", "10.0.0.9", now=0) == 0 for i in range(40)]
    assert allowed.count(True) == 30  # ten times one name's burst
    assert limiter.take("fresh", "10.0.0.10", now=0) == 0
