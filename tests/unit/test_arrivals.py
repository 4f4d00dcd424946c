"""Who of the simulated players arrives, when, and how (plaza_sim/arrivals.py): the pure
decision from four draws, the mistyped code, and the caps on every option."""

from __future__ import annotations

import pytest

from plaza_sim.arrivals import (
    MAX_PLAYERS,
    Arrival,
    Arrivals,
    PlayerLink,
    PlayerPlan,
    plan_arrival,
    wrong_code,
)

pytestmark = pytest.mark.unit

PLAN = PlayerPlan(no_show=0.1, late=0.2, wrong_code=0.3, early_by=60, late_by=240)


@pytest.mark.parametrize(
    ("draws", "expected"),
    [
        # (comes, late, mistype, when)
        ((0.05, 0.9, 0.9, 0.5), Arrival(comes=False)),  # a no-show: nothing else drawn matters
        ((0.0999, 0.0, 0.0, 0.0), Arrival(comes=False)),
        ((0.1, 0.9, 0.9, 0.5), Arrival(True, -30.0)),  # on time: 30 s before the start
        ((0.5, 0.9, 0.9, 0.0), Arrival(True, 0.0)),  # exactly at the start
        ((0.5, 0.9, 0.9, 0.75), Arrival(True, -45.0)),  # inside early_by
        ((0.5, 0.1, 0.9, 0.5), Arrival(True, 120.0, late=True)),  # late: 2 minutes after
        ((0.5, 0.1999, 0.9, 1.0), Arrival(True, 240.0, late=True)),  # at most late_by
        ((0.5, 0.2, 0.9, 0.5), Arrival(True, -30.0)),  # 0.2 is not below 0.2: on time
        ((0.5, 0.9, 0.2, 0.5), Arrival(True, -30.0, wrong_code_first=True)),
        ((0.5, 0.1, 0.0, 0.25), Arrival(True, 60.0, late=True, wrong_code_first=True)),
    ],
)
def test_a_player_arrives_as_the_draws_decide(
    draws: tuple[float, float, float, float], expected: Arrival
) -> None:
    assert plan_arrival(PLAN, draws) == expected


@pytest.mark.parametrize(
    ("plan", "comes", "late", "mistypes"),
    [
        (PlayerPlan(no_show=0, late=0, wrong_code=0), True, False, False),
        (PlayerPlan(no_show=1, late=1, wrong_code=1), False, False, False),
        (PlayerPlan(no_show=0, late=1, wrong_code=1), True, True, True),
    ],
)
def test_probabilities_of_zero_and_one_always_and_never_happen(
    plan: PlayerPlan, comes: bool, late: bool, mistypes: bool
) -> None:
    for draws in [(0.0, 0.0, 0.0, 0.0), (0.5, 0.5, 0.5, 0.5), (0.999, 0.999, 0.999, 0.999)]:
        arrival = plan_arrival(plan, draws)
        assert (arrival.comes, arrival.late, arrival.wrong_code_first) == (comes, late, mistypes)


@pytest.mark.parametrize(
    ("code", "draw"),
    [("424242", 0.0), ("424242", 0.5), ("999999", 0.999999), ("000000", 0.3), ("", 0.1)],
)
def test_a_mistyped_code_is_six_digits_and_never_the_right_one(code: str, draw: float) -> None:
    typed = wrong_code(code, draw)
    assert len(typed) == 6
    assert typed.isdigit()
    assert typed != code


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"no_show": 1.5}, "no-show is a probability"),
        ({"late": -0.1}, "late is a probability"),
        ({"wrong_code": 2}, "wrong-code is a probability"),
        ({"book_ahead": 3601}, "book-ahead must be within 0..3600"),
        ({"book_ahead": -1}, "book-ahead must be within"),
        ({"pace": 0.5}, "pace must be within 1..3600"),
        ({"early_by": 4000}, "early-by must be within"),
        ({"late_by": 3601}, "late-by must be within"),
        ({"slot_minutes": (30, 20)}, "slot minutes"),
        ({"slot_minutes": (10, 241)}, "slot minutes"),
        ({"slot_minutes": (0.01, 10)}, "slot minutes"),
    ],
)
def test_every_option_of_the_players_is_capped(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlayerPlan(**changes)  # type: ignore[arg-type]


def test_the_number_of_players_in_one_simulator_is_capped() -> None:
    too_many = {f"p{i}": "pw" for i in range(MAX_PLAYERS + 1)}
    with pytest.raises(ValueError, match=f"at most {MAX_PLAYERS} simulated players"):
        Arrivals(too_many, [], link=PlayerLink())
    assert len(Arrivals(dict(list(too_many.items())[:MAX_PLAYERS]), [], link=PlayerLink()).players)
