"""Contract nits real clients found (issue 13, finding 13): REST bodies as strict as MQTT
payloads, ISO 8601 everywhere in REST, a new reservation with its times, an Idempotency-Key
bound to its request, and no sentinel values for a machine that never connected."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest

from api import idempotency
from plaza.messages import BoardEntry
from tests.api.conftest import Api, assert_problem
from tests.api.helpers import reserve, slot
from tests.conftest import Watch

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/devices/pc-01", {"maintenance": "yes"}),
        ("/devices/pc-01", {"maintenance": "true"}),
        ("/devices/pc-01", {"auto_approve": 1}),
        ("/devices/pc-01", {"name": 7}),
        ("/me/notifications/read", {"up_to": "3"}),
        ("/me/notifications/read", {"up_to": 3.5}),
        ("/me/notifications/read", {"seqs": [True]}),
        ("/devices", {"id": "pc-77", "name": "PC 77", "maintenance": "no"}),
    ],
)
async def test_a_rest_body_is_as_strict_as_an_mqtt_payload(
    api: Api, path: str, body: dict[str, object]
) -> None:
    admin = await api.headers("admin")
    method = api.client.patch if path.startswith("/devices/") else api.client.post
    reply = await method(path, headers=admin, json=body)
    assert_problem(reply, 422, "validation_error")


async def test_a_strict_body_still_takes_json_booleans_times_and_enum_values(api: Api) -> None:
    admin = await api.headers("admin")
    reply = await api.client.patch("/devices/pc-01", headers=admin, json={"maintenance": True})
    assert reply.status_code == 200, reply.text
    assert reply.json()["maintenance"] is True
    notice = {"title": "t", "message": "m", "priority": "high"}
    assert (await api.client.post("/notices", headers=admin, json=notice)).status_code == 201
    await reserve(api, await api.headers("player1"), "pc-02", 30)  # ISO 8601 times
    read = await api.client.post(
        "/me/notifications/read", headers=admin, json={"up_to": 3.0}
    )  # JSON Schema's integer
    assert read.status_code == 200, read.text


async def test_a_rest_conflict_names_the_other_slot_in_iso_8601(api: Api) -> None:
    first = await reserve(api, await api.headers("player1"), "pc-03", 30)
    refused = await api.client.post(
        "/reservations",
        headers=await api.headers("player2"),
        json={"device_id": "pc-03", **slot(40)},
    )
    conflict = assert_problem(refused, 409, "conflict")["conflict"]
    assert isinstance(conflict, dict)
    assert datetime.fromisoformat(conflict["starts_at"]) == datetime.fromisoformat(
        first["starts_at"]
    )
    assert datetime.fromisoformat(conflict["ends_at"]) == datetime.fromisoformat(first["ends_at"])


async def test_a_new_reservation_comes_back_with_the_times_a_get_shows(api: Api) -> None:
    player = await api.headers("player1")
    made = await reserve(api, player, "pc-04", 30)
    assert made["created_at"] is not None
    assert made["updated_at"] is not None
    got = (await api.client.get(f"/reservations/{made['id']}", headers=player)).json()
    assert made == got
    cancelled = await api.client.post(f"/reservations/{made['id']}/cancel", headers=player)
    assert cancelled.json()["updated_at"] is not None
    assert cancelled.json()["created_at"] == made["created_at"]


async def test_an_idempotency_key_reused_for_another_request_is_422(api: Api) -> None:
    p1 = await api.headers("player1")
    keyed = {**p1, "Idempotency-Key": "k-reuse-1"}
    body = {"device_id": "console-01", **slot(30)}
    first = await api.client.post("/reservations", headers=keyed, json=body)
    assert first.status_code == 200, first.text
    again = await api.client.post("/reservations", headers=keyed, json=dict(reversed(body.items())))
    assert again.json()["id"] == first.json()["id"], "the same request, however it is written"
    other = await api.client.post("/reservations", headers=keyed, json={**body, **slot(90)})
    assert_problem(other, 422, "idempotency_key_reused")
    elsewhere = await api.client.post(f"/reservations/{first.json()['id']}/cancel", headers=keyed)
    assert_problem(elsewhere, 422, "idempotency_key_reused")
    # a key is the caller's own: another player's same key is another request
    theirs = {**await api.headers("player2"), "Idempotency-Key": "k-reuse-1"}
    reply = await api.client.post("/reservations", headers=theirs, json={**body, **slot(200)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] != first.json()["id"]
    listed = (await api.client.get("/reservations", headers=p1)).json()
    assert [r["id"] for r in listed["items"]] == [first.json()["id"]]


async def test_a_machine_that_never_connected_has_no_epoch_or_since_on_the_board(api: Api) -> None:
    admin = await api.headers("admin")
    topic = api.broker.topics.board("vr-42")
    async with Watch(api.broker.observer(), [topic]) as watch:
        reply = await api.client.post(
            "/devices", headers=admin, json={"id": "vr-42", "name": "VR 42", "kind": "vr"}
        )
        assert reply.status_code == 201, reply.text
        seen = await watch.wait_for(lambda s: s.topic == topic and bool(s.payload))
    raw = json.loads(seen.payload)
    assert "epoch" not in raw
    assert "since" not in raw
    entry = BoardEntry.model_validate_json(seen.payload)
    assert (entry.epoch, entry.since, entry.online) == (None, None, False)


async def test_idempotency_keys_are_forgotten_after_their_time(api: Api) -> None:
    p1 = await api.headers("player1")
    keyed = {**p1, "Idempotency-Key": "k-old-1"}
    first = await api.client.post(
        "/reservations", headers=keyed, json={"device_id": "pc-02", **slot(30)}
    )
    assert first.status_code == 200, first.text
    state = api.app.state.plaza
    assert await idempotency.prune(state) == 0
    state.settings = state.settings.model_copy(update={"idempotency_ttl": 0.001})
    await asyncio.sleep(0.01)
    assert await idempotency.prune(state) == 1
