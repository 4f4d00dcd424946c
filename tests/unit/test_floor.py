"""plaza.floormap: positions and zone outlines checked, and the seats that stand closest together
(the party booking's "next to each other", through plaza.rules.pick_seats)."""

from __future__ import annotations

import pytest

from plaza import floormap
from plaza.messages import FloorEvent, FloorLimits, FloorSnapshot, ZoneOutline
from plaza.rules import Machine, pick_seats
from plaza.settings import Settings

pytestmark = pytest.mark.unit

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (0, 0, (0.0, 0.0)),
        (200, 200, (200.0, 200.0)),
        (3.14159, 2.06, (3.1, 2.1)),
    ],
)
def test_a_position_inside_the_floor_is_snapped_to_the_grid(
    x: float, y: float, expected: tuple[float, float]
) -> None:
    assert floormap.position(x, y) == expected


@pytest.mark.parametrize(("x", "y"), [(-0.1, 0), (0, 200.1), (float("nan"), 1), (1, float("inf"))])
def test_a_position_off_the_floor_is_refused(x: float, y: float) -> None:
    with pytest.raises(floormap.FloorError) as caught:
        floormap.position(x, y)
    assert caught.value.code == "out_of_bounds"


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ([("a", "A", SQUARE[:2])], "bad_outline"),
        ([("a", "A", [[0, 0]] * (floormap.MAX_OUTLINE_POINTS + 1))], "bad_outline"),
        ([("a", "A", [[0, 0], [5, 5], [10, 10]])], "bad_outline"),  # a line: no area
        ([("a", "A", [[0, 0], [5], [10, 10]])], "bad_outline"),
        ([("a", "A", [[0, 0], [500, 0], [0, 5]])], "out_of_bounds"),
        ([("a", "A", SQUARE), ("a", "B", SQUARE)], "duplicate_zone"),
        ([(f"z{i}", "Z", SQUARE) for i in range(floormap.MAX_ZONES + 1)], "too_many_zones"),
    ],
)
def test_bad_zones_are_refused_with_their_code(
    given: list[tuple[str, str, list[list[float]]]], code: str
) -> None:
    with pytest.raises(floormap.FloorError) as caught:
        floormap.zones(given)
    assert caught.value.code == code


def test_the_most_zones_with_the_most_points_are_taken() -> None:
    ring = [[float(i), float(i * i % 7)] for i in range(floormap.MAX_OUTLINE_POINTS - 1)]
    ring.append([0.0, 50.0])
    taken = floormap.zones([(f"z{i}", "Z", ring) for i in range(floormap.MAX_ZONES)])
    assert len(taken) == floormap.MAX_ZONES
    assert len(taken[0].outline) == floormap.MAX_OUTLINE_POINTS


ROW = {"a": (0.0, 0.0), "b": (1.0, 0.0), "c": (2.0, 0.0), "d": (10.0, 0.0), "e": (11.0, 0.0)}


@pytest.mark.parametrize(
    ("places", "n", "expected"),
    [
        (ROW, 1, ["a"]),
        (ROW, 2, ["a", "b"]),  # a-b, b-c and d-e tie at 1 m: the first by id
        (ROW, 3, ["a", "b", "c"]),
        ({**ROW, "c": (5.0, 0.0)}, 2, ["a", "b"]),
        ({"a": (0.0, 0.0), "d": (10.0, 0.0), "e": (11.0, 0.0)}, 2, ["d", "e"]),
        # a 2x2 block beats a straight row of four
        (
            {
                "r1": (0.0, 10.0),
                "r2": (1.0, 10.0),
                "r3": (2.0, 10.0),
                "r4": (3.0, 10.0),
                "q1": (20.0, 0.0),
                "q2": (21.0, 0.0),
                "q3": (20.0, 1.0),
                "q4": (21.0, 1.0),
            },
            4,
            ["q1", "q2", "q3", "q4"],
        ),
        (ROW, 6, None),
        ({}, 1, None),
    ],
)
def test_the_closest_group_is_the_tightest_one(
    places: dict[str, tuple[float, float]], n: int, expected: list[str] | None
) -> None:
    assert floormap.closest_group(places, n) == expected


def _m(i: str, zone: str, pos: tuple[float, float] | None) -> Machine:
    return Machine(i, "pc", zone, pos=pos)


@pytest.mark.parametrize(
    ("free", "wanted", "expected"),
    [
        # ids say pc-01/pc-02 are neighbours, the map says pc-01 and pc-09 are
        (
            [_m("pc-01", "a", (0, 0)), _m("pc-02", "a", (30, 0)), _m("pc-09", "a", (1, 0))],
            2,
            ["pc-01", "pc-09"],
        ),
        # the tightest zone wins
        (
            [
                _m("a1", "a", (0, 0)),
                _m("a2", "a", (5, 0)),
                _m("b1", "b", (50, 50)),
                _m("b2", "b", (51, 50)),
            ],
            2,
            ["b1", "b2"],
        ),
        # no zone has enough: the closest over every zone
        (
            [_m("a1", "a", (0, 0)), _m("b1", "b", (1, 0)), _m("c1", "c", (40, 0))],
            2,
            ["a1", "b1"],
        ),
        # too few placed: the id order rule (a run of neighbours in one zone)
        (
            [_m("pc-01", "a", None), _m("pc-02", "a", None), _m("pc-03", "a", (0, 0))],
            2,
            ["pc-01", "pc-02"],
        ),
    ],
)
def test_a_party_gets_the_seats_that_stand_together_on_the_map(
    free: list[Machine], wanted: int, expected: list[str]
) -> None:
    assert [m.id for m in pick_seats(free, free, wanted)] == expected


def test_the_largest_floor_announced_fits_in_one_mqtt_packet() -> None:
    # PUT /floor publishes the whole floor on events/floor: at the caps (32 zones of 32
    # points, ids of 40 and names of 80 four-byte characters) it stays under the broker's
    # max_packet_size, which would disconnect the api for a larger one
    corners = [(199.9 - i * 0.1, 199.9 - i * 0.1) for i in range(floormap.MAX_OUTLINE_POINTS)]
    zones = [
        ZoneOutline(id=f"{i:02d}".ljust(40, "z"), name="\U0001f3ae" * 80, outline=corners)
        for i in range(floormap.MAX_ZONES)
    ]
    limits = FloorLimits(
        zones=floormap.MAX_ZONES,
        min_points=floormap.MIN_OUTLINE_POINTS,
        max_points=floormap.MAX_OUTLINE_POINTS,
    )
    event = FloorEvent(
        floor=FloorSnapshot(size=floormap.FLOOR_SIZE, zones=zones, limits=limits),
        timestamp=1.8e9,
    )
    size = len(event.encode())
    assert 25_000 < size < Settings().mqtt_max_packet_size - 1024, size
