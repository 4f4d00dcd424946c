"""The floor map and the occupancy report over REST: zones replaced and read back, every cap
refused with its code, admins only where it says so; the utilization report as JSON and CSV
with its range caps."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from plaza import floormap, utilization
from plaza.settings import Settings
from tests.api.conftest import Api, assert_problem, running_api
from tests.conftest import BrokerHandle, RunningService

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SQUARE: list[list[float]] = [[0, 0], [10, 0], [10, 8], [0, 8]]


def zone(zone_id: str, outline: Sequence[Sequence[float]] = SQUARE) -> dict[str, object]:
    return {"id": zone_id, "name": zone_id.upper(), "outline": outline}


async def test_staff_replace_the_zones_and_everyone_reads_them(api: Api) -> None:
    admin, p1 = await api.headers("admin"), await api.headers("player1")
    empty = await api.client.get("/floor", headers=p1)
    assert empty.status_code == 200
    assert empty.json() == {
        "size": floormap.FLOOR_SIZE,
        "zones": [],
        "limits": {"zones": 32, "min_points": 3, "max_points": 32},
    }
    body = {"zones": [zone("pc-zone"), zone("sim-bay", [[12, 0], [20.04, 0], [16, 9]])]}
    put = await api.client.put("/floor", headers=admin, json=body)
    assert put.status_code == 200, put.text
    read = (await api.client.get("/floor", headers=p1)).json()
    assert read == put.json()
    assert read["zones"] == [
        {"id": "pc-zone", "name": "PC-ZONE", "outline": SQUARE},
        {"id": "sim-bay", "name": "SIM-BAY", "outline": [[12, 0], [20.0, 0], [16, 9]]},
    ]
    # a zone machines stand in stays (the editor checks first; the server too)
    in_use = await api.client.put("/floor", headers=admin, json={"zones": [zone("only")]})
    assert_problem(in_use, 409, "zone_in_use")
    assert "pc-zone" in in_use.json()["detail"]
    assert "sim-bay" in in_use.json()["detail"]
    assert (await api.client.get("/floor", headers=p1)).json() == read, "nothing changed"
    kept = [zone("pc-zone"), zone("sim-bay", [[12, 0], [20.04, 0], [16, 9]])]
    await api.client.put("/floor", headers=admin, json={"zones": [*kept, zone("lounge")]})
    again = await api.client.put("/floor", headers=admin, json={"zones": kept})
    assert [z["id"] for z in again.json()["zones"]] == ["pc-zone", "sim-bay"], "replaced"
    assert_problem(await api.client.put("/floor", headers=p1, json=body), 403, "forbidden")
    assert_problem(await api.client.get("/floor"), 401, "not_authenticated")


BAD_FLOORS = [
    ([zone(f"z{i}") for i in range(floormap.MAX_ZONES + 1)], "validation_error"),
    ([zone("a", [[0, 0]] * (floormap.MAX_OUTLINE_POINTS + 1))], "validation_error"),
    ([zone("a", SQUARE[:2])], "bad_outline"),
    ([zone("a", [[0, 0], [1, 1], [2, 2]])], "bad_outline"),
    ([zone("a", [[0, 0], [300, 0], [0, 5]])], "out_of_bounds"),
    ([zone("a"), zone("a")], "duplicate_zone"),
]


async def test_a_bad_floor_is_refused_with_its_code_and_the_zones_stay(api: Api) -> None:
    admin = await api.headers("admin")
    await api.client.put("/floor", headers=admin, json={"zones": [zone("kept")]})
    for zones, code in BAD_FLOORS:
        refused = await api.client.put("/floor", headers=admin, json={"zones": zones})
        assert_problem(refused, 422, code)
    kept = (await api.client.get("/floor", headers=admin)).json()["zones"]
    assert [z["id"] for z in kept] == ["kept"]


async def test_the_most_zones_with_the_most_points_fit_in_a_body(api: Api) -> None:
    admin = await api.headers("admin")
    ring = [[float(i), float(i * i % 7)] for i in range(floormap.MAX_OUTLINE_POINTS - 1)]
    ring.append([0.0, 150.5])
    body = {"zones": [zone(f"zone-{i:02d}", ring) for i in range(floormap.MAX_ZONES)]}
    put = await api.client.put("/floor", headers=admin, json=body)
    assert put.status_code == 200, put.text
    assert len(put.json()["zones"]) == floormap.MAX_ZONES


async def test_utilization_is_for_staff_and_its_range_is_capped(api: Api) -> None:
    admin, p1 = await api.headers("admin"), await api.headers("player1")
    assert_problem(await api.client.get("/admin/utilization", headers=p1), 403, "forbidden")
    end = datetime(2025, 3, 10, tzinfo=UTC)
    cases = [
        ({"from": end.isoformat(), "to": end.isoformat()}, "bad_range"),
        (
            {
                "from": (end - timedelta(days=utilization.MAX_DAYS, seconds=1)).isoformat(),
                "to": end.isoformat(),
            },
            "range_too_long",
        ),
        ({"from": "2025-03-01T00:00:00", "to": end.isoformat()}, "naive_time"),
        ({"format": "xml"}, "validation_error"),
        ({"zone": "x" * 41}, "validation_error"),
    ]
    for params, code in cases:
        reply = await api.client.get("/admin/utilization", headers=admin, params=params)
        assert_problem(reply, 422, code)
    longest = {
        "from": (end - timedelta(days=utilization.MAX_DAYS)).isoformat(),
        "to": end.isoformat(),
    }
    reply = await api.client.get("/admin/utilization", headers=admin, params=longest)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["hours"]) == utilization.MAX_DAYS * 24 * 3, "3 zones in the fleet"


async def test_utilization_as_json_and_as_csv(api: Api) -> None:
    admin = await api.headers("admin")
    params = {"from": "2025-03-10T00:00:00+09:00", "to": "2025-03-10T02:00:00+09:00"}
    body = (await api.client.get("/admin/utilization", headers=admin, params=params)).json()
    assert (body["sessions"], body["average_session_minutes"], body["no_show_rate"]) == (
        0,
        None,
        None,
    )
    assert len(body["heatmap"]) == 2
    assert {(c["weekday"], c["hour"]) for c in body["heatmap"]} == {(0, 0), (0, 1)}
    zones = sorted({h["zone"] for h in body["hours"]})
    reply = await api.client.get(
        "/admin/utilization", headers=admin, params={**params, "format": "csv", "zone": zones[0]}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["content-disposition"].startswith("attachment; filename=")
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows[0] == [
        "zone",
        "hour_start",
        "machines",
        "occupancy",
        "in_use_minutes",
        "booked_minutes",
    ]
    assert [r[:2] for r in rows[1:]] == [
        [zones[0], "2025-03-09T15:00:00+00:00"],
        [zones[0], "2025-03-09T16:00:00+00:00"],
    ]
    assert {r[3] for r in rows[1:]} == {"0.0000"}


async def test_floor_writes_are_capped_for_the_venue_because_each_reaches_every_screen(
    api_settings: Settings, broker: BrokerHandle, bridge: RunningService
) -> None:
    # every saved floor is announced to every open screen (up to 32 KiB each): a token
    # bucket for the whole venue, whoever writes; refused floors are charged too
    settings = api_settings.model_copy(
        update={"floor_writes_burst": 3, "floor_writes_per_minute": 1.0}
    )
    async with running_api(settings, broker, bridge) as api:
        admin = await api.headers("admin")
        for name in ("one", "two"):
            put = await api.client.put("/floor", headers=admin, json={"zones": [zone(name)]})
            assert put.status_code == 200, put.text
        bad = {"zones": [zone("a", SQUARE[:2])]}
        assert_problem(await api.client.put("/floor", headers=admin, json=bad), 422, "bad_outline")
        refused = await api.client.put("/floor", headers=admin, json={"zones": [zone("three")]})
        assert_problem(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1
        kept = (await api.client.get("/floor", headers=admin)).json()["zones"]
        assert [z["id"] for z in kept] == ["two"]
