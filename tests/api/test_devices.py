"""Machines over REST: provisioning with a working secret, maintenance on the board and on the
machine, re-keying, and removal that revokes the machine and leaves no retained topic behind."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest

from plaza.messages import BoardEntry, DeviceCommand, Presence
from tests.api.conftest import Api, assert_problem, until_dropped
from tests.conftest import Watch, close_dead_client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
NEW = {"id": "vr-99", "name": "VR 99", "kind": "vr", "zone": "vr-room"}


async def provision(api: Api, headers: dict[str, str]) -> str:
    reply = await api.client.post("/devices", headers=headers, json=NEW)
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["device"]["id"] == "vr-99"
    assert body["credentials"]["username"] == "vr-99"
    password = body["credentials"]["password"]
    assert isinstance(password, str)
    return password


async def go_online(api: Api, password: str) -> aiomqtt.Client:
    """Connect as the machine with a will and publish its birth, as the firmware does."""
    topics = api.broker.topics
    will = aiomqtt.Will(topics.presence("vr-99"), Presence(online=False, epoch=1).encode(), 1, True)
    machine = api.broker.client("vr-99", password, identifier="vr-99", will=will)
    await machine.__aenter__()
    await machine.publish(
        topics.presence("vr-99"), Presence(online=True, epoch=1).encode(), qos=1, retain=True
    )
    return machine


async def test_a_provisioned_machine_connects_with_its_secret_and_shows_on_the_board(
    api: Api,
) -> None:
    admin = await api.headers("admin")
    password = await provision(api, admin)
    topics = api.broker.topics
    async with Watch(api.broker.observer(), [topics.board("vr-99")]) as watch:
        machine = await go_online(api, password)
        try:
            seen = await watch.wait_for(
                lambda s: s.payload != b"" and BoardEntry.model_validate_json(s.payload).online
            )
            entry = BoardEntry.model_validate_json(seen.payload)
            assert (entry.name, entry.kind, entry.zone, entry.status) == (
                "VR 99",
                "vr",
                "vr-room",
                "available",
            )
        finally:
            await machine.__aexit__(None, None, None)
    listed = await api.client.get("/devices/vr-99", headers=admin)
    assert listed.status_code == 200
    assert listed.json()["kind"] == "vr"


async def test_a_duplicate_an_invalid_and_an_unknown_machine_get_exact_codes(api: Api) -> None:
    admin = await api.headers("admin")
    reply = await api.client.post("/devices", headers=admin, json={"id": "pc-01", "name": "x"})
    assert_problem(reply, 409, "device_exists")
    reply = await api.client.post("/devices", headers=admin, json={"id": "PC/1#", "name": "x"})
    assert_problem(reply, 422, "validation_error")
    assert_problem(await api.client.get("/devices/nope", headers=admin), 404, "not_found")
    reply = await api.client.patch("/devices/nope", headers=admin, json={"maintenance": True})
    assert_problem(reply, 404, "not_found")
    assert_problem(await api.client.delete("/devices/nope", headers=admin), 404, "not_found")


async def test_maintenance_shows_on_the_board_and_locks_the_machine(api: Api) -> None:
    admin = await api.headers("admin")
    password = await provision(api, admin)
    topics = api.broker.topics
    machine = await go_online(api, password)
    try:
        await machine.subscribe(topics.cmd("vr-99"), qos=1)
        async with Watch(api.broker.observer(), [topics.board("vr-99")]) as watch:
            reply = await api.client.patch(
                "/devices/vr-99", headers=admin, json={"maintenance": True, "name": "VR 99b"}
            )
            assert reply.status_code == 200
            assert reply.json()["maintenance"] is True
            seen = await watch.wait_for(
                lambda s: BoardEntry.model_validate_json(s.payload).status == "maintenance"
            )
            assert BoardEntry.model_validate_json(seen.payload).name == "VR 99b"
        async with asyncio.timeout(5):
            async for message in machine.messages:
                cmd = DeviceCommand.model_validate_json(message.payload)
                assert cmd.cmd == "lock"
                break
        # a player cannot book it now
        player = await api.headers("player1")
        now = await _now_slot()
        reply = await api.client.post(
            "/reservations",
            headers=player,
            json={"device_id": "vr-99", "starts_at": now[0], "ends_at": now[1]},
        )
        assert_problem(reply, 409, "device_unavailable")
    finally:
        await machine.__aexit__(None, None, None)


async def _now_slot() -> tuple[str, str]:
    start = datetime.now(UTC) + timedelta(minutes=30)
    return start.isoformat(), (start + timedelta(minutes=30)).isoformat()


async def test_rekeying_a_machine_refuses_its_old_secret(api: Api) -> None:
    admin = await api.headers("admin")
    old = await provision(api, admin)
    reply = await api.client.post("/devices/vr-99/credentials", headers=admin)
    assert reply.status_code == 200
    new = reply.json()["password"]
    assert new != old
    with pytest.raises(aiomqtt.MqttError):
        async with api.broker.client("vr-99", old, identifier="vr-99"):
            pass
    async with api.broker.client("vr-99", new, identifier="vr-99"):
        pass


async def test_removing_a_machine_revokes_it_and_clears_its_retained_topics(api: Api) -> None:
    admin = await api.headers("admin")
    password = await provision(api, admin)
    topics = api.broker.topics
    machine = await go_online(api, password)
    async with Watch(api.broker.observer(), [topics.board("vr-99")]) as watch:
        await watch.wait_for(lambda s: s.payload != b"")
    reply = await api.client.delete("/devices/vr-99", headers=admin)
    assert reply.status_code == 204
    # the broker dropped the machine (its will fired) and refuses it from now on
    with pytest.raises(aiomqtt.MqttError):
        await until_dropped(machine)
    await close_dead_client(machine)
    with pytest.raises(aiomqtt.MqttError):
        async with api.broker.client("vr-99", password, identifier="vr-99"):
            pass
    # no retained message is left: subscribe to the removed machine's topics first and to a
    # retained marker last; the broker sends retained messages in subscription order
    marker = topics.board("pc-01")
    async with api.broker.stand_in_bridge() as bridge:
        await bridge.publish(marker, b'{"marker": 1}', qos=1, retain=True)
    async with Watch(
        api.broker.observer(),
        [topics.board("vr-99"), topics.presence("vr-99"), topics.state("vr-99"), marker],
    ) as watch:
        await watch.wait_for(lambda s: s.topic == marker)
        assert [s.topic for s in watch.seen if s.payload] == [marker]
    assert_problem(await api.client.get("/devices/vr-99", headers=admin), 404, "not_found")
    # the bridge refuses requests for it at once, answering with the request's correlation
    start, end = await _now_slot()
    reply = await api.client.post(
        "/reservations",
        headers=await api.headers("player1"),
        json={"device_id": "vr-99", "starts_at": start, "ends_at": end},
    )
    assert_problem(reply, 404, "not_found")
    listed = [d["id"] for d in (await api.client.get("/devices", headers=admin)).json()]
    assert "vr-99" not in listed


async def test_a_machine_with_active_reservations_cannot_be_removed(api: Api) -> None:
    admin = await api.headers("admin")
    player = await api.headers("player1")
    start, end = await _now_slot()
    reply = await api.client.post(
        "/reservations",
        headers=player,
        json={"device_id": "pc-03", "starts_at": start, "ends_at": end},
    )
    assert reply.status_code == 200, reply.text
    reply = await api.client.delete("/devices/pc-03", headers=admin)
    body = assert_problem(reply, 409, "device_has_reservations")
    assert "pc-03" in json.dumps(body)
