"""The bridge's /metrics against a real broker and database: what a Prometheus scrape sees
after machines come online and players reserve."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.service import BridgeService
from plaza.settings import Settings
from tests.conftest import BrokerHandle, RunningService, Watch
from tests.integration.helpers import is_board, machine, start, stop
from tests.integration.reserving import Requester, slot

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        got = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert got.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(got.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def metered(
    bridge_settings: Settings, seeded: list[str]
) -> AsyncIterator[tuple[BridgeService, int]]:
    """A bridge serving /metrics on a free port."""
    running = RunningService(BridgeService(bridge_settings, metrics_port=0))
    service = await running.start()
    try:
        assert service.metrics_port is not None
        yield service, service.metrics_port
    finally:
        await running.stop()


async def test_a_scrape_counts_commands_by_result_times_them_and_counts_machines_online(
    broker: BrokerHandle,
    metered: tuple[BridgeService, int],
    seeded: list[str],
    tmp_path: Path,
) -> None:
    service, port = metered
    before = await scrape(port)
    assert value(before, "plaza_bridge_devices_online") == 0
    assert value(before, "plaza_bridge_command_seconds_count") == 0

    machines = [machine(broker, d, tmp_path) for d in seeded[:2]]
    async with Watch(broker.observer(), [broker.topics.all_board]) as w:
        tasks = [await start(m) for m in machines]
        for d in seeded[:2]:
            await w.wait_for(is_board(d, online=True))
        online = await scrape(port)
        assert service.tracker is not None
        assert value(online, "plaza_bridge_devices_online") == 2
        assert sum(v.online for v in service.tracker.views.values()) == 2

        mark = w.mark()
        machines[1].crash(down_for=60)  # no DISCONNECT: the broker sends its will
        await w.wait_for(is_board(seeded[1], online=False), since=mark)
        assert value(await scrape(port), "plaza_bridge_devices_online") == 1
        for m, task in zip(machines, tasks, strict=True):
            await stop(m, task)

    wanted = slot(7200, 30)
    async with (
        Requester(broker, "player1", broker.secrets.players["player1"]) as p1,
        Requester(broker, "player2", broker.secrets.players["player2"]) as p2,
    ):
        made = await p1.request(seeded[0], op="reserve", **wanted)
        clash = await p2.request(seeded[0], op="reserve", **wanted)
        rid = uuid.uuid4().hex
        await p2.send(seeded[0], b'{"request_id": "' + rid.encode() + b'", "op": 1}')
        bad = await p2.reply(rid)
    assert made.ok
    assert clash.error is not None
    assert clash.error.code == "conflict"
    assert bad.error is not None
    assert bad.error.code == "invalid"

    after = await scrape(port)
    assert value(after, "plaza_bridge_commands_total", op="reserve", result="ok") == 1
    assert value(after, "plaza_bridge_commands_total", op="reserve", result="conflict") == 1
    assert value(after, "plaza_bridge_commands_total", op="unknown", result="invalid") == 1
    assert value(after, "plaza_bridge_command_seconds_count") == 2, "refusals are not timed"
    took = value(after, "plaza_bridge_command_seconds_sum")
    assert 0 < took < 10
    assert value(after, "plaza_bridge_command_seconds_bucket", le="+Inf") == 2
    assert value(after, "plaza_bridge_requests_total") == 3
    assert value(after, "plaza_bridge_actors") >= 1
    assert value(after, "plaza_bridge_actor_queue_depth") == 0


async def test_a_scrape_of_any_other_path_is_404_and_the_bridge_goes_on(
    metered: tuple[BridgeService, int],
) -> None:
    service, port = metered
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        missing = await http.get("/")
        metrics = await http.get("/metrics")
    assert missing.status_code == 404
    assert metrics.status_code == 200
    assert service.ready.is_set()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_bridges_scrape_carries_the_brokers_own_figures(
    metered: tuple[BridgeService, int],
) -> None:
    """The bridge reads Mosquitto's $SYS tree on its connection and exports it beside its
    own figures, named plaza_broker_*: one scrape target shows broker and bridge."""
    service, port = metered
    wanted = {
        "plaza_broker_clients_connected",
        "plaza_broker_messages_received_total",
        "plaza_broker_publish_dropped_total",
        "plaza_broker_uptime_seconds",
        "plaza_broker_sys_updated_timestamp_seconds",
    }
    names: set[str] = set()
    # retained: the figures arrive with the subscription, one message each, so wait for all
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while not wanted <= names:
                names = {name for name, _ in await scrape(port)}
                await asyncio.sleep(0.1)
    assert wanted <= names, sorted(n for n in names if n.startswith("plaza_broker"))
    assert "plaza_bridge_board_published_total" in names  # the bridge's own, same scrape
    assert service.metrics.unknown_topics == 0  # every $SYS message was routed, none dropped
