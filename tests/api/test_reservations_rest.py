"""Reservations over REST: lists from SQL (filters, paging, players see their own), changes
through the bridge with its reply mapped to HTTP, and the end-to-end path an admin's approval
takes to the player's MQTT client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.conftest import Api, assert_problem
from tests.api.helpers import reserve, slot
from tests.integration.reserving import Requester

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_player_reserves_over_rest_and_sees_it_pending_with_its_code(api: Api) -> None:
    player = await api.headers("player1")
    body = await reserve(api, player, "pc-01", 30)
    assert body["status"] == "pending"
    assert body["user"] == "player1"
    assert body["code"]
    got = await api.client.get(f"/reservations/{body['id']}", headers=player)
    assert got.status_code == 200
    assert got.json()["status"] == "pending"


async def test_players_list_only_their_own_and_cannot_ask_for_others(api: Api) -> None:
    p1, p2 = await api.headers("player1"), await api.headers("player2")
    mine = await reserve(api, p1, "pc-01", 30)
    theirs = await reserve(api, p2, "pc-02", 30)
    listed = (await api.client.get("/reservations", headers=p1)).json()
    assert [r["id"] for r in listed["items"]] == [mine["id"]]
    reply = await api.client.get("/reservations", headers=p1, params={"user": "player2"})
    assert_problem(reply, 403, "forbidden")
    # someone else's reservation does not exist for them: 404, not 403 (no probing)
    reply = await api.client.get(f"/reservations/{theirs['id']}", headers=p1)
    assert_problem(reply, 404, "not_found")
    reply = await api.client.post(f"/reservations/{theirs['id']}/cancel", headers=p1)
    assert_problem(reply, 404, "not_found")


async def test_admins_filter_by_device_status_user_and_time_and_page_with_a_cursor(
    api: Api,
) -> None:
    admin = await api.headers("admin")
    p1 = await api.headers("player1")
    made = [await reserve(api, p1, "pc-01", 30 + 40 * i) for i in range(3)]
    await reserve(api, await api.headers("player2"), "pc-02", 30)
    query: dict[str, str | int] = {
        "device_id": "pc-01",
        "status": "pending",
        "user": "player1",
        "limit": 2,
    }
    page1 = (await api.client.get("/reservations", headers=admin, params=query)).json()
    assert [r["id"] for r in page1["items"]] == [m["id"] for m in made[:2]]
    assert page1["next_cursor"]
    page2 = (
        await api.client.get(
            "/reservations", headers=admin, params={**query, "cursor": page1["next_cursor"]}
        )
    ).json()
    assert [r["id"] for r in page2["items"]] == [made[2]["id"]]
    assert page2["next_cursor"] is None
    window = {
        "start": (datetime.now(UTC) + timedelta(minutes=65)).isoformat(),
        "end": (datetime.now(UTC) + timedelta(minutes=75)).isoformat(),
    }
    hits = (await api.client.get("/reservations", headers=admin, params=window)).json()
    assert [r["id"] for r in hits["items"]] == [made[1]["id"]]
    everyone = (await api.client.get("/reservations", headers=admin)).json()
    assert len(everyone["items"]) == 4
    bad = await api.client.get("/reservations", headers=admin, params={"cursor": "garbage!"})
    assert_problem(bad, 422, "validation_error")
    bad = await api.client.get("/reservations", headers=admin, params={"status": "lost"})
    assert_problem(bad, 422, "validation_error")


async def test_an_overlapping_booking_is_409_naming_the_slot_it_conflicts_with(api: Api) -> None:
    """(Approving two overlapping pending ones is proven in tests/integration.)"""
    admin = await api.headers("admin")
    first = await reserve(api, await api.headers("player1"), "pc-01", 30)
    approved = await api.client.post(f"/reservations/{first['id']}/approve", headers=admin)
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    refused = await api.client.post(
        "/reservations",
        headers=await api.headers("player2"),
        json={"device_id": "pc-01", **slot(40)},
    )
    body = assert_problem(refused, 409, "conflict")
    assert body["conflict"]["reservation_id"] == first["id"]  # type: ignore[index]
    assert body["conflict"]["status"] == "approved"  # type: ignore[index]


async def test_players_cannot_approve_or_reject_but_cancel_their_own(api: Api) -> None:
    p1 = await api.headers("player1")
    mine = await reserve(api, p1, "pc-01", 30)
    for op in ("approve", "reject"):
        reply = await api.client.post(f"/reservations/{mine['id']}/{op}", headers=p1)
        assert_problem(reply, 403, "forbidden")
    cancelled = await api.client.post(f"/reservations/{mine['id']}/cancel", headers=p1)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await api.client.post(f"/reservations/{mine['id']}/cancel", headers=p1)
    assert_problem(again, 409, "invalid_transition")


async def test_an_admin_rejects_and_books_for_a_player(api: Api) -> None:
    admin = await api.headers("admin")
    booked = await reserve(api, admin, "pc-04", 30, user="player3")
    assert booked["user"] == "player3"
    for _ in range(100):  # low priority: it comes with the next digest (0.3 s in tests)
        notes = await api.client.get("/me/notifications", headers=await api.headers("player3"))
        if notes.json()["items"]:
            break
        await asyncio.sleep(0.05)
    assert [n["type"] for n in notes.json()["items"]] == ["reservation_created"]
    rejected = await api.client.post(f"/reservations/{booked['id']}/reject", headers=admin)
    assert rejected.json()["status"] == "rejected"
    reply = await api.client.post(
        "/reservations", headers=admin, json={"device_id": "pc-04", **slot(30), "user": "ghost"}
    )
    assert_problem(reply, 404, "not_found")


async def test_the_same_idempotency_key_applies_once(api: Api) -> None:
    p1 = await api.headers("player1")
    headers = {**p1, "Idempotency-Key": "book-once-1"}
    body = {"device_id": "console-01", **slot(30)}
    first = await api.client.post("/reservations", headers=headers, json=body)
    second = await api.client.post("/reservations", headers=headers, json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    listed = (await api.client.get("/reservations", headers=p1)).json()
    assert len(listed["items"]) == 1
    bad = await api.client.post(
        "/reservations", headers={**p1, "Idempotency-Key": "no spaces"}, json=body
    )
    assert_problem(bad, 422, "validation_error")


async def test_an_unknown_machine_and_a_bad_slot_get_the_bridges_codes(api: Api) -> None:
    p1 = await api.headers("player1")
    reply = await api.client.post(
        "/reservations", headers=p1, json={"device_id": "nope", **slot(30)}
    )
    assert_problem(reply, 404, "not_found")
    reply = await api.client.post(
        "/reservations", headers=p1, json={"device_id": "pc-01", **slot(-120)}
    )
    assert_problem(reply, 422, "in_past")


async def test_an_admins_rest_approval_reaches_the_players_mqtt_client(api: Api) -> None:
    """End to end: REST -> api -> MQTT request -> bridge -> SQL -> outbox -> the player's
    notifications topic, on the player's own broker connection."""
    booked = await reserve(api, await api.headers("player1"), "racing-01", 30)
    secrets = api.broker.secrets
    async with Requester(api.broker, "player1", secrets.players["player1"]) as phone:
        admin = await api.headers("admin")
        reply = await api.client.post(f"/reservations/{booked['id']}/approve", headers=admin)
        assert reply.status_code == 200
        note = await phone.notification("reservation_approved", timeout=5)
        assert note.reservation is not None
        assert note.reservation.id == booked["id"]
        assert note.priority == "high"


async def test_a_silent_bridge_is_a_504_and_a_missing_broker_a_503(api: Api) -> None:
    admin = await api.headers("admin")
    booked = await reserve(api, await api.headers("player1"), "pc-01", 30)
    api.app.state.plaza.link.settings = api.settings.model_copy(update={"bridge_timeout": 0.4})
    await api.bridge.stop()
    reply = await api.client.post(f"/reservations/{booked['id']}/approve", headers=admin)
    assert_problem(reply, 504, "bridge_timeout")
    api.broker.broker.stop()
    for _ in range(100):
        if not api.app.state.plaza.link.connected.is_set():
            break
        await asyncio.sleep(0.05)
    reply = await api.client.post(f"/reservations/{booked['id']}/approve", headers=admin)
    assert_problem(reply, 503, "broker_unavailable")
