"""Who of the simulated players arrives, when, and how (plaza_sim/arrivals.py): the pure
decision from four draws, the mistyped code, and the caps on every option."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from plaza.settings import Settings
from plaza_sim.arrivals import (
    MAX_PLAYERS,
    Arrival,
    Arrivals,
    PlayerLink,
    PlayerPlan,
    plan_arrival,
    wrong_code,
)
from plaza_sim.desk import Desk
from venue.cli import build_parser, sim_players

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
    with pytest.raises(ValueError, match=re.escape(message)):
        PlayerPlan(**changes)  # type: ignore[arg-type]


def test_the_number_of_players_in_one_simulator_is_capped() -> None:
    too_many = {f"p{i}": "pw" for i in range(MAX_PLAYERS + 1)}
    with pytest.raises(ValueError, match=f"at most {MAX_PLAYERS} simulated players"):
        Arrivals(too_many, [], link=PlayerLink())
    assert len(Arrivals(dict(list(too_many.items())[:MAX_PLAYERS]), [], link=PlayerLink()).players)


def sim_args(tmp_path: Path, *extra: str) -> tuple[argparse.Namespace, Settings]:
    args = build_parser().parse_args(["sim", "--data-dir", str(tmp_path), *extra])
    return args, Settings(data_dir=tmp_path)


def test_plaza_sim_takes_the_first_players_of_the_file_and_their_options(tmp_path: Path) -> None:
    (tmp_path / "players.json").write_text(
        json.dumps({"sim-player-002": "b", "sim-player-001": "a", "sim-player-003": "c"})
    )
    args, settings = sim_args(
        tmp_path, "--players", "2", "--slot-minutes", "5-10", "--no-show", "0.5"
    )
    players, plan, desk = sim_players(args, settings)
    assert players == {"sim-player-001": "a", "sim-player-002": "b"}
    assert (plan.slot_minutes, plan.no_show, plan.late) == ((5.0, 10.0), 0.5, 0.2)
    assert desk is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--players", "201"], "--players must be within 0..200"),
        (["--players", "-1"], "--players must be within 0..200"),
        (["--players", "4"], "has 3 accounts"),
        (["--late", "1.1"], "late is a probability"),
        (["--player-pace", "0.1"], "pace must be within 1..3600"),
        (["--players", "1", "--desk", "http://127.0.0.1:1"], "credentials.json not found"),
    ],
)
def test_plaza_sim_refuses_options_past_their_caps(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    (tmp_path / "players.json").write_text(json.dumps({f"p{i}": "pw" for i in range(3)}))
    args, settings = sim_args(tmp_path, *extra)
    with pytest.raises(ValueError, match=re.escape(message)):
        sim_players(args, settings)


@pytest.mark.parametrize("every", [0.5, 3601.0])
def test_the_desk_looks_at_the_pending_list_at_most_once_a_second(every: float) -> None:
    with pytest.raises(ValueError, match=re.escape("desk-every must be within 1..3600")):
        Desk("http://127.0.0.1:1", "admin", "pw", frozenset(), every=every)
