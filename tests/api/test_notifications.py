"""The notification hub end to end: persistent-session delivery, the REST backlog, read
receipts, the digest, languages, reservation-aware presence with its hysteresis, and
isolation between players."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.messages import (
    AdminAlert,
    AdminCommand,
    AlertSeverity,
    NoticeBody,
    NotificationEvent,
)
from plaza.settings import Settings
from plaza.tables import Reservation
from plaza_sim.epochs import EpochStore
from plaza_sim.machine import Machine, MachineConfig
from tests.api.conftest import Api, assert_problem
from tests.api.helpers import reserve
from tests.conftest import BrokerHandle, RunningService, Watch, running_bridge
from tests.integration.reserving import Requester, slot

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def persistent(broker: BrokerHandle, user: str, clean: bool) -> aiomqtt.Client:
    """A phone with a persistent session, under the account's bound client id."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 300
    return broker.client(
        user,
        broker.secrets.players[user],
        clean_start=clean,
        properties=props,
    )


async def next_notification(client: aiomqtt.Client, timeout: float = 5) -> NotificationEvent:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if message.topic.value.endswith("/notifications"):
                return NotificationEvent.model_validate_json(message.payload)
    raise AssertionError("the connection ended")


async def test_an_offline_player_gets_the_approval_on_reconnect_and_from_the_backlog(
    api: Api,
) -> None:
    broker, topics = api.broker, api.broker.topics
    async with persistent(broker, "player1", clean=True) as phone:
        await phone.subscribe(topics.notifications("player1"), qos=1)
    # the phone is away; an admin approves its owner's booking
    booked = await reserve(api, await api.headers("player1"), "pc-01", 30)
    admin = await api.headers("admin")
    reply = await api.client.post(f"/reservations/{booked['id']}/approve", headers=admin)
    assert reply.status_code == 200
    async with persistent(broker, "player1", clean=False) as phone:
        note = await next_notification(phone)  # queued by the broker for the session
    assert note.type == "reservation_approved"
    assert note.seq is not None
    # a phone that lost its session asks the api for what came after the last seq it saw
    player = await api.headers("player1")
    page = (await api.client.get("/me/notifications", headers=player)).json()
    assert [(n["seq"], n["type"]) for n in page["items"]] == [(note.seq, "reservation_approved")]
    assert page["items"][0]["reservation"]["id"] == booked["id"]
    assert (page["unread"], page["last_seq"]) == (1, note.seq)
    later = await api.client.get("/me/notifications", headers=player, params={"after": note.seq})
    assert later.json()["items"] == []


async def test_read_receipts_over_rest_and_over_mqtt(api: Api) -> None:
    admin = await api.headers("admin")
    player = await api.headers("player2")
    for body in ({"title": "하나", "message": "1"}, {"title": "둘", "message": "2"}):
        assert (await api.client.post("/notices", headers=admin, json=body)).status_code == 201
    page = (await api.client.get("/me/notifications", headers=player)).json()
    assert [n["seq"] for n in page["items"]] == [1, 2]
    assert page["unread"] == 2
    latest = await api.client.get("/me/notifications", headers=player, params={"limit": 1})
    assert [n["seq"] for n in latest.json()["items"]] == [2], "without after: the latest"
    first = await api.client.get(
        "/me/notifications", headers=player, params={"after": 0, "limit": 1}
    )
    assert [n["seq"] for n in first.json()["items"]] == [1]
    marked = await api.client.post("/me/notifications/read", headers=player, json={"up_to": 1})
    assert marked.json() == {"marked": 1, "unread": 1}
    topics = api.broker.topics
    async with api.broker.client("player2", api.broker.secrets.players["player2"]) as phone:
        await phone.publish(topics.acks("player2"), b'{"seqs": [2]}', qos=1)
        await phone.publish(topics.acks("player2"), b"not json", qos=1)  # logged, dropped
    for _ in range(100):
        page = (await api.client.get("/me/notifications", headers=player)).json()
        if page["unread"] == 0:
            break
        await asyncio.sleep(0.05)
    assert page["unread"] == 0
    assert all(n["read_at"] for n in page["items"])
    empty = await api.client.post("/me/notifications/read", headers=player, json={})
    assert empty.json() == {"marked": 0, "unread": 0}
    bad = await api.client.post("/me/notifications/read", headers=player, json={"up_to": -1})
    assert_problem(bad, 422, "validation_error")


async def test_players_see_only_their_own_notifications(api: Api) -> None:
    admin = await api.headers("admin")
    booked = await reserve(api, await api.headers("player1"), "pc-02", 30)
    await api.client.post(f"/reservations/{booked['id']}/approve", headers=admin)
    mine = (await api.client.get("/me/notifications", headers=await api.headers("player1"))).json()
    theirs = (
        await api.client.get("/me/notifications", headers=await api.headers("player3"))
    ).json()
    assert len(mine["items"]) == 1
    assert theirs == {"items": [], "unread": 0, "last_seq": 0}
    topics = api.broker.topics
    async with api.broker.client("player3", api.broker.secrets.players["player3"]) as spy:
        granted = await spy.subscribe(
            [(topics.notifications("player1"), 1), (topics.acks("player1"), 1)]
        )
        assert [getattr(c, "value", c) >= 0x80 for c in granted or []] == [True, True]


async def test_a_player_reads_notifications_in_their_language(api: Api) -> None:
    player = await api.headers("player1")
    await api.client.patch("/me", headers=player, json={"locale": "en"})
    booked = await reserve(api, player, "pc-03", 30)
    admin = await api.headers("admin")
    await api.client.post(f"/reservations/{booked['id']}/approve", headers=admin)
    await api.client.post(
        "/notices",
        headers=admin,
        json={"title": "점검", "message": "곧 점검", "title_en": "Upkeep", "message_en": "Soon"},
    )
    items = (await api.client.get("/me/notifications", headers=player)).json()["items"]
    assert [(n["type"], n["title"]) for n in items] == [
        ("reservation_approved", "Reservation approved"),
        ("system_notice", "Upkeep"),
    ]
    assert booked["code"] in items[0]["message"]
    korean = await api.client.get("/me/notifications", headers=await api.headers("player2"))
    assert korean.json()["items"][0]["title"] == "점검"


@pytest.fixture
async def quiet_bridge(
    bridge_settings: Settings, seeded: list[str]
) -> AsyncIterator[RunningService]:
    """A bridge whose digest runs only when a test says so."""
    settings = bridge_settings.model_copy(update={"digest_interval": 3600})
    async with running_bridge(settings) as running:
        yield running


async def test_low_priority_notifications_arrive_together_in_one_digest(
    broker: BrokerHandle, quiet_bridge: RunningService
) -> None:
    topics = broker.topics
    async with (
        Requester(broker, "player1", broker.secrets.players["player1"]) as phone,
        Watch(broker.stand_in_api(), [topics.replies("api")]) as api_link,
    ):
        for title in ("하나", "둘"):
            command = AdminCommand(
                request_id=uuid.uuid4().hex,
                op="notice",
                notice=NoticeBody(title=title, message="m", priority=AlertSeverity.LOW),
            )
            await api_link.client.publish(topics.admin_requests, command.encode(), qos=1)
            answered = command.request_id.encode()
            await api_link.wait_for(lambda seen: answered in seen.payload)  # noqa: B023
        await asyncio.sleep(0.3)
        assert phone.notifications == [], "low priority waits for the digest"
        notifier = quiet_bridge.service.notifier
        assert notifier is not None
        assert await notifier.digest_once() == 3  # player1, player2, player3
        digest = await phone.notification("digest", timeout=5)
        assert await notifier.digest_once() == 0, "each item is digested once"
    assert digest.items is not None
    assert [(i.type, i.title) for i in digest.items] == [
        ("system_notice", "하나"),
        ("system_notice", "둘"),
    ]
    assert digest.seq == digest.items[-1].seq
    assert digest.title == "새 알림 2건"
    assert len(phone.notifications) == 1


# -- reservation-aware presence ---------------------------------------------------------------
def sim_machine(broker: BrokerHandle, device: str, tmp_path: Path) -> Machine:
    cfg = MachineConfig(device, broker.device_password(device), broker.host, broker.port)
    return Machine(cfg, EpochStore(tmp_path / f"{device}-epochs.json"), autoplay=False)


@pytest.fixture
async def watchful_bridge(
    bridge_settings: Settings, seeded: list[str]
) -> AsyncIterator[RunningService]:
    settings = bridge_settings.model_copy(update={"outage_grace": 1.5, "timer_tick": 0.1})
    async with running_bridge(settings) as running:
        yield running


async def reservations_of(bridge: RunningService) -> list[Reservation]:
    engine = make_engine(bridge.service.settings.db_url)
    try:
        async with AsyncSession(engine) as session:
            return list((await session.exec(select(Reservation))).all())
    finally:
        await engine.dispose()


async def book(broker: BrokerHandle, device: str, minutes: float) -> Any:
    async with Requester(broker, "player1", broker.secrets.players["player1"]) as p1:
        made = await p1.request(device, op="reserve", **slot(minutes * 60, 30))
    assert made.ok, made
    return made.reservation


async def test_a_reserved_machine_down_past_the_grace_pages_staff_and_offers_a_rebook(
    broker: BrokerHandle, watchful_bridge: RunningService, tmp_path: Path
) -> None:
    topics = broker.topics
    down, spare = sim_machine(broker, "pc-01", tmp_path), sim_machine(broker, "pc-02", tmp_path)
    tasks = [asyncio.get_running_loop().create_task(m.run()) for m in (down, spare)]
    await asyncio.wait_for(asyncio.gather(down.connected.wait(), spare.connected.wait()), 5)
    reservation = await book(broker, "pc-01", minutes=10)
    async with (
        Requester(broker, "player1", broker.secrets.players["player1"]) as phone,
        Watch(broker.observer(), [topics.admin_alerts]) as alerts,
    ):
        await asyncio.sleep(0.5)  # let the spare's birth reach the bridge
        t0 = asyncio.get_running_loop().time()
        down.crash(down_for=60)
        note = await phone.notification("device_offline_during_reservation", timeout=10)
        waited = asyncio.get_running_loop().time() - t0
        alert = AdminAlert.model_validate_json(
            (await alerts.wait_for(lambda s: b"device_down_reserved" in s.payload)).payload
        )
        await asyncio.sleep(1.0)  # and nothing twice on later ticks
        repeats = [n for n in phone.notifications if n.type == note.type]
    assert waited >= 1.5, "the grace keeps a brief outage quiet"
    assert len(repeats) == 1
    assert note.priority == "high"
    assert note.reservation is not None
    assert note.reservation.id == reservation.id
    assert note.offer is not None
    assert (note.offer.device_id, note.offer.replaces) == ("pc-02", reservation.id)
    assert note.offer.ends_at == reservation.ends_at
    assert (alert.device_id, alert.severity) == ("pc-01", "high")
    assert "pc-02" in alert.message
    # one tap: an ordinary reserve that replaces the old booking in the same decision
    async with Requester(broker, "player1", broker.secrets.players["player1"]) as phone:
        taken = await phone.request(
            note.offer.device_id,
            op="reserve",
            starts_at=note.offer.starts_at,
            ends_at=note.offer.ends_at,
            replaces=note.offer.replaces,
        )
    assert taken.ok, taken
    assert taken.reservation is not None
    assert taken.reservation.device_id == "pc-02"
    statuses = {r.id: r.status for r in await reservations_of(watchful_bridge)}
    assert statuses == {reservation.id: "cancelled", taken.reservation.id: "pending"}
    for m in (down, spare):
        await m.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_brief_outage_shorter_than_the_grace_pages_nobody(
    broker: BrokerHandle, watchful_bridge: RunningService, tmp_path: Path
) -> None:
    topics = broker.topics
    flaky = sim_machine(broker, "pc-03", tmp_path)
    task = asyncio.get_running_loop().create_task(flaky.run())
    await asyncio.wait_for(flaky.connected.wait(), 5)
    await book(broker, "pc-03", minutes=10)
    async with (
        Requester(broker, "player1", broker.secrets.players["player1"]) as phone,
        Watch(broker.observer(), [topics.admin_alerts, topics.board("pc-03")]) as watch,
    ):
        flaky.crash(down_for=0.4)  # the simulator reconnects after 0.4 s
        await watch.wait_for(lambda s: s.topic.endswith("pc-03") and b'"online":false' in s.payload)
        await watch.wait_for(
            lambda s: s.topic.endswith("pc-03") and b'"online":true' in s.payload, timeout=5
        )
        await asyncio.sleep(2.5)  # well past the grace
        outage = [n for n in phone.notifications if n.type == "device_offline_during_reservation"]
    assert outage == []
    assert [s for s in watch.seen if s.topic == topics.admin_alerts] == []
    await flaky.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
