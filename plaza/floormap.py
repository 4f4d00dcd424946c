"""The floor map (pure): where machines stand, the zones' outlines, and seats next to each other.

Positions are metres from the floor's top left corner (``x`` right, ``y`` down, as in SVG),
rounded to :data:`GRID` (10 cm) and kept inside ``[0, FLOOR_SIZE]``. A zone's outline is a
polygon of :data:`MIN_OUTLINE_POINTS` to :data:`MAX_OUTLINE_POINTS` points inside the same
bounds; a floor holds at most :data:`MAX_ZONES` zones. Every check raises :class:`FloorError`
with a stable code (``out_of_bounds``, ``too_many_zones``, ``bad_outline``,
``duplicate_zone``), which the api turns into a 422 problem.

:func:`closest_group` picks the ``n`` machines of a set that stand closest together: the
party booking's "seats next to each other" (plaza.rules.pick_seats uses it when the free
machines have positions).

    FloorError(code, message)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

#: the floor is at most this many metres wide and deep
FLOOR_SIZE = 200.0
#: positions are kept to this step (metres)
GRID = 0.1
MAX_ZONES = 32
MIN_OUTLINE_POINTS = 3
MAX_OUTLINE_POINTS = 32

Point = tuple[float, float]


class FloorError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str
    outline: tuple[Point, ...]


def snap(value: float) -> float:
    """``value`` rounded to the grid."""
    return round(round(value / GRID) * GRID, 1)


def position(x: float, y: float) -> Point:
    """A checked, snapped position."""
    for name, value in (("x", x), ("y", y)):
        if not math.isfinite(value) or not 0 <= value <= FLOOR_SIZE:
            raise FloorError("out_of_bounds", f"{name} must be between 0 and {FLOOR_SIZE:g} m")
    return snap(x), snap(y)


def zones(given: Iterable[tuple[str, str, Sequence[Sequence[float]]]]) -> list[Zone]:
    """Checked zones from ``(id, name, outline)``: at most :data:`MAX_ZONES`, ids once each,
    each outline :data:`MIN_OUTLINE_POINTS`..:data:`MAX_OUTLINE_POINTS` points in bounds."""
    out: list[Zone] = []
    seen: set[str] = set()
    for zone_id, name, outline in given:
        if len(out) == MAX_ZONES:
            raise FloorError("too_many_zones", f"a floor has at most {MAX_ZONES} zones")
        if zone_id in seen:
            raise FloorError("duplicate_zone", f"zone {zone_id!r} is given twice")
        seen.add(zone_id)
        if not MIN_OUTLINE_POINTS <= len(outline) <= MAX_OUTLINE_POINTS:
            raise FloorError(
                "bad_outline",
                f"zone {zone_id!r}: an outline has {MIN_OUTLINE_POINTS} to "
                f"{MAX_OUTLINE_POINTS} points",
            )
        points = []
        for point in outline:
            if len(point) != 2:
                raise FloorError("bad_outline", f"zone {zone_id!r}: a point is [x, y]")
            points.append(position(float(point[0]), float(point[1])))
        if _area(points) < GRID * GRID:
            raise FloorError("bad_outline", f"zone {zone_id!r}: the outline encloses no area")
        out.append(Zone(zone_id, name, tuple(points)))
    return out


def _area(points: Sequence[Point]) -> float:
    """The polygon's area (shoelace)."""
    twice = sum(
        x1 * y2 - x2 * y1
        for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]], strict=True)
    )
    return abs(twice) / 2


def spread(points: Iterable[Point]) -> float:
    """How far apart a group stands: the sum of its pairwise distances."""
    return sum(math.dist(a, b) for a, b in combinations(points, 2))


def closest_group(places: Mapping[str, Point], n: int) -> list[str] | None:
    """The ``n`` ids of ``places`` that stand closest together (least :func:`spread`), in id
    order; None when fewer than ``n`` are given. Each machine in turn is the seed of a group
    of itself and its ``n - 1`` nearest (ties by id); the tightest group wins, the first by
    its sorted ids on a tie. Exact for ``n <= 2``, a close heuristic beyond (a party has at
    most 8 seats, a venue a few hundred machines: ``len(places)**2`` distances, about 20 ms
    for 300 free machines and 8 seats on a loaded 2-core machine)."""
    if n < 1 or len(places) < n:
        return None
    ids = sorted(places)
    best: tuple[float, list[str]] | None = None
    for seed in ids:
        here = places[seed]
        near = heapq.nsmallest(n, ids, key=lambda other: (math.dist(here, places[other]), other))
        group = sorted(near)
        score = round(spread(places[i] for i in group), 6)
        if best is None or (score, group) < best:
            best = (score, group)
    assert best is not None
    return best[1]
