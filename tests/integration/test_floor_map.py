"""The floor map end to end, on SQLite and PostgreSQL: a machine moved over REST reaches every
board with its place (``pos`` in its retained entry), a bad place is refused and publishes
nothing, a restarted bridge publishes the place from SQL, and a party asking for seats gets the
machines that stand together on the map (the bridge reads the places with the batch)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plaza.messages import BoardEntry
from plaza.settings import Settings
from tests.api.conftest import Api, assert_problem, running_api
from tests.api.helpers import slot
from tests.conftest import BrokerHandle, RunningService, Watch, running_bridge

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def api(
    api_settings: Settings, broker: BrokerHandle, bridge: RunningService
) -> AsyncIterator[Api]:
    async with running_api(api_settings, broker, bridge) as running:
        yield running


def entry_of(payload: bytes) -> BoardEntry:
    return BoardEntry.model_validate_json(payload)


def placed(device: str, x: float, y: float) -> Any:
    def check(seen: Any) -> bool:
        if seen.topic != f"plaza/board/{device}" or not seen.payload:
            return False
        pos = entry_of(seen.payload).pos
        return pos is not None and (pos.x, pos.y) == (x, y)

    return check


async def test_a_moved_machine_reaches_the_board_with_its_place_and_a_bad_place_changes_nothing(
    api: Api, broker: BrokerHandle, bridge_settings: Settings
) -> None:
    admin = await api.headers("admin")
    async with Watch(broker.observer(), [broker.topics.board("pc-02")]) as watch:
        moved = await api.client.patch("/devices/pc-02", headers=admin, json={"x": 12.34, "y": 5})
        assert moved.status_code == 200, moved.text
        assert (moved.json()["x"], moved.json()["y"]) == (12.3, 5.0), "snapped to 10 cm"
        first = entry_of((await watch.wait_for(placed("pc-02", 12.3, 5.0))).payload)
        for bad, code in (
            ({"x": 200.5, "y": 1}, "out_of_bounds"),
            ({"x": -1, "y": 1}, "out_of_bounds"),
            ({"x": 3}, "validation_error"),
        ):
            refused = await api.client.patch("/devices/pc-02", headers=admin, json=bad)
            assert_problem(refused, 422, code)
        row = (await api.client.get("/devices/pc-02", headers=admin)).json()
        assert (row["x"], row["y"]) == (12.3, 5.0)
        await api.client.patch("/devices/pc-02", headers=admin, json={"x": 14, "y": 5})
        second = entry_of((await watch.wait_for(placed("pc-02", 14.0, 5.0))).payload)
        assert second.version == first.version + 1, "the refused moves published nothing"
    # a bridge started afresh publishes the place it reads from SQL (the retained entry is
    # cleared first, so what arrives is the new bridge's)
    await api.bridge.stop()
    async with broker.stand_in_bridge() as stand_in:
        await stand_in.publish(broker.topics.board("pc-02"), b"", qos=1, retain=True)
    async with (
        Watch(broker.observer(), [broker.topics.board("pc-02")]) as watch,
        running_bridge(bridge_settings),
    ):
        # (the new bridge reads the retained board back first: board sync)
        again = entry_of((await watch.wait_for(placed("pc-02", 14.0, 5.0), timeout=15)).payload)
        assert again.version == second.version, "the same entry, from SQL"


async def test_a_party_gets_the_seats_next_to_each_other_on_the_map(api: Api) -> None:
    admin, p1 = await api.headers("admin"), await api.headers("player1")
    pcs = [d["id"] for d in (await api.client.get("/devices", headers=admin)).json()]
    pcs = sorted(d for d in pcs if d.startswith("pc-"))
    assert len(pcs) >= 4
    # by id pc-01 and pc-02 are neighbours; on the floor pc-01 stands beside the last one
    places = {pcs[0]: (10, 10), pcs[1]: (40, 10), pcs[2]: (70, 10), pcs[-1]: (12, 10)}
    for device, (x, y) in places.items():
        reply = await api.client.patch(f"/devices/{device}", headers=admin, json={"x": x, "y": y})
        assert reply.status_code == 200, reply.text
    booked = await api.client.post(
        "/reservations/party", headers=p1, json={"seats": 2, "kind": "pc", **slot(120, 60)}
    )
    assert booked.status_code == 200, booked.text
    seats = sorted(r["device_id"] for r in booked.json()["reservations"])
    assert seats == sorted([pcs[0], pcs[-1]]), json.dumps(booked.json())


async def test_new_zones_reach_every_screen_live_and_a_refused_floor_publishes_nothing(
    api: Api, broker: BrokerHandle
) -> None:
    # screens load GET /floor at start; a change while they are open comes as an event on
    # `events/floor` (a player's role reads it) carrying the whole floor, as GET /floor says
    admin = await api.headers("admin")
    outline = [[0, 0], [6, 0], [6, 4], [3, 5], [0, 4]]
    body = {"zones": [{"id": "pc-zone", "name": "PC zone", "outline": outline}]}
    player = broker.client("player1", broker.secrets.players["player1"])
    async with Watch(player, [broker.topics.events_tree]) as watch:
        put = await api.client.put("/floor", headers=admin, json=body)
        assert put.status_code == 200, put.text
        seen = await watch.wait_for(lambda s: s.topic == broker.topics.floor_events)
        assert not seen.retain
        event = json.loads(seen.payload)
        assert event["type"] == "floor_changed"
        assert event["floor"] == put.json()
        assert event["floor"]["zones"][0]["outline"] == outline
        first_ts = event["timestamp"]
        too_many = [[i % 2, i / 10] for i in range(33)]
        off_the_floor = [[0, 0], [250, 0], [0, 9]]
        for points, code in ((too_many, "validation_error"), (off_the_floor, "out_of_bounds")):
            zones = [{"id": "pc-zone", "name": "PC", "outline": points}]
            assert_problem(
                await api.client.put("/floor", headers=admin, json={"zones": zones}), 422, code
            )
        again = {"zones": [{**body["zones"][0], "name": "PCs"}]}
        assert (await api.client.put("/floor", headers=admin, json=again)).status_code == 200
        last = await watch.wait_for(
            lambda s: s.topic == broker.topics.floor_events and b'"PCs"' in s.payload
        )
        assert len([s for s in watch.seen if s.topic == broker.topics.floor_events]) == 2, (
            "the refused floors published nothing"
        )
        assert json.loads(last.payload)["timestamp"] >= first_ts


async def test_floors_saved_at_once_are_one_at_a_time_and_announced_in_their_order(
    api: Api, broker: BrokerHandle
) -> None:
    """Two staff (or two tabs) saving at once: each save replaces the whole floor, so one
    must not interleave its delete and inserts with another's (PostgreSQL's READ COMMITTED
    let a second delete miss the first's new rows), and the last announcement a screen
    gets is the floor that stands."""
    admin = await api.headers("admin")
    square = [[0, 0], [6, 0], [6, 4], [0, 4]]
    keep = [
        {"id": z, "name": z, "outline": [[x + i * 10, y] for x, y in square]}
        for i, z in enumerate(("pc-zone", "sim-bay", "console-corner"))
    ]
    floors = [
        {"zones": [*keep, {"id": f"extra-{n}", "name": f"Extra {n}", "outline": square}]}
        for n in range(6)
    ]
    player = broker.client("player1", broker.secrets.players["player1"])
    async with Watch(player, [broker.topics.events_tree]) as watch:
        puts = await asyncio.gather(
            *(api.client.put("/floor", headers=admin, json=f) for f in floors)
        )
        assert [p.status_code for p in puts] == [200] * len(floors), [p.text for p in puts]
        stands = (await api.client.get("/floor", headers=admin)).json()
        assert len(stands["zones"]) == len(keep) + 1, "one floor, not a merge of several"
        events = await watch.wait_for(
            lambda s: (
                s.topic == broker.topics.floor_events
                and len([x for x in watch.seen if x.topic == broker.topics.floor_events])
                == len(floors)
            )
        )
        del events
        announced = [
            json.loads(s.payload)["floor"]
            for s in watch.seen
            if s.topic == broker.topics.floor_events
        ]
    assert announced[-1] == stands, "the last announcement is the floor that stands"
