"""bridge.metrics and bridge.metrics_http: what a Prometheus scrape of the bridge shows.

No broker and no database: a presence tracker, a desk whose actors only hold jobs, and the
HTTP endpoint on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.metrics import BridgeMetrics
from bridge.metrics_http import MetricsEndpoint, metrics_endpoint
from bridge.outbox import OutboxPublisher
from bridge.partitions import Ownership
from bridge.presence.board import DeviceView
from bridge.presence.tracker import PresenceTracker
from bridge.reservations.actors import ActorPool, Job
from bridge.reservations.batch_runner import BatchRunner
from bridge.reservations.intake import ReservationDesk
from bridge.reservations.timers import Timers
from plaza.messages import ErrorBody, Presence, Reply
from plaza.settings import Settings
from plaza.topics import RequestTopic, Topics

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

T = Topics()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _never_decided(_job: Job) -> Any:
    raise AssertionError("held jobs are never handed on")


class HeldJobs(ActorPool):
    """Actors that keep what they are given: queue depth without a committer."""

    def __init__(self) -> None:
        super().__init__(_never_decided, idle_seconds=60)
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> None:
        self.jobs.append(job)
        self.queues.setdefault(job.device_id, asyncio.Queue()).put_nowait(job)


@dataclass
class Bridge:
    """The parts of a running BridgeService the collector reads."""

    tracker: PresenceTracker | None = None
    desk: ReservationDesk | None = None
    timers: Timers | None = None
    runner: BatchRunner | None = None
    publisher: OutboxPublisher | None = None
    partitions: Ownership | None = None
    metrics: BridgeMetrics = field(default_factory=BridgeMetrics)

    def __post_init__(self) -> None:
        self.metrics.watch(self, process=False)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def view(device: str, *, online: bool) -> DeviceView:
    return DeviceView(id=device, name=device, kind="pc", zone="z", online=online)


def started(settings: Settings | None = None) -> tuple[Bridge, HeldJobs]:
    bridge = Bridge()
    known = {
        "pc-01": view("pc-01", online=True),
        "pc-02": view("pc-02", online=True),
        "pc-03": view("pc-03", online=False),
    }
    bridge.tracker = PresenceTracker(T, known, 1, bridge.metrics)
    actors = HeldJobs()
    bridge.desk = ReservationDesk(settings or Settings(), T, actors, bridge.metrics.commands)
    return bridge, actors


def request(desk: ReservationDesk, user: str, body: dict[str, object] | bytes) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    desk.handle(RequestTopic("pc-01", user), payload, None, None)


def reserve(request_id: str) -> dict[str, object]:
    return {"request_id": request_id, "op": "reserve", "starts_at": 3e9, "ends_at": 3e9 + 1800}


async def test_a_scrape_names_every_bridge_metric() -> None:
    bridge, _ = started()
    text = generate_latest(bridge.metrics.registry).decode()
    for name in (
        "plaza_bridge_commands_total",
        "plaza_bridge_command_seconds_bucket",
        "plaza_bridge_command_seconds_count",
        "plaza_bridge_actor_queue_depth",
        "plaza_bridge_actors",
        "plaza_bridge_devices_online",
        "plaza_bridge_devices",
        "plaza_bridge_fenced_presences_total",
        "plaza_bridge_reconnects_total",
        "plaza_bridge_bad_payloads_total",
        "plaza_bridge_unknown_topics_total",
        "plaza_bridge_db_errors_total",
        "plaza_bridge_handler_errors_total",
        "plaza_bridge_requests_total",
    ):
        assert re.search(rf"(?m)^(# (HELP|TYPE) )?{name}[ {{]", text), name
    assert 'le="0.0005"' in text
    assert 'le="5.0"' in text


async def test_two_bridges_in_one_process_keep_their_own_registries() -> None:
    one, two = Bridge(), Bridge()
    one.metrics.reconnects += 3
    assert one.value("plaza_bridge_reconnects_total") == 3
    assert two.value("plaza_bridge_reconnects_total") == 0


async def test_the_int_counters_are_read_at_scrape_time() -> None:
    bridge, _ = started()
    assert bridge.value("plaza_bridge_fenced_presences_total") == 0
    assert bridge.tracker is not None
    bridge.tracker.on_presence("pc-01", Presence(online=True, epoch=5), 1.0)
    bridge.tracker.on_presence("pc-01", Presence(online=False, epoch=4), 2.0)  # a late will
    bridge.metrics.handler_errors += 1
    assert bridge.value("plaza_bridge_fenced_presences_total") == 1
    assert bridge.value("plaza_bridge_handler_errors_total") == 1


async def test_devices_online_follows_the_presence_tracker() -> None:
    bridge, _ = started()
    assert bridge.value("plaza_bridge_devices_online") == 2
    assert bridge.value("plaza_bridge_devices") == 3
    assert bridge.tracker is not None
    bridge.tracker.on_presence("pc-03", Presence(online=True, epoch=1), 1.0)
    assert bridge.value("plaza_bridge_devices_online") == 3
    bridge.tracker.on_presence("pc-01", Presence(online=False, epoch=9), 2.0)
    assert bridge.value("plaza_bridge_devices_online") == 2


async def test_a_bridge_not_started_yet_reports_zeros() -> None:
    bridge = Bridge()
    assert bridge.value("plaza_bridge_devices_online") == 0
    assert bridge.value("plaza_bridge_actor_queue_depth") == 0
    assert bridge.value("plaza_bridge_actors") == 0


async def test_accepted_requests_count_by_result_and_time_when_their_reply_is_decided() -> None:
    bridge, actors = started()
    assert bridge.desk is not None
    request(bridge.desk, "player1", reserve("a"))
    request(bridge.desk, "player2", reserve("b"))
    request(bridge.desk, "player3", {"request_id": "c", "op": "cancel", "reservation_id": "x"})
    assert bridge.value("plaza_bridge_actor_queue_depth") == 3
    assert bridge.value("plaza_bridge_actors") == 1
    assert bridge.value("plaza_bridge_command_seconds_count") == 0, "nothing decided yet"

    ok, lost, gone = actors.jobs
    ok.future.set_result(Reply(request_id="a", ok=True))
    lost.future.set_result(
        Reply(request_id="b", ok=False, error=ErrorBody(code="conflict", message="taken"))
    )
    gone.future.set_result(None)  # the committer dropped it
    await asyncio.sleep(0)  # done callbacks run on the next loop pass

    assert bridge.value("plaza_bridge_commands_total", op="reserve", result="ok") == 1
    assert bridge.value("plaza_bridge_commands_total", op="reserve", result="conflict") == 1
    assert bridge.value("plaza_bridge_commands_total", op="cancel", result="dropped") == 1
    assert bridge.value("plaza_bridge_command_seconds_count") == 3
    slowest = bridge.value("plaza_bridge_command_seconds_sum")
    assert slowest is not None
    assert 0 < slowest < 5


async def test_a_request_cancelled_at_shutdown_is_not_counted() -> None:
    bridge, actors = started()
    assert bridge.desk is not None
    request(bridge.desk, "player1", reserve("a"))
    actors.jobs[0].future.cancel()
    await asyncio.sleep(0)
    assert bridge.value("plaza_bridge_command_seconds_count") == 0
    assert bridge.value("plaza_bridge_commands_total", op="reserve", result="ok") is None


async def test_requests_refused_by_the_desk_count_too_with_op_unknown_when_unparsed() -> None:
    bridge, actors = started(Settings(rate_burst=1, rate_per_minute=1))
    assert bridge.desk is not None
    request(bridge.desk, "player1", b"{not json")
    request(bridge.desk, "player1", {"request_id": "x", "op": "explode"})
    request(bridge.desk, "player1", reserve("a"))  # the whole budget
    request(bridge.desk, "player1", reserve("b"))
    request(
        bridge.desk, "player2", {**reserve("c"), "on_behalf_of": {"user": "x", "role": "admin"}}
    )

    assert bridge.value("plaza_bridge_commands_total", op="unknown", result="invalid") == 2
    assert bridge.value("plaza_bridge_commands_total", op="reserve", result="rate_limited") == 1
    assert bridge.value("plaza_bridge_commands_total", op="reserve", result="forbidden") == 1
    assert len(actors.jobs) == 1, "refused requests never reach an actor"
    assert bridge.value("plaza_bridge_command_seconds_count") == 0
    assert bridge.value("plaza_bridge_requests_total") == 5


# -- the HTTP endpoint -----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def serving(registry: CollectorRegistry, port: int = 0) -> AsyncIterator[MetricsEndpoint]:
    async with metrics_endpoint(registry, "127.0.0.1", port) as endpoint:
        assert endpoint is not None
        task = asyncio.get_running_loop().create_task(endpoint.serve())
        try:
            yield endpoint
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_get_metrics_answers_the_registry_in_prometheus_text_format() -> None:
    bridge, _ = started()
    bridge.metrics.reconnects += 2
    async with (
        serving(bridge.metrics.registry) as endpoint,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{endpoint.port}") as http,
    ):
        got = await http.get("/metrics")
        other = await http.get("/")
        posted = await http.post("/metrics")
        head = await http.head("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "plaza_bridge_reconnects_total 2.0" in got.text
    assert "plaza_bridge_devices_online 2.0" in got.text
    assert other.status_code == 404
    assert posted.status_code == 405
    assert head.status_code == 200
    assert head.content == b""


async def test_a_scraper_that_sends_garbage_gets_400_and_the_endpoint_lives_on() -> None:
    registry = CollectorRegistry()
    async with serving(registry) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"hello\r\n\r\n")
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        async with httpx.AsyncClient() as http:
            again = await http.get(f"http://127.0.0.1:{endpoint.port}/metrics")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert again.status_code == 200


async def test_a_busy_port_leaves_the_bridge_without_an_endpoint_rather_than_down() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with metrics_endpoint(CollectorRegistry(), "127.0.0.1", port) as endpoint:
            assert endpoint is None


async def test_no_port_means_no_endpoint() -> None:
    async with metrics_endpoint(CollectorRegistry(), "127.0.0.1", None) as endpoint:
        assert endpoint is None


def test_the_last_minute_s_commands_and_p99_forget_what_is_older() -> None:
    from bridge.metrics import RecentLatency

    now = [1000.0]
    recent = RecentLatency(window=60, buckets=(0.001, 0.01, 0.1), clock=lambda: now[0])
    assert (recent.count(), recent.quantile(0.99)) == (0, None)
    for _ in range(98):
        recent.observe(0.0005)
    recent.observe(0.05)
    recent.observe(0.05)
    assert (recent.count(), recent.quantile(0.5), recent.quantile(0.99)) == (100, 0.001, 0.1)
    now[0] += 30
    recent.observe(5.0)  # past the last bucket
    assert (recent.count(), recent.quantile(1.0)) == (101, float("inf"))
    now[0] += 31  # the first 100 are more than a minute old
    assert (recent.count(), recent.quantile(0.99)) == (1, float("inf"))
    now[0] += 60
    assert recent.count() == 0


async def test_keyed_routing_figures_are_exported() -> None:
    settings = Settings(partitions=8, database_url="postgresql+asyncpg://x/y")
    ownership = Ownership(settings)
    ownership.owned = {1, 2, 3}
    ownership.keep("pc-001", object())
    bridge = Bridge(partitions=ownership)
    assert bridge.value("plaza_bridge_slots_owned") == 3
    assert bridge.value("plaza_bridge_leader") == 0
    assert bridge.value("plaza_bridge_handover_buffered") == 1
    assert bridge.value("plaza_bridge_jobs_fenced_total") == 0
