"""The bridge's own degradation alerts (pure: readings in, alerts out)."""

from __future__ import annotations

import pytest

from bridge.selfwatch import Readings, SelfWatch

pytestmark = pytest.mark.unit


class Gauges:
    def __init__(self) -> None:
        self.now = Readings(db_errors=0, backlog=0)

    def read(self) -> Readings:
        return self.now


async def _ignore(_: object) -> None:
    return None


def watch(gauges: Gauges) -> SelfWatch:
    return SelfWatch(gauges.read, _ignore, backlog_limit=100, cooldown=300)


def test_new_database_errors_raise_one_alert_per_cooldown() -> None:
    gauges = Gauges()
    w = watch(gauges)
    assert w.look(0) == []
    gauges.now = Readings(db_errors=3, backlog=0)
    first = w.look(5)
    assert [(a.type, a.severity) for a in first] == [("bridge_db_errors", "high")]
    assert "3 database errors" in (first[0].message_en or "")
    assert "데이터베이스 오류 3건" in first[0].message
    gauges.now = Readings(db_errors=5, backlog=0)
    assert w.look(10) == [], "still within the cooldown"
    gauges.now = Readings(db_errors=9, backlog=0)
    assert [a.type for a in w.look(400)] == ["bridge_db_errors"]


def test_errors_that_stopped_raise_nothing() -> None:
    gauges = Gauges()
    gauges.now = Readings(db_errors=7, backlog=0)
    w = watch(gauges)
    assert [a.type for a in w.look(0)] == ["bridge_db_errors"]
    assert w.look(500) == [], "no new errors since the last look"


def test_a_backlog_over_the_limit_raises_an_alert() -> None:
    gauges = Gauges()
    w = watch(gauges)
    gauges.now = Readings(db_errors=0, backlog=101)
    alerts = w.look(0)
    assert [a.type for a in alerts] == ["bridge_backlog"]
    assert "101 commands waiting" in (alerts[0].message_en or "")
    gauges.now = Readings(db_errors=0, backlog=100)
    assert w.look(1000) == []
