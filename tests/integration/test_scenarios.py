"""`plaza scenario NAME` at a small size: each fault under load ends with every command
answered, every notification delivered and `plaza check`'s invariants holding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from venue.scenario import Outcome, ScenarioOptions, run_scenario

pytestmark = pytest.mark.integration

SMALL = {"machines": 6, "players": 4, "seconds": 8.0}


def scenario(tmp_path: Path, name: str, **kw: object) -> Outcome:
    outcome = asyncio.run(run_scenario(ScenarioOptions(name, **(SMALL | kw)), tmp_path))  # type: ignore[arg-type]
    print(outcome.summary())
    assert outcome.report is not None
    assert outcome.problems == [], outcome.summary()
    assert outcome.figures["commands answered"] > 50
    assert outcome.figures["refused"] == 0
    sql, received = outcome.figures["notifications in SQL / received"].split(" / ")
    assert int(sql) > 0
    assert sql == received
    assert outcome.figures["board entries online at the end"] == "6 / 6"
    return outcome


def test_a_broker_restart_mid_load_loses_no_command_reply_or_notification(
    tmp_path: Path,
) -> None:
    outcome = scenario(tmp_path, "broker-restart")
    assert outcome.figures["player reconnects"] >= SMALL["players"]


def test_a_bridge_killed_with_sigkill_mid_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    outcome = scenario(tmp_path, "bridge-kill")
    assert outcome.figures["bridge down until connected again (s)"] > 0


def test_sqlite_locked_by_another_process_delays_commands_and_answers_none_wrongly(
    tmp_path: Path,
) -> None:
    outcome = scenario(tmp_path, "db-outage", outage=4.0, seconds=10.0)
    assert outcome.figures["database unavailable (s)"] >= 4.0
    assert float(outcome.figures["round trip p50 / p99 / max (ms)"].split(" / ")[2]) > 3000


def test_postgresql_refusing_and_terminating_connections_is_survived(tmp_path: Path) -> None:
    outcome = scenario(tmp_path, "db-outage", database="postgresql", outage=4.0, seconds=10.0)
    assert outcome.figures["PostgreSQL backends terminated"] >= 1


def test_a_flapping_machine_alerts_once_per_window_and_ends_online(tmp_path: Path) -> None:
    outcome = scenario(tmp_path, "flap")
    assert outcome.figures["device_flapping alerts (flapped machine / others)"] == "1 / 0"


def test_a_slow_subscriber_delays_nobody_and_loses_only_past_its_queue_bound(
    tmp_path: Path,
) -> None:
    outcome = scenario(tmp_path, "slow-subscriber", queue_limit=50)
    published = outcome.figures["events published (seen by a fast subscriber)"]
    lost = outcome.figures["slow subscriber lost (past max_queued_messages 50)"]
    assert published > 100
    # one message in flight (receive maximum 1) plus the 50 queued reach it, the rest are dropped
    assert lost == published - 51
    p99 = float(outcome.figures["round trip p50 / p99 / max (ms)"].split(" / ")[1])
    assert p99 < 1000, "the others' commands were not held up by the slow one"


def test_a_60_s_soak_with_faults_throughout_keeps_every_kpi(tmp_path: Path) -> None:
    # the venue-sized soak's parts, small: 20 of the 30 machines in a `plaza sim` child with
    # walk-ins and its own faults, 20 WebSocket screens in two node processes, 2 probes
    opts = ScenarioOptions(
        "soak",
        machines=30,
        players=4,
        seconds=60.0,
        fault_at=0.1,
        pace=0.5,
        sim_machines=20,
        screens=20,
        screen_processes=2,
        probes=2,
    )
    outcome = asyncio.run(run_scenario(opts, tmp_path))
    print(outcome.summary())
    assert outcome.problems == [], outcome.summary()
    f = outcome.figures
    published = f["board versions published during the run (seen by the reference)"]
    assert published > 50, "the probes, walk-ins and bookings changed the board"
    delivered, expected = f["board deliveries to screens: delivered / expected"].split(" / ")
    assert delivered == expected == f"{published * 20:,}"
    # the broker restart disconnected every screen, inside its fault window
    _all, in_faults = f["screen disconnections: all / begun in a fault window"].split(" / ")
    assert int(in_faults) >= 20
    quiet_stability = f["screens' connection stability, outside the faults' own disconnections"]
    assert float(quiet_stability.removesuffix(" %")) >= 99.9
    quiet, _inside = f["probe changes (outside / inside fault windows)"].split(" / ")
    assert int(quiet) > 20
    assert "state change -> screen p50 / p99 / max (ms), outside faults" in f
    recoveries = {k: v for k, v in outcome.figures.items() if k.startswith("recovery after")}
    assert len(recoveries) == 5
    assert all(float(v.removesuffix(" s")) < 60 for v in recoveries.values())
    sql, received = outcome.figures["notifications in SQL / received"].split(" / ")
    assert sql == received
    stability = outcome.figures["player connection stability (connected / wanted, faults included)"]
    assert float(stability.removesuffix(" %")) > 90


@pytest.mark.parametrize("bridges", [2, 3])
def test_several_bridges_on_postgresql_with_one_killed_mid_load_lose_and_double_nothing(
    tmp_path: Path, bridges: int
) -> None:
    outcome = scenario(tmp_path, "bridges", bridges=bridges)
    after = outcome.figures["slots per bridge after the kill"]
    assert sorted(after) == [f"plaza-bridge-{i}" for i in range(1, bridges)]
    assert sum(after.values()) == 16
