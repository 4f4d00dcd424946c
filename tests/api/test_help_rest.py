"""The venue floor over REST (issue 18): POST /help and its caps, staff's /admin/help steps,
machines without an agent (provisioned with ``agent: false``, their state set by staff) and
the desk's check-in by code; every change goes through the bridge."""

from __future__ import annotations

import json

import pytest

from plaza.messages import BoardEntry
from plaza.settings import Settings
from tests.api.conftest import Api, assert_problem
from tests.api.helpers import reserve
from tests.conftest import Watch

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PER_HOUR = 2


@pytest.fixture
def bridge_settings(bridge_settings: Settings) -> Settings:
    return bridge_settings.model_copy(update={"help_per_hour": PER_HOUR})


async def test_a_player_calls_staff_once_at_a_time_and_past_the_hourly_cap_gets_429(
    api: Api,
) -> None:
    p1, admin = await api.headers("player1"), await api.headers("admin")
    body = {"device_id": "pc-01", "topic": "hardware", "message": "the mouse is dead"}
    first = await api.client.post("/help", headers=p1, json=body)
    assert first.status_code == 200, first.text
    call = first.json()
    assert (call["status"], call["user"], call["device_id"]) == ("open", "player1", "pc-01")
    again = await api.client.post("/help", headers=p1, json={**body, "device_id": "pc-02"})
    assert again.json()["id"] == call["id"], "a second call returns the open one"
    listed = await api.client.get("/admin/help", headers=admin)
    assert [c["id"] for c in listed.json()] == [call["id"]]
    mine = await api.client.get("/help", headers=p1)
    assert [c["id"] for c in mine.json()] == [call["id"]]
    done = await api.client.post(f"/admin/help/{call['id']}/resolve", headers=admin)
    assert done.json()["status"] == "resolved"
    assert (await api.client.get("/admin/help", headers=admin)).json() == []
    everything = await api.client.get("/admin/help?status=all", headers=admin)
    assert [c["status"] for c in everything.json()] == ["resolved"]
    second = (await api.client.post("/help", headers=p1, json=body)).json()
    await api.client.post(f"/admin/help/{second['id']}/resolve", headers=admin)
    over = await api.client.post("/help", headers=p1, json=body)
    assert_problem(over, 429, "too_many_help_calls")
    assert 3000 < int(over.headers["Retry-After"]) <= 3600


async def test_bad_help_calls_and_steps_get_exact_codes(api: Api) -> None:
    p2, admin = await api.headers("player2"), await api.headers("admin")
    ok = {"device_id": "pc-01", "topic": "payment"}
    for bad in (
        {**ok, "topic": "pizza"},
        {**ok, "message": "x" * 281},
        {**ok, "device_id": "PC/1#"},
        {"topic": "other"},
        {**ok, "extra": 1},
    ):
        assert_problem(
            await api.client.post("/help", headers=p2, json=bad), 422, "validation_error"
        )
    unknown = await api.client.post("/help", headers=p2, json={**ok, "device_id": "nope"})
    assert_problem(unknown, 404, "not_found")
    staff = await api.client.post("/help", headers=admin, json=ok)
    assert_problem(staff, 403, "forbidden")
    assert_problem(await api.client.get("/admin/help", headers=p2), 403, "forbidden")
    call = (await api.client.post("/help", headers=p2, json=ok)).json()
    step = f"/admin/help/{call['id']}"
    assert_problem(await api.client.post(f"{step}/ack", headers=p2), 403, "forbidden")
    ack = await api.client.post(f"{step}/ack", headers=admin)
    assert (ack.json()["status"], ack.json()["acknowledged_by"]) == ("acknowledged", "admin")
    await api.client.post(f"{step}/resolve", headers=admin)
    assert_problem(await api.client.post(f"{step}/ack", headers=admin), 409, "invalid_transition")
    missing = await api.client.post("/admin/help/abc123/ack", headers=admin)
    assert_problem(missing, 404, "not_found")
    bad_id = await api.client.post("/admin/help/NOT-AN-ID/ack", headers=admin)
    assert_problem(bad_id, 422, "validation_error")


async def test_a_machine_without_an_agent_is_set_by_staff_and_checked_in_at_the_desk(
    api: Api,
) -> None:
    admin, p3 = await api.headers("admin"), await api.headers("player3")
    new = {"id": "arcade-1", "name": "Arcade 1", "kind": "arcade", "agent": False}
    made = await api.client.post("/devices", headers=admin, json={**new, "auto_approve": True})
    assert made.status_code == 201, made.text
    assert made.json()["device"]["agent"] is False
    assert made.json()["device"]["online"] is True, "never offline: it has no connection to lose"
    topics = api.broker.topics
    async with Watch(api.broker.observer(), [topics.board("arcade-1")]) as boards:

        def shows(status: str) -> object:
            def check(seen: object) -> bool:
                entry = BoardEntry.model_validate_json(seen.payload)  # type: ignore[attr-defined]
                return entry.status == status and entry.managed == "staff"

            return check

        await boards.wait_for(shows("available"))  # type: ignore[arg-type]
        state = await api.client.put(
            "/admin/devices/arcade-1/state", headers=admin, json={"state": "fault", "fault": "coin"}
        )
        assert state.status_code == 200, state.text
        await boards.wait_for(shows("fault"))  # type: ignore[arg-type]
        await api.client.put("/admin/devices/arcade-1/state", headers=admin, json={"state": "idle"})
        await boards.wait_for(shows("available"))  # type: ignore[arg-type]
        booked = await reserve(api, p3, "arcade-1", 1)
        assert booked["status"] == "approved"
        desk = "/admin/reservations/check-in"
        wrong = await api.client.post(
            desk, headers=admin, json={"device_id": "arcade-1", "code": "000000"}
        )
        assert_problem(wrong, 422, "bad_code")
        by_player = await api.client.post(
            desk, headers=p3, json={"device_id": "arcade-1", "code": booked["code"]}
        )
        assert_problem(by_player, 403, "forbidden")
        checked = await api.client.post(
            desk, headers=admin, json={"device_id": "arcade-1", "code": booked["code"]}
        )
        assert checked.status_code == 200, checked.text
        assert (checked.json()["status"], checked.json()["id"]) == ("checked_in", booked["id"])
        await boards.wait_for(shows("in_use"))  # type: ignore[arg-type]
        entries = [json.loads(s.payload) for s in boards.seen if s.payload]
        assert all(e["online"] and e["status"] != "offline" for e in entries)
    for bad in ({"state": "maintenance"}, {"state": "on_fire"}, {"state": "idle", "x": 1}):
        reply = await api.client.put("/admin/devices/arcade-1/state", headers=admin, json=bad)
        assert_problem(reply, 422, "validation_error")
    agent = await api.client.put(
        "/admin/devices/pc-01/state", headers=admin, json={"state": "idle"}
    )
    assert_problem(agent, 409, "has_agent")
    nope = await api.client.put("/admin/devices/nope/state", headers=admin, json={"state": "idle"})
    assert_problem(nope, 404, "not_found")
    switched = await api.client.patch("/devices/pc-02", headers=admin, json={"agent": False})
    assert switched.json()["agent"] is False
