"""plaza.utilization: occupancy per zone and hour, the heatmap, sessions and no-shows, fed a
few status changes and reservations whose figures are counted by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from plaza.utilization import Booking, Change, compute

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 10, 0, 0, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
H, M = 3600.0, 60.0
ZONES = {"pc-1": "a", "pc-2": "a", "vr-1": "b"}


def in_time(changes: list[Change]) -> list[Change]:
    """``compute`` takes the history in time order, as plaza.history reads it."""
    return sorted(changes, key=lambda c: c.at)


def hours(result: object, zone: str) -> list[tuple[float, float, float]]:
    return [
        (round(r.in_use / M, 3), round(r.booked / M, 3), round(r.occupancy, 4))
        for r in result.hours  # type: ignore[attr-defined]
        if r.zone == zone
    ]


@pytest.mark.parametrize(
    ("changes", "expected_a", "sessions", "short", "average"),
    [
        # nothing happened: every hour is empty, no session
        ([], [(0, 0, 0), (0, 0, 0)], 0, 0, None),
        # pc-1 in use 00:30-01:30: 30 min in each hour, one session of 60 min
        (
            [Change("pc-1", T0 + 30 * M, "in_use"), Change("pc-1", T0 + 90 * M, "available")],
            [(30, 0, 0.25), (30, 0, 0.25)],
            1,
            0,
            60 * M,
        ),
        # in use since before the window (its last change before it), ended at 00:15: the
        # 15 minutes count, the session does not (it began before the window)
        (
            [Change("pc-1", T0 - H, "in_use"), Change("pc-1", T0 + 15 * M, "available")],
            [(15, 0, 0.125), (0, 0, 0)],
            0,
            0,
            None,
        ),
        # still going at the end: counted in the hours, not a session; a 5 minute one is short
        (
            [
                Change("pc-1", T0 + 100 * M, "in_use"),
                Change("pc-2", T0 + 10 * M, "in_use"),
                Change("pc-2", T0 + 15 * M, "available"),
            ],
            [(5, 0, 5 / 120), (20, 0, 20 / 120)],
            1,
            1,
            5 * M,
        ),
        # the same status twice (an online flag changed) is one run; a change after the end
        # is ignored
        (
            [
                Change("pc-1", T0, "in_use"),
                Change("pc-1", T0 + 20 * M, "in_use"),
                Change("pc-1", T0 + 40 * M, "offline"),
                Change("pc-1", T0 + 3 * H, "in_use"),
            ],
            [(40, 0, 40 / 120), (0, 0, 0)],
            1,
            0,
            40 * M,
        ),
    ],
)
def test_occupancy_and_sessions_follow_the_status_history(
    changes: list[Change],
    expected_a: list[tuple[float, float, float]],
    sessions: int,
    short: int,
    average: float | None,
) -> None:
    result = compute(
        start=T0,
        end=T0 + 2 * H,
        zones=ZONES,
        changes=in_time(changes),
        bookings=[],
    )
    assert hours(result, "a") == [(float(a), float(b), round(c, 4)) for a, b, c in expected_a]
    assert hours(result, "b") == [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    assert (result.sessions, result.short_sessions, result.average_session) == (
        sessions,
        short,
        average,
    )


@pytest.mark.parametrize(
    ("bookings", "booked_a", "rate", "decided"),
    [
        ([], [0.0, 0.0], None, 0),
        # completed 00:00-01:00 and a no-show 00:30-01:30: 1 of 2 decided
        (
            [
                Booking("pc-1", T0, T0 + H, "completed"),
                Booking("pc-2", T0 + 30 * M, T0 + 90 * M, "no_show"),
            ],
            [90.0, 30.0],
            0.5,
            2,
        ),
        # cancelled and pending hold nothing and decide nothing; approved holds, undecided;
        # one that started before the window holds its minutes inside, its outcome is not
        # counted
        (
            [
                Booking("pc-1", T0, T0 + H, "cancelled"),
                Booking("pc-1", T0, T0 + H, "pending"),
                Booking("pc-2", T0 + H, T0 + 2 * H, "approved"),
                Booking("pc-1", T0 - H, T0 + 10 * M, "checked_in"),
            ],
            [10.0, 60.0],
            None,
            0,
        ),
        # a machine of another zone, or not on the list, is not zone a's
        (
            [Booking("vr-1", T0, T0 + H, "completed"), Booking("gone", T0, T0 + H, "no_show")],
            [0.0, 0.0],
            0.0,
            1,
        ),
    ],
)
def test_reservations_give_booked_time_and_the_no_show_rate(
    bookings: list[Booking], booked_a: list[float], rate: float | None, decided: int
) -> None:
    result = compute(start=T0, end=T0 + 2 * H, zones=ZONES, changes=[], bookings=bookings)
    assert [round(r.booked / M, 3) for r in result.hours if r.zone == "a"] == booked_a
    assert (result.no_show_rate, result.decided) == (rate, decided)


def test_a_partial_hour_counts_only_its_seconds_inside_the_window() -> None:
    changes = [Change("vr-1", T0, "in_use")]
    result = compute(
        start=T0 + 30 * M,
        end=T0 + 90 * M,
        zones=ZONES,
        changes=in_time(changes),
        bookings=[],
    )
    b = [(r.start, r.seconds, r.in_use, r.occupancy) for r in result.hours if r.zone == "b"]
    assert b == [(T0, 30 * M, 30 * M, 1.0), (T0 + H, 30 * M, 30 * M, 1.0)]


def test_the_heatmap_folds_hours_onto_local_weekday_and_hour() -> None:
    seoul = timezone(timedelta(hours=9))
    week = 7 * 24 * H
    # zone b's machine is in use 00:00-01:00 UTC (09:00 in Seoul) on both Mondays, half of
    # it on the second: (60 + 30) / 120
    changes = [
        Change("vr-1", T0, "in_use"),
        Change("vr-1", T0 + H, "available"),
        Change("vr-1", T0 + week, "in_use"),
        Change("vr-1", T0 + week + 30 * M, "available"),
    ]
    result = compute(
        start=T0,
        end=T0 + 2 * week,
        zones={"vr-1": "b"},
        changes=in_time(changes),
        bookings=[],
        tz=seoul,
    )
    cells = {(c.weekday, c.hour): c.occupancy for c in result.heatmap}
    assert len(cells) == 7 * 24
    assert cells[(0, 9)] == pytest.approx(0.75)
    assert sum(cells.values()) == pytest.approx(0.75)


def test_an_empty_window_gives_nothing() -> None:
    result = compute(start=T0, end=T0, zones=ZONES, changes=[], bookings=[])
    assert (result.hours, result.heatmap, result.sessions) == ([], [], 0)
