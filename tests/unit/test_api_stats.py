"""The admin panel's p99 from the bridge's cumulative histogram (pure)."""

from __future__ import annotations

import pytest

from api.metrics import LatencyWindow, p99

pytestmark = pytest.mark.unit
INF = float("inf")


def test_p99_is_the_first_bucket_holding_99_percent() -> None:
    assert p99({0.001: 50, 0.005: 99, 0.01: 100, INF: 100}) == 0.005
    assert p99({0.001: 0, 0.005: 0, INF: 0}) is None
    assert p99({}) is None


def test_the_window_takes_the_difference_to_its_oldest_scrape() -> None:
    window = LatencyWindow()
    window.add(0.0, {0.001: 1000, 0.1: 1000, INF: 1000})  # a fast past
    found, span = window.add(10.0, {0.001: 1000, 0.1: 1100, INF: 1100})  # 100 slow since
    assert (found, span) == (0.1, 10.0)


def test_old_scrapes_leave_the_window_and_a_bridge_restart_starts_over() -> None:
    window = LatencyWindow()
    window.add(0.0, {0.001: 10, INF: 10})
    found, span = window.add(400.0, {0.001: 20, INF: 30})  # the first scrape is too old
    assert (found, span) == (INF, None)
    found, span = window.add(401.0, {0.001: 5, INF: 5})  # counters went down: a restart
    assert (found, span) == (0.001, None)
