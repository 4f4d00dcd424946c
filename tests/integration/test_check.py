"""`plaza check` against a real venue: a clean one passes, and each invariant broken on
purpose (in SQL, or on the retained board) makes it fail with its own message."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from plaza.db import make_engine
from plaza.messages import BoardEntry, BoardStatus, MachineState, Position
from plaza.settings import Settings
from plaza.tables import CommandLog, Device, Notification, Outbox, Reservation
from plaza_sim.machine import Machine
from tests.conftest import BrokerHandle, running_bridge
from tests.integration.helpers import machine, start, stop
from tests.integration.reserving import Requester, as_admin, slot
from venue.check import CheckOptions, Problem, Report, check

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
DAY = 86400.0


@dataclass
class Venue:
    broker: BrokerHandle
    db_url: str
    devices: list[str]
    machines: list[Machine]
    #: reservation ids by role in the scenario
    ids: dict[str, str] = field(default_factory=dict)

    def options(self, **kw: Any) -> CheckOptions:
        base: dict[str, Any] = {
            "database_url": self.db_url,
            "mqtt_host": self.broker.host,
            "mqtt_port": self.broker.port,
            "password": self.broker.secrets.observer,
            "grace": 5.0,
            "digest_interval": 0.3,
            "settle": 0.2,
            "quiet": 0.3,
        }
        return CheckOptions(**(base | kw))

    async def check(self, **kw: Any) -> Report:
        return await check(self.options(**kw))

    async def sql(self, *statements: Any) -> None:
        engine = make_engine(self.db_url)
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    await conn.execute(statement)
        finally:
            await engine.dispose()


def _table(model: Any) -> sa.Table:
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table


RES, LOG, OUT, NOTE, DEV = (
    _table(m) for m in (Reservation, CommandLog, Outbox, Notification, Device)
)


def reservation(rid: str, device: str, player: str, in_days: float, minutes: float = 60) -> Any:
    start_at = datetime.now(UTC) + timedelta(days=in_days)
    return sa.insert(RES).values(
        id=rid,
        device_id=device,
        player=player,
        starts_at=start_at,
        ends_at=start_at + timedelta(minutes=minutes),
        status="approved",
        code="123456",
        request_key=f"system:{rid}",
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def wait_clean(venue: Venue, timeout: float = 15.0) -> Report:
    """Until the venue settles (replies, notifications and digests sent, boards caught up)."""
    deadline = time.monotonic() + timeout
    while True:
        report = await venue.check(grace=0.0, settle=0.0)
        if not report.problems or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.3)


@pytest.fixture
async def venue(
    broker: BrokerHandle,
    bridge_settings: Settings,
    seeded: list[str],
    db_url: str,
    tmp_path: Path,
) -> AsyncIterator[Venue]:
    """Four of six machines online, reservations made through the bridge (one approved in two
    minutes, one pending and one approved in two days, one refused), then the bridge stopped,
    so that nothing repairs what a test breaks."""
    machines = [machine(broker, d, tmp_path) for d in seeded[:4]]
    tasks = [await start(m) for m in machines]
    venue = Venue(broker, db_url, seeded, machines)
    async with running_bridge(bridge_settings):
        async with (
            Requester(broker, "player1", broker.secrets.players["player1"]) as p1,
            Requester(broker, "player2", broker.secrets.players["player2"]) as p2,
            Requester(broker, "api", broker.secrets.api) as admin,
        ):
            # (not under way yet: the tests' no-show grace of 1 s would release it)
            soon = await p1.request(seeded[0], op="reserve", **slot(120, 30))
            later = await p2.request(seeded[1], op="reserve", **slot(2 * DAY, 30))
            approved = await p2.request(seeded[1], op="reserve", **slot(2 * DAY + 3600, 30))
            refused = await p1.request(seeded[2], op="reserve", **slot(130, 30))
            assert soon.reservation
            assert later.reservation
            assert approved.reservation
            assert refused.error is not None
            assert refused.error.code == "conflict"
            for device, rid in (
                (seeded[0], soon.reservation.id),
                (seeded[1], approved.reservation.id),
            ):
                ok = await admin.request(
                    device, **as_admin({"op": "approve", "reservation_id": rid})
                )
                assert ok.ok, ok
            venue.ids = {
                "soon": soon.reservation.id,
                "pending": later.reservation.id,
                "approved": approved.reservation.id,
            }
        report = await wait_clean(venue)
        assert report.problems == [], report.summary()
    try:
        yield venue
    finally:
        for m, task in zip(machines, tasks, strict=True):
            await stop(m, task)


async def test_a_clean_venue_passes_and_the_command_exits_zero(venue: Venue) -> None:
    report = await venue.check(grace=0.0)
    assert report.problems == []
    assert len(report.facts.devices) == 6
    assert len(report.retained.board) == 4  # two machines never connected: no entry, no fault
    soon = report.retained.board[venue.devices[0]].next_slot
    assert soon is not None
    assert (soon.reservation_id, soon.status) == (venue.ids["soon"], "approved")
    assert len(report.facts.logs) == 6
    assert report.summary().startswith("plaza check: OK: 6 machines in SQL, 4 board entries")
    done = subprocess.run(  # noqa: ASYNC221 - the command as an operator runs it
        [
            sys.executable,
            "-m",
            "venue.cli",
            "check",
            "--database-url",
            venue.db_url,
            "--mqtt-host",
            venue.broker.host,
            "--mqtt-port",
            str(venue.broker.port),
            "--mqtt-password",
            venue.broker.secrets.observer,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("plaza check: OK")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_overlapping_active_reservations_on_a_machine_or_of_a_player_fail_it(
    venue: Venue,
) -> None:
    d = venue.devices
    await venue.sql(
        reservation("twin-a", d[2], "racer001", 3),
        reservation("twin-b", d[2], "racer002", 3, minutes=90),
        reservation("both-1", d[3], "racer003", 4),
        reservation("both-2", d[4], "racer003", 4, minutes=30),
    )
    report = await venue.check()
    assert [(p.invariant, p.subject) for p in report.problems] == [
        ("double_booking", f"machine {d[2]}"),
        ("double_booking", "player racer003"),
    ]
    assert "twin-a (approved," in report.problems[0].message
    assert "and twin-b (approved" in report.problems[0].message
    assert report.problems[0].message.endswith("overlap")
    assert "both-1" in report.problems[1].message
    assert "both-2" in report.problems[1].message


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_lost_an_unacknowledged_and_an_undone_command_effect_fail_it(
    venue: Venue,
) -> None:
    d, ids = venue.devices, venue.ids
    refused_reply = {"request_id": "no", "ok": False, "error": {"code": "conflict", "message": "x"}}
    ghost = reservation("ghost", d[3], "player3", 5)
    await venue.sql(
        # an acknowledged reserve whose reservation is gone
        sa.delete(RES).where(RES.c.id == ids["pending"]),
        # a reservation made by a request that no command-log entry acknowledged
        ghost.values(request_key="player3:never-logged"),
        # a refused reserve that nevertheless has a reservation
        sa.insert(LOG).values(
            request_key="player3:refused",
            device_id=d[3],
            op="reserve",
            ok=False,
            reply_json=json.dumps(refused_reply),
            created_at=datetime.now(UTC),
        ),
        reservation("sneaky", d[3], "player3", 6).values(request_key="player3:refused"),
        # an approval answered "approved" whose reservation went back to a state that
        # cannot follow approved
        sa.update(RES).where(RES.c.id == ids["approved"]).values(status="rejected"),
    )
    report = await venue.check()
    assert {p.invariant for p in report.problems} == {"command_effect"}, report.summary()
    pending, approved = ids["pending"], ids["approved"]
    assert sorted(p.message for p in report.problems) == sorted(
        [
            f"acknowledged reservation {pending} does not exist (effect lost)",
            "made by request player3:never-logged which has no command-log entry "
            "(an effect no command acknowledged)",
            "was refused (conflict) but reservation sneaky carries its request key",
            f"answered approved but reservation {approved} is rejected, which cannot follow "
            "approved (effect lost or undone)",
        ]
    )
    subjects = {p.subject for p in report.problems}
    assert {"reservation ghost", "command player3:refused (reserve)"} <= subjects


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_outbox_row_left_unsent_fails_it(venue: Venue) -> None:
    topic = venue.broker.topics.replies("player1")
    await venue.sql(
        sa.insert(OUT).values(topic=topic, payload=b"{}", qos=1, retain=False, created_at=ago(600))
    )
    report = await venue.check(grace=30)
    assert [(p.invariant, p.subject) for p in report.problems] == [("outbox", "1 rows")]
    assert "committed but not sent after 30s" in report.problems[0].message
    assert report.problems[0].message.endswith(f"topics: {topic}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_notifications_never_published_fail_it(venue: Venue) -> None:
    def note(seq: int, priority: str, **kw: Any) -> Any:
        return sa.insert(NOTE).values(
            id=f"note{seq}",
            user="player3",
            seq=seq,
            type="system_notice",
            priority=priority,
            title="t",
            message="m",
            created_at=ago(600),
            **kw,
        )

    await venue.sql(note(1, "high"), note(2, "low"), note(3, "low", digested_at=ago(590)))
    report = await venue.check()
    assert report.problems == [
        Problem("notification", "notification player3#1", "high: no outbox row"),
        Problem("notification", "notification player3#2", "low priority, never digested"),
        Problem(
            "notification", "notification player3#3", "marked digested but no sent digest has it"
        ),
    ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_board_that_disagrees_with_the_machines_or_sql_fails_it(venue: Venue) -> None:
    d, broker, topics = venue.devices, venue.broker, venue.broker.topics
    before = await venue.check()
    wrong = before.retained.board[d[1]].model_copy(update={"status": BoardStatus.IN_USE})
    await venue.machines[2].set_state(MachineState.IN_USE)  # no bridge to follow it
    async with broker.client("bridge", broker.secrets.bridge) as bridge_account:
        await bridge_account.publish(topics.board(d[1]), wrong.encode(), qos=1, retain=True)
        ghost = BoardEntry.model_validate(
            before.retained.board[d[3]].model_dump() | {"device_id": "ghost-01"}
        )
        await bridge_account.publish(topics.board("ghost-01"), ghost.encode(), qos=1, retain=True)
    await venue.sql(
        sa.update(DEV).where(DEV.c.id == d[0]).values(name="Renamed"),
        sa.update(DEV).where(DEV.c.id == d[3]).values(board_version=2**62),
        reservation("now-on-3", d[3], "racer009", -1 / 1440),
    )
    report = await venue.check()
    board = {(p.subject, p.message) for p in report.problems if p.invariant == "board"}
    assert {p.invariant for p in report.problems} == {"board"}, report.summary()
    name = before.retained.board[d[0]].name
    assert (d[0], f"board name {name!r} but SQL has 'Renamed'") in board
    assert (
        d[1],
        "board status in_use, but online=True, state idle, maintenance=False and SQL's slots "
        "make it available",
    ) in board
    assert (d[2], "board says state idle but the machine reports in_use") in board
    assert any(s == d[3] and m.startswith("board version ") for s, m in board)
    assert (d[3], "board current slot none but SQL has now-on-3 (approved)") in board
    assert ("ghost-01", "board entry for a machine SQL does not know") in board
    # the slot under way keeps d[3] free for its player (issue 18): the board shows no lock
    assert (d[3], "board says locked=None but SQL's slots make it locked=reservation") in board
    assert len(report.problems) == 8, report.summary()  # d[3]'s status too (reserved)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_board_whose_place_on_the_floor_disagrees_with_sql_fails_it(venue: Venue) -> None:
    # the floor map (issue 18): every screen draws a machine where its board entry's `pos`
    # says, so that must be SQL's x/y (and its zone SQL's zone)
    d, broker, topics = venue.devices, venue.broker, venue.broker.topics
    before = await venue.check()
    board = before.retained.board
    assert all(board[i].pos is None for i in d[:4]), "the demo fleet starts unplaced here"
    placed = board[d[1]].model_copy(update={"pos": Position(x=1.0, y=1.5)})
    # in its place, but in another zone
    elsewhere = board[d[2]].model_copy(update={"zone": "nowhere", "pos": Position(x=3.0, y=3.0)})
    wrong_place = board[d[3]].model_copy(update={"pos": Position(x=8.0, y=2.0)})
    async with broker.client("bridge", broker.secrets.bridge) as bridge_account:
        for entry in (placed, elsewhere, wrong_place):
            await bridge_account.publish(
                topics.board(entry.device_id), entry.encode(), qos=1, retain=True
            )
    await venue.sql(
        sa.update(DEV).where(DEV.c.id == d[0]).values(x=4.0, y=2.0),
        sa.update(DEV).where(DEV.c.id == d[2]).values(x=3.0, y=3.0),
        sa.update(DEV).where(DEV.c.id == d[3]).values(x=8.0, y=2.5),
    )
    report = await venue.check()
    zone = board[d[2]].zone
    assert sorted(report.problems) == [
        Problem("board", d[0], "board pos none but SQL has x=4, y=2"),
        Problem("board", d[1], "board pos x=1, y=1.5 but SQL has none"),
        Problem("board", d[2], f"board zone 'nowhere' but SQL has {zone!r}"),
        Problem("board", d[3], "board pos x=8, y=2 but SQL has x=8, y=2.5"),
    ], report.summary()
