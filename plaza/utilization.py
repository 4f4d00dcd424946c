"""Occupancy and no-shows at a glance (pure): what ``GET /admin/utilization`` reports.

Theory of operation. The window ``[start, end)`` is cut into clock hours (UTC hours, which are
the venue's local hours in whole-hour time zones). A machine's history is its status changes
(``device_status_change``): each holds from its ``at`` to the machine's next change. The
change in force at ``start`` (the last one before it) opens the window. For every zone and
hour:

- ``machines``: the zone's machines (today's; one without history counts, never in use);
- ``in_use``: machine-seconds in status ``in_use``; ``occupancy`` = in_use / (machines x the
  hour's seconds inside the window);
- ``booked``: machine-seconds under a reservation that held its machine (approved, checked
  in, completed, no-show), whatever the machine did.

The heatmap folds the hours onto (local weekday, local hour): occupancy there is the sum of
``in_use`` over the sum of capacity. A *session* is a run of ``in_use`` that starts inside the
window and has ended by ``end`` (one still going is not counted); sessions under
:data:`SHORT_SESSION` are counted apart (a fault signal: a player who gave up at once). The
no-show rate is over the reservations whose slot started inside the window and whose outcome
is known: no-show / (no-show + checked in + completed).

Times are seconds since the epoch (floats), so the caller converts once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple

HOUR = 3600.0
#: a report covers at most this many days (GET /admin/utilization)
MAX_DAYS = 93
#: sessions shorter than this are counted apart (seconds)
SHORT_SESSION = 600.0
IN_USE = "in_use"
#: reservation statuses that held their machine for the slot
BOOKED = frozenset({"approved", "checked_in", "completed", "no_show"})
#: reservation statuses with a known outcome (the no-show rate's denominator)
DECIDED = frozenset({"checked_in", "completed", "no_show"})


class Change(NamedTuple):
    device_id: str
    at: float
    status: str


class Booking(NamedTuple):
    device_id: str
    starts_at: float
    ends_at: float
    status: str


@dataclass(slots=True)
class ZoneHour:
    zone: str
    start: float
    machines: int
    #: the hour's seconds inside the window
    seconds: float
    in_use: float = 0.0
    booked: float = 0.0

    @property
    def occupancy(self) -> float:
        capacity = self.machines * self.seconds
        return self.in_use / capacity if capacity else 0.0


@dataclass(frozen=True, slots=True)
class Cell:
    weekday: int  # 0 Monday .. 6 Sunday, local
    hour: int  # 0..23, local
    occupancy: float


@dataclass(slots=True)
class Utilization:
    hours: list[ZoneHour] = field(default_factory=list)
    heatmap: list[Cell] = field(default_factory=list)
    sessions: int = 0
    session_seconds: float = 0.0
    short_sessions: int = 0
    decided: int = 0
    no_shows: int = 0

    @property
    def average_session(self) -> float | None:
        """Seconds, or None without sessions."""
        return self.session_seconds / self.sessions if self.sessions else None

    @property
    def no_show_rate(self) -> float | None:
        return self.no_shows / self.decided if self.decided else None


def _hours(start: float, end: float) -> list[float]:
    first = start - start % HOUR
    return [first + i * HOUR for i in range(int((end - first) // HOUR) + (end % HOUR > 0))]


def _spread(acc: list[float], a: float, b: float, first: float) -> None:
    """Add ``[a, b)`` (already clipped to the window) to the hours of ``acc`` it covers."""
    i = int((a - first) // HOUR)
    upto = first + (i + 1) * HOUR
    while b > upto:
        acc[i] += upto - a
        a, i, upto = upto, i + 1, upto + HOUR
    acc[i] += b - a


def compute(
    *,
    start: float,
    end: float,
    zones: Mapping[str, str],
    changes: Iterable[tuple[str, float, str]],
    bookings: Iterable[tuple[str, float, float, str]],
    tz: tzinfo = UTC,
) -> Utilization:
    """The figures for ``[start, end)`` over the machines ``zones`` maps to their zone.
    ``changes`` (device, at, status) come in time order and may start with each machine's
    last change before ``start``; changes of machines not in ``zones`` are ignored. One pass
    over each, a machine's run kept in a dict (a month of 300 machines is some 150,000
    changes)."""
    out = Utilization()
    if end <= start:
        return out
    hours = _hours(start, end)
    first = hours[0]
    counts: dict[str, int] = defaultdict(int)
    for zone in zones.values():
        counts[zone] += 1
    names = sorted(counts)
    in_use = {z: [0.0] * len(hours) for z in names}
    booked = {z: [0.0] * len(hours) for z in names}
    acc_of = {d: in_use[z] for d, z in zones.items()}

    runs: dict[str, list[Any]] = {}  # device -> [status, since]
    sessions = short = 0
    session_seconds = 0.0
    # the hot loop (one turn per change): the run's hours and its session, inline
    for device, at, now in changes:
        run = runs.get(device)
        if run is None:
            if device in acc_of and at < end:
                runs[device] = [now, at]
            continue
        if now == run[0] or at >= end:
            continue  # the same status again (an online flag changed): one run
        if run[0] == IN_USE:
            since = run[1]
            if since >= start:
                length = at - since
                sessions += 1
                session_seconds += length
                short += length < SHORT_SESSION
            else:
                since = start
            if since < at:
                acc = acc_of[device]
                i = int((since - first) // HOUR)
                if at <= first + (i + 1) * HOUR:
                    acc[i] += at - since  # most runs end in the hour they began
                else:
                    _spread(acc, since, at, first)
        run[0], run[1] = now, at
    for device, (status, since) in runs.items():
        if status == IN_USE and max(since, start) < end:
            _spread(acc_of[device], max(since, start), end, first)  # still going: no session
    out.sessions, out.short_sessions, out.session_seconds = sessions, short, session_seconds

    for held, starts_at, ends_at, outcome in bookings:
        where = zones.get(held)
        if where is None:
            continue
        if outcome in BOOKED:
            a, b = max(starts_at, start), min(ends_at, end)
            if a < b:
                _spread(booked[where], a, b, first)
        if start <= starts_at < end and outcome in DECIDED:
            out.decided += 1
            out.no_shows += outcome == "no_show"

    folded: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i, hour in enumerate(hours):
        seconds = min(end, hour + HOUR) - max(start, hour)
        local = datetime.fromtimestamp(hour, tz)
        cell = folded[(local.weekday(), local.hour)]
        for zone in names:
            row = ZoneHour(zone, hour, counts[zone], seconds, in_use[zone][i], booked[zone][i])
            out.hours.append(row)
            cell[0] += row.in_use
            cell[1] += row.machines * seconds
    out.hours.sort(key=lambda r: (r.zone, r.start))
    out.heatmap = [
        Cell(weekday, hour, used / capacity if capacity else 0.0)
        for (weekday, hour), (used, capacity) in sorted(folded.items())
    ]
    return out
