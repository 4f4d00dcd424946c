"""The demo venue's floor (what ``plaza up`` seeds): a layout of zones with their outlines and
a place for every machine, and a week of history (status changes and reservations) for the
occupancy heatmap. Pure: the seed writes what these return.

Zones stand side by side, left to right, in the order machines first name them; each is a
rectangle holding its machines in rows of 2 m pitch (a zone is at most ``ROW`` machines wide,
wider for a large fleet so the floor stays square-ish). The history is drawn from a seeded
random generator: evenings are busier than mornings, weekends than weekdays, and about one
approved booking in eight is a no-show.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from plaza import floormap
from venue.accounts import DeviceSpec

PITCH = 2.0  # metres between machines
MARGIN = 1.0  # metres from a zone's edge to its first machine
GAP = 2.0  # metres between zones
ROW = 6


@dataclass(frozen=True, slots=True)
class Layout:
    zones: list[floormap.Zone]
    places: dict[str, floormap.Point]


def demo_layout(fleet: Sequence[DeviceSpec]) -> Layout:
    by_zone: dict[str, list[DeviceSpec]] = {}
    for spec in fleet:
        by_zone.setdefault(spec.zone, []).append(spec)
    zones: list[floormap.Zone] = []
    places: dict[str, floormap.Point] = {}
    left = GAP
    for zone_id, machines in by_zone.items():
        cols = max(min(ROW, len(machines)), math.ceil(math.sqrt(len(machines))))
        rows = math.ceil(len(machines) / cols)
        width = 2 * MARGIN + (cols - 1) * PITCH
        height = 2 * MARGIN + (rows - 1) * PITCH
        for i, spec in enumerate(machines):
            places[spec.id] = floormap.position(
                left + MARGIN + (i % cols) * PITCH, GAP + MARGIN + (i // cols) * PITCH
            )
        outline = (
            (left, GAP),
            (left + width, GAP),
            (left + width, GAP + height),
            (left, GAP + height),
        )
        name = zone_id.replace("-", " ").title()
        zones.append(
            floormap.Zone(zone_id, name, tuple(floormap.position(x, y) for x, y in outline))
        )
        left += width + GAP
    return Layout(zones, places)


@dataclass(frozen=True, slots=True)
class PastChange:
    device_id: str
    at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class PastBooking:
    device_id: str
    player: str
    starts_at: datetime
    ends_at: datetime
    status: str


def _busy(local: datetime) -> float:
    """How likely a machine is in use at this local hour (0..1)."""
    hour = local.hour
    base = 0.15 if hour < 10 else 0.35 if hour < 17 else 0.75 if hour < 24 else 0.2
    if local.weekday() >= 5:
        base = min(0.95, base + 0.15)
    if hour < 6:
        base = 0.05
    return base


def demo_history(
    fleet: Sequence[DeviceSpec], end: datetime, tz: tzinfo, *, days: int = 7, seed: int = 18
) -> tuple[list[PastChange], list[PastBooking]]:
    """``days`` of play before ``end`` (hourly chances, sessions of 20 min to 3 h, a few short
    ones); every machine's history ends ``offline`` before ``end`` (one without an agent,
    never offline, ``available``), so nothing seeded says a machine is in use now. One
    session in four came from a booking (completed); and some bookings were no-shows (the
    machine stayed free)."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    changes: list[PastChange] = []
    bookings: list[PastBooking] = []
    for spec in fleet:
        at = start
        changes.append(PastChange(spec.id, at, "available"))
        while True:
            at += timedelta(minutes=rng.randint(5, 50))
            if at >= end - timedelta(hours=4):
                break
            if rng.random() > _busy(at.astimezone(tz)):
                continue
            if rng.random() < 0.1:
                length = timedelta(minutes=rng.randint(2, 9))  # gave up at once
            else:
                length = timedelta(minutes=rng.randint(20, 180))
            guest = f"guest{rng.randint(1, 60):02d}"
            if rng.random() < 0.04:  # booked, never came: the machine stays free
                bookings.append(PastBooking(spec.id, guest, at, at + length, "no_show"))
                at += length
                continue
            changes.append(PastChange(spec.id, at, "in_use"))
            if rng.random() < 0.25:
                bookings.append(PastBooking(spec.id, guest, at, at + length, "completed"))
            at += length
            changes.append(PastChange(spec.id, at, "available"))
        if spec.agent:  # a machine without an agent is never offline: it ends available
            last = changes[-1].at + timedelta(minutes=1)
            changes.append(PastChange(spec.id, max(last, end - timedelta(hours=3)), "offline"))
    return changes, bookings
