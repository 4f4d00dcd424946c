"""Booking over REST (issue 17): extend and move, parties, the waitlist and its offers, the
no-show policy (GET /me, the users list, lifting a suspension); every change goes through
the bridge, as the MQTT requests do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza import acl
from plaza.db import make_engine
from plaza.settings import Settings
from plaza.tables import Reservation
from tests.api.conftest import Api, assert_problem, ws_client
from tests.api.helpers import reserve, slot
from tests.integration.helpers import machine, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def bridge_settings(bridge_settings: Settings) -> Settings:
    """One no-show suspends here, so the policy shows in one step."""
    return bridge_settings.model_copy(update={"no_show_strikes": 1, "no_show_grace": 0.2})


async def eventually(check: Callable[[], Any], timeout: float = 8.0) -> Any:
    """Poll ``check`` (an async callable) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


# -- extend and move ---------------------------------------------------------------------------
async def test_a_player_extends_and_moves_a_reservation_over_rest(api: Api) -> None:
    p1 = await api.headers("player1")
    made = await reserve(api, p1, "pc-01", 60)
    end = datetime.fromisoformat(made["ends_at"]) + timedelta(minutes=30)
    longer = await api.client.post(
        f"/reservations/{made['id']}/extend", headers=p1, json={"ends_at": end.isoformat()}
    )
    assert longer.status_code == 200, longer.text
    assert datetime.fromisoformat(longer.json()["ends_at"]) == end
    moved = await api.client.post(
        f"/reservations/{made['id']}/move", headers=p1, json={"device_id": "pc-02"}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["device_id"], moved.json()["code"]) == ("pc-02", made["code"])
    assert moved.json()["updated_at"]


async def test_a_move_into_someone_elses_slot_is_409_naming_it_and_changes_nothing(
    api: Api,
) -> None:
    p1, p2 = await api.headers("player1"), await api.headers("player2")
    mine = await reserve(api, p1, "pc-01", 60)
    theirs = await reserve(api, p2, "pc-02", 60)
    clash = await api.client.post(
        f"/reservations/{mine['id']}/move", headers=p1, json={"device_id": "pc-02"}
    )
    body = assert_problem(clash, 409, "conflict")
    assert body["conflict"]["reservation_id"] == theirs["id"]  # type: ignore[index]
    still = (await api.client.get(f"/reservations/{mine['id']}", headers=p1)).json()
    assert (still["device_id"], still["updated_at"]) == ("pc-01", mine["updated_at"])
    nowhere = await api.client.post(
        f"/reservations/{mine['id']}/move", headers=p1, json={"device_id": "pc-01"}
    )
    assert_problem(nowhere, 422, "invalid")
    shorter = await api.client.post(
        f"/reservations/{mine['id']}/extend", headers=p1, json={"ends_at": mine["starts_at"]}
    )
    assert_problem(shorter, 422, "invalid")
    others = await api.client.post(
        f"/reservations/{theirs['id']}/extend", headers=p1, json={"ends_at": mine["ends_at"]}
    )
    assert_problem(others, 404, "not_found")


# -- parties -----------------------------------------------------------------------------------
async def test_a_party_of_three_over_rest_gets_three_codes_and_cancels_whole(api: Api) -> None:
    p1, p2 = await api.headers("player1"), await api.headers("player2")
    booked = await api.client.post(
        "/reservations/party", headers=p1, json={"seats": 3, "kind": "pc", **slot(60, 60)}
    )
    assert booked.status_code == 200, booked.text
    party = booked.json()
    seats = party["reservations"]
    assert [s["device_id"] for s in seats] == ["pc-01", "pc-02", "pc-03"]
    assert len({s["code"] for s in seats}) == 3
    assert {s["party_id"] for s in seats} == {party["party_id"]}
    assert all(s["created_at"] for s in seats)
    clash = await api.client.post(
        "/reservations/party", headers=p2, json={"devices": ["pc-04", "pc-03"], **slot(60, 60)}
    )
    body = assert_problem(clash, 409, "conflict")
    assert body["seat"] == "pc-03"
    assert body["conflict"]["reservation_id"] == seats[2]["id"]  # type: ignore[index]
    theirs = await api.client.post(f"/reservations/party/{party['party_id']}/cancel", headers=p2)
    assert_problem(theirs, 404, "not_found")
    gone = await api.client.post(f"/reservations/party/{party['party_id']}/cancel", headers=p1)
    assert gone.status_code == 200, gone.text
    assert {s["status"] for s in gone.json()["reservations"]} == {"cancelled"}
    bad = await api.client.post("/reservations/party", headers=p1, json={"seats": 2, **slot(60)})
    assert_problem(bad, 422, "invalid")  # neither devices nor kind


# -- the waitlist ------------------------------------------------------------------------------
async def test_staff_see_the_line_move_an_entry_to_the_head_and_remove_one(api: Api) -> None:
    admin = await api.headers("admin")
    heads = [await api.headers(p) for p in ("player1", "player2", "player3")]
    joined = []
    for h in heads:
        reply = await api.client.post(
            "/waitlist", headers=h, json={"kind": "racing", "minutes": 30}
        )
        assert reply.status_code == 200, reply.text
        joined.append(reply.json())
    assert [j["position"] for j in joined] == [1, 2, 3]
    assert all(j["expected_at"] for j in joined)
    mine = (await api.client.get("/waitlist", headers=heads[1])).json()
    assert [(e["id"], e["position"], e.get("user")) for e in mine] == [(joined[1]["id"], 2, None)]
    moved = await api.client.post(
        f"/waitlist/{joined[2]['id']}/move", headers=admin, json={"position": 1}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["position"] == 1
    line = (await api.client.get("/waitlist", headers=admin)).json()
    assert [(e["user"], e["position"]) for e in line] == [
        ("player3", 1),
        ("player1", 2),
        ("player2", 3),
    ]
    forbidden = await api.client.post(
        f"/waitlist/{joined[0]['id']}/move", headers=heads[0], json={"position": 1}
    )
    assert_problem(forbidden, 403, "forbidden")
    removed = await api.client.delete(f"/waitlist/{joined[0]['id']}", headers=admin)
    assert removed.status_code == 200, removed.text
    assert removed.json()["status"] == "removed"

    async def told() -> bool:
        page = await api.client.get("/me/notifications", headers=heads[0])
        return any(n["type"] == "waitlist_removed" for n in page.json()["items"])

    await eventually(told)
    left = await api.client.delete(f"/waitlist/{joined[1]['id']}", headers=heads[1])
    assert left.json()["status"] == "left"
    again = await api.client.delete(f"/waitlist/{joined[1]['id']}", headers=heads[1])
    assert_problem(again, 409, "invalid_transition")


async def test_a_player_joins_gets_the_machine_held_and_takes_it_over_rest(
    api: Api, tmp_path: Path
) -> None:
    p1 = await api.headers("player1")
    joined = await api.client.post("/waitlist", headers=p1, json={"kind": "console", "minutes": 30})
    assert joined.status_code == 200, joined.text
    device = machine(api.broker, "console-01", tmp_path)
    task = await start(device)
    try:

        async def offered() -> Any:
            entries = (await api.client.get("/waitlist", headers=p1)).json()
            return entries and entries[0]["offer"]

        offer = await eventually(offered)
        assert offer["device_id"] == "console-01"
        held = (await api.client.get(f"/reservations/{offer['offer_id']}", headers=p1)).json()
        assert (held["status"], held["hold_until"]) == ("held", offer["hold_until"])
        taken = await api.client.post(f"/waitlist/offers/{offer['offer_id']}/take", headers=p1)
        assert taken.status_code == 200, taken.text
        assert taken.json()["status"] == "pending"
        assert taken.json()["hold_until"] is None
        twice = await api.client.post(f"/waitlist/offers/{offer['offer_id']}/decline", headers=p1)
        assert_problem(twice, 409, "invalid_transition")
    finally:
        await stop(device, task)
    assert (await api.client.get("/waitlist", headers=p1)).json() == []


# -- the no-show policy ------------------------------------------------------------------------
@pytest.fixture
async def no_show(api: Api, db_url: str) -> None:
    """An approved booking of player1 that started a minute ago: nobody checks in."""
    now = datetime.now(UTC)
    engine = make_engine(db_url)
    try:
        async with AsyncSession(engine) as session:
            session.add(
                Reservation(
                    id="gone1",
                    device_id="pc-04",
                    player="player1",
                    starts_at=now - timedelta(minutes=1),
                    ends_at=now + timedelta(minutes=30),
                    status="approved",
                    code="111111",
                    request_key="player1:seeded-gone1",
                )
            )
            await session.commit()
    finally:
        await engine.dispose()


async def test_a_suspension_shows_in_me_refuses_booking_and_staff_lift_it(
    api: Api, no_show: None
) -> None:
    p1, admin = await api.headers("player1"), await api.headers("admin")

    async def suspended() -> Any:
        me = (await api.client.get("/me", headers=p1)).json()
        return me.get("suspended_until") and me

    me = await eventually(suspended)
    assert me["strikes"] == 0  # the suspension reset the count
    until = datetime.fromisoformat(me["suspended_until"])
    assert until > datetime.now(UTC) + timedelta(days=6)
    refused = await api.client.post(
        "/reservations", headers=p1, json={"device_id": "pc-01", **slot(60)}
    )
    body = assert_problem(refused, 403, "suspended")
    assert datetime.fromisoformat(str(body["until"])) == until
    listed = (await api.client.get("/users", headers=admin)).json()
    (row,) = [u for u in listed if u["username"] == "player1"]
    assert row["suspended_until"] == me["suspended_until"]
    not_yours = await api.client.delete("/users/player1/suspension", headers=p1)
    assert_problem(not_yours, 403, "forbidden")
    lifted = await api.client.delete("/users/player1/suspension", headers=admin)
    assert lifted.status_code == 200, lifted.text
    assert (lifted.json().get("suspended_until"), lifted.json()["strikes"]) == (None, 0)
    assert (await reserve(api, p1, "pc-01", 60))["status"] == "pending"


# -- roles of accounts made before the venue topic existed -------------------------------------
async def test_a_player_role_made_before_the_venue_topic_gains_it_with_new_credentials(
    api: Api,
) -> None:
    topics = api.broker.topics
    state = api.app.state.plaza
    venue = acl.Acl("publishClientSend", topics.venue_request("player2"))
    old = {"command": "removeRoleACL", "rolename": "player-player2", "acltype": venue.acltype}
    (answer,) = await state.link.dynsec([{**old, "topic": venue.topic}])
    assert "error" not in answer, answer
    headers = await api.headers("player2")
    creds = (await api.client.post("/auth/mqtt", headers=headers)).json()
    async with ws_client(api, creds) as client:
        await client.subscribe(topics.replies("player2"), qos=1)
        body = {"request_id": "old-role", "op": "join_waitlist", "kind": "pc", "minutes": 30}
        await client.publish(topics.venue_request("player2"), json.dumps(body), qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                reply = json.loads(message.payload)
                if reply.get("request_id") == "old-role":
                    assert reply["ok"], reply
                    assert reply["entry"]["position"] == 1
                    break
