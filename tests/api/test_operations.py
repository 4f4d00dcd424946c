"""Notices, the alerts feed and the api's own metrics, over REST with the real bridge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from plaza.messages import DeviceState, MachineState, Notice, Presence, now
from tests.api.conftest import Api, assert_problem
from tests.conftest import Watch
from tests.integration.reserving import Requester

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_notice_is_retained_for_every_screen_and_sent_to_every_player(api: Api) -> None:
    topics = api.broker.topics
    admin = await api.headers("admin")
    secrets = api.broker.secrets
    async with Requester(api.broker, "player2", secrets.players["player2"]) as phone:
        reply = await api.client.post(
            "/notices",
            headers=admin,
            json={
                "title": "점검 안내",
                "message": "22시에 점검합니다",
                "priority": "high",
                "title_en": "Maintenance",
                "message_en": "Maintenance at 22:00",
            },
        )
        assert reply.status_code == 201, reply.text
        created = reply.json()
        assert created["created_by"] == "admin"
        note = await phone.notification("system_notice", timeout=5)
        assert (note.title, note.priority) == ("점검 안내", "high")
    # a screen that connects later still gets it: retained
    async with Watch(api.broker.observer(), [topics.notices]) as watch:
        seen = await watch.wait_for(lambda s: s.retain)
    notice = Notice.model_validate_json(seen.payload)
    assert (notice.id, notice.title_en) == (created["id"], "Maintenance")
    listed = await api.client.get("/notices", headers=await api.headers("player1"))
    assert [n["id"] for n in listed.json()] == [created["id"]]


async def test_only_admins_post_notices_and_empty_ones_are_refused(api: Api) -> None:
    player = await api.headers("player1")
    reply = await api.client.post("/notices", headers=player, json={"title": "t", "message": "m"})
    assert_problem(reply, 403, "forbidden")
    admin = await api.headers("admin")
    reply = await api.client.post("/notices", headers=admin, json={"title": "", "message": "m"})
    assert_problem(reply, 422, "validation_error")
    reply = await api.client.post(
        "/notices", headers=admin, json={"title": "t", "message": "m", "priority": "urgent"}
    )
    assert_problem(reply, 422, "validation_error")


async def test_a_machine_fault_appears_in_the_alerts_feed_and_can_be_acknowledged(
    api: Api,
) -> None:
    topics = api.broker.topics
    device = "pc-02"
    async with api.broker.client(device, api.broker.device_password(device)) as machine:
        await machine.publish(
            topics.presence(device), Presence(online=True, epoch=5).encode(), qos=1, retain=True
        )
        fault = DeviceState(state=MachineState.FAULT, epoch=5, seq=1, fault="GPU fan", ts=now())
        await machine.publish(topics.state(device), fault.encode(), qos=1, retain=True)
        admin = await api.headers("admin")
        for _ in range(100):  # the bridge stores alerts behind the publish
            page = (await api.client.get("/alerts", headers=admin)).json()
            if page["total"]:
                break
            await asyncio.sleep(0.05)
    assert page["total"] == 1
    alert = page["items"][0]
    assert (alert["type"], alert["device_id"], alert["severity"]) == (
        "device_fault",
        device,
        "high",
    )
    assert "GPU fan" in alert["message"]
    acked = await api.client.post(f"/alerts/{alert['id']}/ack", headers=admin)
    assert acked.status_code == 200
    assert acked.json()["acknowledged_at"] is not None
    open_only = await api.client.get("/alerts", headers=admin, params={"unacknowledged": True})
    assert open_only.json()["total"] == 0
    assert_problem(await api.client.post("/alerts/nope/ack", headers=admin), 404, "not_found")


async def test_metrics_count_requests_logins_and_bridge_round_trips(api: Api) -> None:
    admin = await api.headers("admin")
    await api.client.post("/auth/login", json={"username": "admin", "password": "wrong"})
    await api.client.post("/notices", headers=admin, json={"title": "t", "message": "m"})
    text = (await api.client.get("/metrics")).text
    assert 'plaza_api_logins_total{result="ok"} 1.0' in text
    assert 'plaza_api_logins_total{result="invalid_credentials"} 1.0' in text
    assert 'plaza_api_bridge_requests_total{op="notice",result="ok"} 1.0' in text
    assert 'route="/notices",status="201"' in text
    assert "plaza_api_bridge_request_seconds_count 1.0" in text
    assert "plaza_api_broker_connected 1.0" in text


async def test_admin_stats_count_machines_commands_and_the_bridges_p99(api: Api) -> None:
    admin = await api.headers("admin")
    player = await api.headers("player1")
    topics = api.broker.topics
    async with api.broker.client("pc-01", api.broker.device_password("pc-01")) as machine:
        await machine.publish(
            topics.presence("pc-01"), Presence(online=True, epoch=3).encode(), qos=1, retain=True
        )
        first = (await api.client.get("/admin/stats", headers=admin)).json()
        for minutes in (30, 90, 150):
            start = datetime.now(UTC) + timedelta(minutes=minutes)
            await api.client.post(
                "/reservations",
                headers=player,
                json={
                    "device_id": "pc-02",
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(minutes=30)).isoformat(),
                },
            )
        for _ in range(100):
            stats = (await api.client.get("/admin/stats", headers=admin)).json()
            if stats["machines_online"] == 1:
                break
            await asyncio.sleep(0.05)
    assert (stats["machines_online"], stats["machines_total"]) == (1, 6)
    assert stats["commands_per_minute"] == 3
    assert 0 < stats["command_p99_ms"] <= 5000
    assert stats["p99_window_seconds"] > 0
    assert first["commands_per_minute"] == 0
    forbidden = await api.client.get("/admin/stats", headers=player)
    assert_problem(forbidden, 403, "forbidden")


async def test_the_web_client_is_served_but_not_its_npm_tree(api: Api) -> None:
    page = await api.client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    mqtt_js = await api.client.get("/vendor/mqtt/mqtt.esm.js")
    assert mqtt_js.status_code == 200
    for private in ("/package.json", "/package-lock.json", "/node_modules/mqtt/package.json"):
        assert (await api.client.get(private)).status_code == 404, private
    assert (await api.client.get("/js/app.js")).status_code == 200
