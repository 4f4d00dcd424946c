"""Reservations end to end: real broker, real bridge, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.service import BridgeService
from plaza.db import make_engine
from plaza.messages import BoardEntry, Reply
from plaza.settings import Settings
from plaza.tables import CommandLog, Device, Reservation
from tests.conftest import BrokerHandle, RunningService, Seen, Watch
from tests.integration.helpers import api, is_board, machine, player, sql, start, stop
from tests.integration.reserving import as_admin, race, slot

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def auto_approve(db_url: str, device: str) -> None:
    await sql(db_url, update(Device).where(col(Device.id) == device).values(auto_approve=True))


async def reservations(db_url: str) -> list[Reservation]:
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            return list((await session.exec(select(Reservation))).all())
    finally:
        await engine.dispose()


async def test_a_hundred_clients_race_for_overlapping_slots_and_exactly_one_wins(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    device = seeded[0]
    await auto_approve(db_url, device)
    replies = await race(broker, device, 100, 3600)
    winners = [x for x in replies if x.ok]
    assert len(winners) == 1
    won = winners[0].reservation
    assert won is not None
    assert won.status == "approved"
    losers = [x for x in replies if not x.ok]
    assert Counter(x.error.code for x in losers if x.error) == {"conflict": 99}
    for lost in losers:
        assert lost.error is not None
        assert lost.error.conflict is not None
        assert lost.error.conflict.reservation_id == won.id
        assert (lost.error.conflict.starts_at, lost.error.conflict.ends_at) == (
            won.starts_at,
            won.ends_at,
        )
    rows = await reservations(db_url)
    assert [(x.id, x.status) for x in rows] == [(won.id, "approved")]


async def test_of_two_overlapping_pending_reservations_approving_both_approves_exactly_one(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    device = seeded[1]
    start_at = datetime.now(UTC) + timedelta(hours=2)
    # Two pending requests that overlap, as two bridges racing on PostgreSQL could leave them.
    for i, who in enumerate(("player1", "player2")):
        await sql(
            db_url,
            Reservation(
                id=f"pending{i}",
                device_id=device,
                player=who,
                starts_at=start_at + timedelta(minutes=10 * i),
                ends_at=start_at + timedelta(minutes=60 + 10 * i),
                status="pending",
                code=f"00000{i}",
                request_key=f"{who}:seed{i}",
            ),
        )
    async with api(broker) as admin:
        first, second = await asyncio.gather(
            admin.request(device, **as_admin({"op": "approve", "reservation_id": "pending0"})),
            admin.request(device, **as_admin({"op": "approve", "reservation_id": "pending1"})),
        )
    assert sorted([first.ok, second.ok]) == [False, True]
    loser = second if first.ok else first
    assert loser.error is not None
    assert loser.error.code == "conflict"
    statuses = Counter(r.status for r in await reservations(db_url))
    assert statuses == {"approved": 1, "pending": 1}


async def test_the_same_request_id_twice_is_applied_once_and_answered_the_same(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    device = seeded[2]
    body = {"request_id": "retry-me-1", "op": "reserve", **slot(7200, 30)}
    async with player(broker) as p1:
        await p1.send(device, body)
        first = await p1.reply("retry-me-1")
        await p1.send(device, body)  # a retry after a lost reply
        second = await p1.reply("retry-me-1", count=2)
    assert first.ok
    assert first == second
    rows = await reservations(db_url)
    assert len(rows) == 1
    engine = make_engine(db_url)
    async with AsyncSession(engine) as session:
        logged = (await session.exec(select(CommandLog))).all()
    await engine.dispose()
    assert [c.request_key for c in logged] == ["player1:retry-me-1"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid"),
        (b'{"request_id": "u1", "op": "teleport"}', "invalid"),
        (json.dumps({"request_id": "big", "op": "reserve", "x": "y" * 20000}).encode(), "invalid"),
        (b'{"request_id": "far", "op": "reserve", "starts_at": 1e20, "ends_at": 1e21}', "invalid"),
        (b'{"request_id": "nan", "op": "reserve", "starts_at": NaN, "ends_at": 5}', "invalid"),
        (b"[" * 5000 + b"]" * 5000, "invalid"),
    ],
    ids=["malformed-json", "unknown-op", "oversize", "year-3e12", "nan", "deeply-nested"],
)
async def test_a_bad_request_gets_a_clear_error_reply_and_the_next_one_still_works(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], body: bytes, code: str
) -> None:
    device = seeded[3]
    async with player(broker) as p1:
        await p1.send(device, body)
        # The reply names the request when its id can be read; an oversize payload is not
        # parsed at all, and JSON nested deeper than Python parses has no readable id.
        readable = body.startswith(b'{"') and len(body) <= 16 * 1024
        peeked = json.loads(body)["request_id"] if readable else None
        bad = await p1.reply(peeked or "")  # replies without a request id are keyed ""
        assert not bad.ok
        assert bad.error is not None
        assert bad.error.code == code
        assert bad.error.message
        good = await p1.request(device, op="reserve", **slot(3 * 3600, 30))
        assert good.ok, good


async def test_a_response_topic_outside_the_requesters_tree_or_too_long_is_not_used(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    async with player(broker) as p1:
        for bad in ("plaza/users/player2/replies", "plaza/users/player1/" + "x" * 300):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = bad
            body = {"request_id": uuid.uuid4().hex, "op": "cancel", "reservation_id": "nope"}
            await p1.client.publish(
                broker.topics.request(seeded[0], "player1"),
                json.dumps(body),
                qos=1,
                properties=props,
            )
            reply = await p1.reply(body["request_id"])
            assert reply.error is not None
            assert reply.error.code == "not_found"
    topics = {t for t, _ in p1.raw}
    assert topics == {"plaza/users/player1/replies"}, "replies went to the default topic only"
    assert bridge.service.metrics.handler_errors == 0


async def test_a_wrong_device_and_a_slot_in_the_past_are_refused_with_their_codes(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    async with player(broker) as p1:
        missing = await p1.request("pc-99", op="reserve", **slot(3600, 30))
        past = await p1.request(seeded[0], op="reserve", **slot(-7200, 30))
        backwards = await p1.request(
            seeded[0],
            op="reserve",
            starts_at=slot(3600, 0)["starts_at"],
            ends_at=slot(1800, 0)["starts_at"],
        )
        stranger = await p1.request(seeded[0], op="approve", reservation_id="nope")
    assert (missing.ok, missing.error and missing.error.code) == (False, "not_found")
    assert (past.ok, past.error and past.error.code) == (False, "in_past")
    assert (backwards.ok, backwards.error and backwards.error.code) == (False, "invalid")
    assert (stranger.ok, stranger.error and stranger.error.code) == (False, "forbidden")


async def test_a_reminder_is_published_at_the_lead_time_exactly_once(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    lead = bridge.service.settings.reminder_lead
    async with player(broker) as p1:
        made = await p1.request(seeded[4], op="reserve", **slot(lead + 2, 5))
        assert made.ok
        assert made.reservation is not None
        note = await p1.notification("reservation_reminder", timeout=lead + 10)
        due = made.reservation.starts_at - lead
        assert due - 0.1 <= note.ts <= due + 2.0
        assert note.reservation is not None
        assert note.reservation.code == made.reservation.code
        await asyncio.sleep(1.0)  # more ticks pass: still one reminder
        assert [n.type for n in p1.notifications].count("reservation_reminder") == 1


async def test_no_show_release_frees_the_machine_and_the_board_shows_it(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[5]
    await auto_approve(db_url, device)
    m = machine(broker, device, tmp_path)
    task = await start(m)
    async with (
        Watch(broker.observer(), [f"plaza/board/{device}"]) as watch,
        player(broker) as p1,
    ):
        await watch.wait_for(is_board(device, status="available"))
        made = await p1.request(device, op="reserve", **slot(0, 10))
        assert made.ok
        reserved = await watch.wait_for(is_board(device, status="reserved"))
        assert BoardEntry.model_validate_json(reserved.payload).current_slot is not None
        grace = bridge.service.settings.no_show_grace
        released = await watch.wait_for(
            is_board(device, status="available"), timeout=grace + 10, since=watch.mark()
        )
        assert BoardEntry.model_validate_json(released.payload).current_slot is None
        note = await p1.notification("no_show_released")
        assert note.reservation is not None
        assert note.reservation.status == "no_show"
    await stop(m, task)


def session_command(seen: Seen) -> bool:
    """A command that starts or ends the machine's session (not its locks)."""
    if not seen.topic.endswith("/cmd"):
        return False
    return json.loads(seen.payload)["cmd"] in ("start_session", "end_session")


async def test_check_in_through_the_simulator_turns_the_board_in_use(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[0]
    await auto_approve(db_url, device)
    m = machine(broker, device, tmp_path)
    task = await start(m)
    async with (
        Watch(broker.observer(), [f"plaza/board/{device}", f"plaza/devices/{device}/cmd"]) as w,
        player(broker) as p1,
    ):
        made = await p1.request(device, op="reserve", **slot(0, 30))
        assert made.ok
        assert made.reservation is not None
        await w.wait_for(is_board(device, status="reserved"))
        await m.start_session_with_code("999999")  # a wrong code first
        # (the machine also gets its reservation's lock and, at check-in, unlock: issue 18)
        refused = await w.wait_for(session_command)
        assert json.loads(refused.payload)["cmd"] == "end_session"
        await w.wait_for(is_board(device, status="reserved"), since=w.mark())
        mark = w.mark()
        await m.start_session_with_code(made.reservation.code or "")
        started = await w.wait_for(session_command, since=mark)
        assert json.loads(started.payload)["cmd"] == "start_session"
        entry = await w.wait_for(is_board(device, status="in_use"), since=mark)
        assert BoardEntry.model_validate_json(entry.payload).session is not None
        note = await p1.notification("reservation_checked_in")
        assert note.type == "digest", "checked in is low priority: it comes in the digest"
        assert note.items is not None
        assert [i.type for i in note.items] == ["reservation_checked_in"]
    rows = await reservations(db_url)
    assert [r.status for r in rows] == ["checked_in"]
    await stop(m, task)


async def test_a_player_over_the_command_budget_gets_rate_limited_and_others_do_not(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str], tmp_path: Path
) -> None:
    tight = bridge_settings.model_copy(update={"rate_burst": 3, "rate_per_minute": 1})
    running = RunningService(BridgeService(tight))
    await running.start()
    try:
        async with player(broker, "player1") as p1, player(broker, "player2") as p2:
            replies = [
                await p1.request(seeded[0], op="cancel", reservation_id=f"x{i}") for i in range(5)
            ]
            other = await p2.request(seeded[0], op="cancel", reservation_id="x9")
    finally:
        await running.stop()
    codes = [r.error.code for r in replies if r.error]
    assert codes == ["not_found", "not_found", "not_found", "rate_limited", "rate_limited"]
    assert other.error is not None
    assert other.error.code == "not_found", "one player's budget is not another's"


async def test_an_mqtt_3_1_1_client_gets_its_reply_on_its_replies_topic_by_request_id(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    client = broker.client(
        "player3", broker.secrets.players["player3"], protocol=aiomqtt.ProtocolVersion.V311
    )
    async with client:
        await client.subscribe(broker.topics.replies("player3"), qos=1)
        body = {"request_id": "v311-1", "op": "reserve", **slot(4 * 3600, 30)}
        await client.publish(broker.topics.request(seeded[1], "player3"), json.dumps(body), qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                reply = Reply.model_validate_json(message.payload)
                break
    assert reply.request_id == "v311-1"
    assert reply.ok


async def test_at_the_end_of_a_checked_in_slot_the_machine_is_told_to_end_the_session(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str, tmp_path: Path
) -> None:
    device = seeded[2]
    await auto_approve(db_url, device)
    m = machine(broker, device, tmp_path)
    task = await start(m)
    async with (
        Watch(broker.observer(), [f"plaza/board/{device}", f"plaza/devices/{device}/cmd"]) as w,
        player(broker) as p1,
    ):
        made = await p1.request(device, op="reserve", **slot(0, 0.1))  # a six-second slot
        assert made.reservation is not None, made
        assert made.reservation.status == "approved"
        await m.start_session_with_code(made.reservation.code or "")
        await w.wait_for(is_board(device, status="in_use"))
        end = await w.wait_for(
            lambda s: s.topic.endswith("/cmd") and json.loads(s.payload)["cmd"] == "end_session",
            timeout=20,
        )
        assert json.loads(end.payload)["reason"] == "slot ended"
        await w.wait_for(is_board(device, status="available"), since=w.seen.index(end))
        done = await p1.notification("reservation_completed")
        assert done.items is not None  # low priority: in a digest
        assert "reservation_completed" in [i.type for i in done.items]
    assert [r.status for r in await reservations(db_url)] == ["completed"]
    await stop(m, task)


async def test_idle_machine_actors_are_reaped_and_come_back_on_demand(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    desk = bridge.service.desk
    assert desk is not None
    async with player(broker) as p1:
        await p1.request(seeded[3], op="cancel", reservation_id="nope")
        assert seeded[3] in desk.actors.queues
        idle = bridge.service.settings.actor_idle_seconds
        async with asyncio.timeout(idle + 5):
            while seeded[3] in desk.actors.queues:  # noqa: ASYNC110 - reaping is internal
                await asyncio.sleep(0.1)
        again = await p1.request(seeded[3], op="cancel", reservation_id="nope")
    assert again.error is not None
    assert again.error.code == "not_found"
    assert desk.actors.spawned == 2


async def test_the_owner_is_notified_of_an_approval_but_not_of_their_own_request(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str]
) -> None:
    async with player(broker) as p1, api(broker) as admin:
        made = await p1.request(seeded[4], op="reserve", **slot(5 * 3600, 30))
        assert made.reservation is not None
        assert made.reservation.status == "pending"
        approved = await admin.request(
            seeded[4], **as_admin({"op": "approve", "reservation_id": made.reservation.id})
        )
        assert approved.ok
        note = await p1.notification("reservation_approved")
    assert note.reservation is not None
    assert note.reservation.code == made.reservation.code
    assert note.priority == "high"
    assert "reservation_created" not in [n.type for n in p1.notifications]


async def test_a_booking_that_replaces_the_players_own_overlapping_one_swaps_them_at_once(
    broker: BrokerHandle, bridge: RunningService, seeded: list[str], db_url: str
) -> None:
    first, second = seeded[0], seeded[1]
    await auto_approve(db_url, first)
    async with player(broker) as p1, Watch(broker.observer(), ["plaza/board/+"]) as boards:
        old = await p1.request(first, op="reserve", **slot(0, 30))
        assert old.reservation is not None
        await boards.wait_for(lambda s: s.topic.endswith(first) and b"current_slot" in s.payload)
        clash = await p1.request(second, op="reserve", **slot(0, 30))
        assert (clash.ok, clash.error and clash.error.code) == (False, "conflict")
        mark = boards.mark()  # the board may move before the reply arrives
        moved = await p1.request(second, op="reserve", replaces=old.reservation.id, **slot(0, 30))
        assert moved.ok, moved
        await boards.wait_for(
            lambda s: s.topic.endswith(first) and b"current_slot" not in s.payload, since=mark
        )
        again = await p1.request(second, op="reserve", replaces=old.reservation.id, **slot(60, 30))
        assert (again.ok, again.error and again.error.code) == (False, "invalid_transition")
    statuses = sorted((r.device_id, r.status) for r in await reservations(db_url))
    assert statuses == [(first, "cancelled"), (second, "pending")]
