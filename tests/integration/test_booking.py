"""Booking as venues know it over MQTT (issue 17): extend and move, parties, the no-show
policy and the waitlist's held machines; real broker, real bridge, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from plaza.messages import BoardEntry, DeviceCommand
from plaza.settings import Settings
from plaza.tables import Device, PlayerStanding, Reservation, WaitlistEntry
from plaza.topics import Topics
from tests.conftest import BridgeProcess, BrokerHandle, RunningService, Watch, running_bridge
from tests.integration.helpers import (
    api,
    code_of,
    is_board,
    machine,
    player,
    rows,
    sql,
    start,
    stop,
)
from tests.integration.reserving import Requester, as_admin, slot
from venue.accounts import bridge_accounts
from venue.check import CheckOptions, command_effects, double_bookings, read_sql

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def racer(broker: BrokerHandle, i: int) -> Requester:
    return Requester(broker, f"racer{i:03d}", f"racer-pw-{i:03d}")


async def sql_invariants(db_url: str) -> list[str]:
    """`plaza check`'s SQL invariants (no double booking, one effect per command)."""
    facts = await read_sql(CheckOptions(database_url=db_url), Topics())
    return [str(p) for p in (*double_bookings(facts.active), *command_effects(facts))]


# -- extend and move ---------------------------------------------------------------------------
async def test_a_player_extends_and_moves_a_booking_and_the_boards_follow(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    first, second = seeded[0], seeded[1]
    await sql(db_url, update(Device).values(auto_approve=True))
    async with player(broker) as p1, Watch(broker.observer(), ["plaza/board/+"]) as boards:
        made = await p1.request(first, op="reserve", **slot(0, 30))
        assert made.reservation is not None
        rid, end = made.reservation.id, made.reservation.ends_at
        longer = await p1.request(first, op="extend", reservation_id=rid, ends_at=end + 1800)
        assert longer.ok, longer
        assert longer.reservation is not None
        assert longer.reservation.ends_at == end + 1800
        assert (await sql_one(db_url, rid)).ends_at.timestamp() == pytest.approx(end + 1800)
        mark = boards.mark()
        moved = await p1.request(first, op="move", reservation_id=rid, device_id=second)
        assert moved.ok, moved
        assert moved.reservation is not None
        assert (moved.reservation.device_id, moved.reservation.code) == (
            second,
            made.reservation.code,
        )

        def shows(device: str, present: bool) -> Any:
            def check(seen: Any) -> bool:
                if not is_board(device)(seen):
                    return False
                entry = BoardEntry.model_validate_json(seen.payload)
                has = entry.current_slot is not None and entry.current_slot.reservation_id == rid
                return has is present

            return check

        await boards.wait_for(shows(second, True), since=mark)
        await boards.wait_for(shows(first, False), since=mark)


async def sql_one(db_url: str, rid: str) -> Reservation:
    (row,) = [r for r in await rows(db_url, Reservation) if r.id == rid]
    assert isinstance(row, Reservation)
    return row


async def test_a_move_or_extend_that_conflicts_leaves_the_booking_exactly_as_it_was(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    first, second = seeded[0], seeded[1]
    async with player(broker) as p1, player(broker, "player2") as p2:
        mine = await p1.request(first, op="reserve", **slot(3600, 60))
        theirs = await p2.request(second, op="reserve", **slot(3600, 60))
        after = await p2.request(first, op="reserve", **slot(7200, 60))
        assert mine.reservation
        assert theirs.reservation
        assert after.reservation
        before = await sql_one(db_url, mine.reservation.id)
        clash = await p1.request(first, op="move", reservation_id=before.id, device_id=second)
        assert code_of(clash) == "conflict"
        assert clash.error is not None
        assert clash.error.conflict is not None
        assert clash.error.conflict.reservation_id == theirs.reservation.id
        longer = await p1.request(
            first, op="extend", reservation_id=before.id, ends_at=after.reservation.ends_at
        )
        assert code_of(longer) == "conflict"
        retry = await p1.request(first, op="move", reservation_id=before.id, device_id="nope")
        assert code_of(retry) == "not_found"
    assert await sql_invariants(db_url) == []
    now = await sql_one(db_url, before.id)
    assert (now.device_id, now.starts_at, now.ends_at, now.status, now.updated_at) == (
        before.device_id,
        before.starts_at,
        before.ends_at,
        before.status,
        before.updated_at,
    )


async def test_extending_a_checked_in_session_sends_the_machine_its_new_end(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    device = seeded[2]
    now = datetime.now(UTC)
    session = Reservation(
        id="live1",
        device_id=device,
        player="player1",
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(minutes=25),
        status="checked_in",
        code="424242",
        request_key="player1:seeded-live1",
    )
    await sql(db_url, session)
    new_end = (now + timedelta(minutes=55)).timestamp()
    async with (
        player(broker) as p1,
        Watch(broker.observer(), [broker.topics.cmd(device)]) as cmds,
    ):
        body = {"op": "extend", "reservation_id": "live1", "ends_at": new_end, "request_id": "x1"}
        await p1.send(device, body)
        assert (await p1.reply("x1")).ok
        seen = await cmds.wait_for(lambda s: b"extend_session" in s.payload)
        command = DeviceCommand.model_validate_json(seen.payload)
        assert command.session is not None
        assert command.session.ends_at == pytest.approx(new_end)
        await p1.send(device, body)  # the same request again: answered again, applied once
        assert (await p1.reply("x1", count=2)).ok
    assert len([s for s in cmds.seen if b"extend_session" in s.payload]) == 1


# -- parties -----------------------------------------------------------------------------------
async def test_a_party_of_three_gets_three_seats_each_with_its_own_code_and_cancels_whole(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    async with player(broker) as p1, player(broker, "player2") as p2:
        booked = await p1.venue(op="reserve_party", seats=3, kind="pc", **slot(3600, 60))
        assert booked.ok, booked
        assert booked.reservations is not None
        assert booked.party_id
        assert [r.device_id for r in booked.reservations] == ["pc-01", "pc-02", "pc-03"]
        assert len({r.code for r in booked.reservations}) == 3
        assert {r.party_id for r in booked.reservations} == {booked.party_id}
        again = await p2.venue(op="reserve_party", devices=["pc-04", "pc-03"], **slot(3600, 60))
        assert code_of(again) == "conflict"
        assert again.error is not None
        assert again.error.seat == "pc-03"
        gone = await p1.venue(op="cancel_party", party_id=booked.party_id)
        assert gone.ok
        assert gone.reservations is not None
        assert {r.status for r in gone.reservations} == {"cancelled"}
    assert Counter(r.status for r in await rows(db_url, Reservation)) == {"cancelled": 3}
    assert await sql_invariants(db_url) == []


async def test_approving_one_seat_of_a_pending_party_approves_all_of_it(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    async with player(broker) as p1, api(broker) as admin:
        booked = await p1.venue(op="reserve_party", seats=2, kind="pc", **slot(3600, 60))
        assert booked.reservations is not None
        first = booked.reservations[0]
        ok = await admin.request(
            first.device_id, **as_admin({"op": "approve", "reservation_id": first.id})
        )
        assert ok.ok
        assert ok.reservations is not None
        assert {r.status for r in ok.reservations} == {"approved"}
        await p1.notification("reservation_approved")
    assert {r.status for r in await rows(db_url, Reservation)} == {"approved"}


async def test_fifty_players_race_for_the_last_three_seats_and_every_party_is_whole_or_absent(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    await sql(db_url, update(Device).values(auto_approve=True))
    window = slot(5400, 60)
    async with player(broker) as p1:  # one of the four PCs is taken: three seats are left
        assert (await p1.request("pc-02", op="reserve", **window)).ok
    sizes = [1 + i % 3 for i in range(50)]  # parties of one, two and three
    async with contextlib.AsyncExitStack() as stack:
        racers = [await stack.enter_async_context(racer(broker, i)) for i in range(50)]
        bodies = [
            {"request_id": uuid.uuid4().hex, "op": "reserve_party", "kind": "pc", "seats": n}
            | window
            for n in sizes
        ]
        await asyncio.gather(*(r.send_venue(b) for r, b in zip(racers, bodies, strict=True)))
        replies = await asyncio.gather(
            *(r.reply(str(b["request_id"]), 30) for r, b in zip(racers, bodies, strict=True))
        )
    won = [(n, r) for n, r in zip(sizes, replies, strict=True) if r.ok]
    assert won, "someone got seats"
    assert sum(n for n, _ in won) <= 3
    for n, reply in won:
        assert reply.reservations is not None
        assert len(reply.reservations) == n
    assert {code_of(r) for r in replies if not r.ok} == {"conflict"}
    seats = [r for r in await rows(db_url, Reservation) if r.party_id]
    by_party = Counter(r.party_id for r in seats)
    assert sorted(by_party.values()) == sorted(n for n, _ in won), "whole or absent"
    assert len({r.device_id for r in seats}) == len(seats) <= 3
    assert await sql_invariants(db_url) == []


# -- the no-show policy ------------------------------------------------------------------------
@pytest.fixture
def strict_settings(bridge_settings: Settings) -> Settings:
    return bridge_settings.model_copy(update={"no_show_strikes": 2, "no_show_grace": 0.2})


async def test_two_no_shows_suspend_self_service_booking_until_staff_lift_it(
    broker: BrokerHandle, strict_settings: Settings, seeded: list[str], db_url: str
) -> None:
    now = datetime.now(UTC)
    for i in range(2):  # two approved bookings nobody checks in to
        await sql(
            db_url,
            Reservation(
                id=f"gone{i}",
                device_id=seeded[i],
                player="player1",
                starts_at=now - timedelta(minutes=1 + 40 * i),
                ends_at=now + timedelta(minutes=30 - 40 * i),
                status="approved",
                code="111111",
                request_key=f"player1:seeded{i}",
            ),
        )
    async with running_bridge(strict_settings), player(broker) as p1, api(broker) as admin:
        note = await p1.notification("booking_suspended")
        assert note.until is not None
        assert note.until > now.timestamp() + 6 * 86400
        refused = await p1.request(seeded[3], op="reserve", **slot(3600, 30))
        assert code_of(refused) == "suspended"
        assert refused.error is not None
        assert refused.error.until == pytest.approx(note.until)
        waitlist = await p1.venue(op="join_waitlist", kind="pc", minutes=30)
        assert code_of(waitlist) == "suspended"
        lifted = await admin.venue(**as_admin({"op": "lift_suspension", "user": "player1"}))
        assert lifted.ok, lifted
        await p1.notification("suspension_lifted")
        assert (await p1.request(seeded[3], op="reserve", **slot(3600, 30))).ok
    (standing,) = await rows(db_url, PlayerStanding)
    assert (standing.player, standing.suspended_until) == ("player1", None)


# -- the waitlist and held machines ------------------------------------------------------------
@pytest.fixture
def waitlist_settings(bridge_settings: Settings) -> Settings:
    return bridge_settings.model_copy(update={"waitlist_hold": 1.5})


@contextlib.asynccontextmanager
async def online(broker: BrokerHandle, device: str, tmp_path: Path) -> AsyncIterator[None]:
    m = machine(broker, device, tmp_path)
    task = await start(m)
    try:
        yield
    finally:
        await stop(m, task)


async def test_a_held_machine_is_nobody_elses_during_the_hold_and_goes_to_the_next_after(
    broker: BrokerHandle,
    waitlist_settings: Settings,
    seeded: list[str],
    db_url: str,
    tmp_path: Path,
) -> None:
    console = "console-01"
    async with (
        running_bridge(waitlist_settings),
        player(broker) as p1,
        player(broker, "player2") as p2,
        player(broker, "player3") as p3,
        Watch(broker.observer(), [broker.topics.board(console)]) as board,
    ):
        first = await p1.venue(op="join_waitlist", kind="console", minutes=30)
        second = await p2.venue(op="join_waitlist", kind="console", minutes=30)
        assert first.entry is not None
        assert second.entry is not None
        assert (first.entry.position, second.entry.position) == (1, 2)
        async with online(broker, console, tmp_path):
            offer = (await p1.notification("waitlist_offer")).waitlist_offer
            assert offer is not None
            assert offer.device_id == console
            await board.wait_for(is_board(console, status="held"))
            taken = await p3.request(console, op="reserve", **slot(0, 20))
            assert code_of(taken) == "conflict"
            assert taken.error is not None
            assert taken.error.conflict is not None
            assert taken.error.conflict.reservation_id == offer.offer_id
            # player1 lets the hold lapse: player2 is next, and takes it
            await p1.notification("waitlist_offer_lapsed")
            second_offer = (await p2.notification("waitlist_offer")).waitlist_offer
            assert second_offer is not None
            assert second_offer.offer_id != offer.offer_id
            late = await p1.request(console, op="reserve", offer_id=offer.offer_id)
            assert code_of(late) in ("offer_expired", "invalid_transition")
            took = await p2.request(console, op="reserve", offer_id=second_offer.offer_id)
            assert took.ok, took
            assert took.entry is not None
            assert took.entry.status == "booked"
            await p2.waitlist(lambda s: not s.entries)
    statuses = Counter(e.status for e in await rows(db_url, WaitlistEntry))
    assert statuses == {"lapsed": 1, "booked": 1}
    assert await sql_invariants(db_url) == []


async def test_joining_the_line_shows_the_position_and_it_moves_as_the_head_leaves(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    async with player(broker) as p1, player(broker, "player2") as p2:
        head = await p1.venue(op="join_waitlist", kind="racing", minutes=30)
        assert head.entry is not None
        again = await p1.venue(op="join_waitlist", kind="racing", minutes=30)
        assert code_of(again) == "conflict"
        await p2.venue(op="join_waitlist", kind="racing", minutes=30)
        await p2.waitlist(lambda s: [e.position for e in s.entries] == [2])
        left = await p1.venue(op="leave_waitlist", entry_id=head.entry.id)
        assert left.ok
        assert left.entry is not None
        assert left.entry.status == "left"
        state = await p2.waitlist(lambda s: [e.position for e in s.entries] == [1])
        assert state.entries[0].expected_at is not None
        await p1.waitlist(lambda s: s.entries == [])


async def test_a_bridge_killed_during_a_hold_keeps_the_hold_and_the_line_from_sql(
    broker: BrokerHandle,
    bridge_settings: Settings,
    seeded: list[str],
    db_url: str,
    tmp_path: Path,
) -> None:
    console = "console-01"
    bridge = BridgeProcess(
        bridge_settings,
        tmp_path / "bridge.log",
        PLAZA_WAITLIST_HOLD="6",
        PLAZA_TIMER_TICK="0.2",
    )
    await bridge.start()
    try:
        async with (
            player(broker) as p1,
            player(broker, "player2") as p2,
            player(broker, "player3") as p3,
            online(broker, console, tmp_path),
        ):
            await p1.venue(op="join_waitlist", kind="console", minutes=30)
            offer = (await p1.notification("waitlist_offer")).waitlist_offer
            assert offer is not None
            await p2.venue(op="join_waitlist", kind="console", minutes=30)
            bridge.kill9()
            await bridge.start()
            (hold,) = [r for r in await rows(db_url, Reservation) if r.status == "held"]
            assert (hold.id, hold.hold_until.timestamp()) == (
                offer.offer_id,
                pytest.approx(offer.hold_until),
            )
            taken = await p3.request(console, op="reserve", **slot(0, 20))
            assert code_of(taken) == "conflict"
            # the hold lapses on the restarted bridge's clock, and the line goes on from SQL
            nxt = (await p2.notification("waitlist_offer", timeout=15)).waitlist_offer
            assert nxt is not None
            assert nxt.device_id == console
    finally:
        bridge.stop()
    statuses = Counter(e.status for e in await rows(db_url, WaitlistEntry))
    assert statuses == {"lapsed": 1, "offered": 1}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_bridges_racing_parties_book_each_party_whole_or_not_at_all(
    broker: BrokerHandle,
    seeded: list[str],
    bridge_settings: Settings,
    db_url: str,
    tmp_path: Path,
) -> None:
    """Two bridges behind a shared subscription decide parties apart: PostgreSQL's exclusion
    constraints refuse the second holder of a machine, and the loser's whole party is redone
    in a savepoint of its own (the careful path), so it is refused whole."""
    await sql(db_url, update(Device).values(auto_approve=True))
    bridges = []
    for i in range(2):
        # its two accounts (main and intake), each bound to its client id
        for account in bridge_accounts(f"bridge-{i}", f"bridge-pw-{i}", f"plaza-bridge-{i}"):
            await broker.add_account(account)
        bridges.append(
            BridgeProcess(
                bridge_settings,
                tmp_path / f"bridge{i}.log",
                PLAZA_BRIDGE_ID=f"plaza-bridge-{i}",
                PLAZA_SHARED_GROUP="bridges",
                PLAZA_MQTT_USERNAME=f"bridge-{i}",
                PLAZA_MQTT_PASSWORD=f"bridge-pw-{i}",
            )
        )
    for b in bridges:
        await b.start()
    window = slot(7200, 60)
    try:
        async with contextlib.AsyncExitStack() as stack:
            racers = [await stack.enter_async_context(racer(broker, i)) for i in range(20)]
            bodies = [
                {"request_id": uuid.uuid4().hex, "op": "reserve_party", "kind": "pc", "seats": 2}
                | window
                for _ in racers
            ]
            await asyncio.gather(*(r.send_venue(b) for r, b in zip(racers, bodies, strict=True)))
            replies = await asyncio.gather(
                *(r.reply(str(b["request_id"]), 30) for r, b in zip(racers, bodies, strict=True))
            )
    finally:
        for b in bridges:
            b.stop()
    refused_by_sql = sum(b.log_path.read_text().count("SQL refused") for b in bridges)
    print(f"two bridges, 20 parties: {refused_by_sql} refused by a constraint (careful path)")
    won = [r for r in replies if r.ok]
    assert 1 <= len(won) <= 2  # four PCs: at most two parties of two
    assert {code_of(r) for r in replies if not r.ok} == {"conflict"}
    seats = [r for r in await rows(db_url, Reservation) if r.party_id]
    assert sorted(Counter(r.party_id for r in seats).values()) == [2] * len(won)
    assert len({r.device_id for r in seats}) == len(seats)
    assert await sql_invariants(db_url) == []
