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

HOUR = 3600.0
#: sessions shorter than this are counted apart (seconds)
SHORT_SESSION = 600.0
IN_USE = "in_use"
#: reservation statuses that held their machine for the slot
BOOKED = frozenset({"approved", "checked_in", "completed", "no_show"})
#: reservation statuses with a known outcome (the no-show rate's denominator)
DECIDED = frozenset({"checked_in", "completed", "no_show"})


@dataclass(frozen=True, slots=True)
class Change:
    device_id: str
    at: float
    status: str


@dataclass(frozen=True, slots=True)
class Booking:
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


def _spread(
    a: float, b: float, start: float, end: float, into: dict[float, ZoneHour], attr: str
) -> None:
    """Add ``[a, b)`` clipped to the window to the hours it covers."""
    a, b = max(a, start), min(b, end)
    while a < b:
        hour = a - a % HOUR
        upto = min(b, hour + HOUR)
        row = into[hour]
        setattr(row, attr, getattr(row, attr) + (upto - a))
        a = upto


def compute(
    *,
    start: float,
    end: float,
    zones: Mapping[str, str],
    changes: Iterable[Change],
    bookings: Iterable[Booking],
    tz: tzinfo = UTC,
) -> Utilization:
    """The figures for ``[start, end)`` over the machines ``zones`` maps to their zone.
    ``changes`` come ordered by (device, at) and may start with each machine's last change
    before ``start``; changes of machines not in ``zones`` are ignored."""
    out = Utilization()
    if end <= start:
        return out
    hours = _hours(start, end)
    counts: dict[str, int] = defaultdict(int)
    for zone in zones.values():
        counts[zone] += 1
    table: dict[str, dict[float, ZoneHour]] = {
        zone: {h: ZoneHour(zone, h, n, min(end, h + HOUR) - max(start, h)) for h in hours}
        for zone, n in sorted(counts.items())
    }
    device: str | None = None
    status = ""
    since = 0.0

    def close(upto: float, ended: bool) -> None:
        if device is None or status != IN_USE:
            return
        _spread(since, upto, start, end, table[zones[device]], "in_use")
        if ended and start <= since and upto <= end:
            length = upto - since
            out.sessions += 1
            out.session_seconds += length
            out.short_sessions += length < SHORT_SESSION

    for change in changes:
        if change.device_id not in zones or change.at >= end:
            continue
        if change.device_id != device:
            close(end, ended=False)
            device = change.device_id
        elif change.status == status:
            continue  # the same status again (online flag changed): one run
        else:
            close(change.at, ended=True)
        status, since = change.status, change.at
    close(end, ended=False)

    for booking in bookings:
        zone = zones.get(booking.device_id)
        if zone is None:
            continue
        if booking.status in BOOKED:
            _spread(booking.starts_at, booking.ends_at, start, end, table[zone], "booked")
        if start <= booking.starts_at < end and booking.status in DECIDED:
            out.decided += 1
            out.no_shows += booking.status == "no_show"

    folded: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for rows in table.values():
        for row in rows.values():
            out.hours.append(row)
            local = datetime.fromtimestamp(row.start, tz)
            cell = folded[(local.weekday(), local.hour)]
            cell[0] += row.in_use
            cell[1] += row.machines * row.seconds
    out.heatmap = [
        Cell(weekday, hour, used / capacity if capacity else 0.0)
        for (weekday, hour), (used, capacity) in sorted(folded.items())
    ]
    return out
