"""The bridge's publishing link against a real broker behind a slow network.

A machine's change is handed to the connection without waiting for its PUBACK
(:meth:`Link.publish_behind`), in order with every other publish: the presence path used to
wait a broker round trip per board entry, which capped a reconnect storm's births at about
20 machines a second on a busy broker (`plaza bench storm`: the board right again only after
92-142 s, with every machine reconnected after 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from bridge.link import BEHIND, Link
from bridge.metrics import BridgeMetrics
from bridge.models import Outbound
from plaza.mqtt import service_client
from plaza.settings import Settings
from tests.conftest import BrokerHandle
from venue.accounts import BRIDGE_USER

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
DELAY = 0.3  # each way through the proxy: no PUBACK is back within 2 x DELAY


class DelayingProxy:
    """Forwards TCP to the broker, holding each chunk ``delay`` seconds in both directions."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.upstream = (host, port)
        self.delay = delay
        #: while set, nothing the broker sends reaches the client (its PUBACKs included): a
        #: connection that is up but no longer moves (a half-open link; a socket whose writer
        #: the event loop lost, as uvloop can after a descriptor is reused)
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer, down=True)):
            task = asyncio.get_running_loop().create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool = False
    ) -> None:
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                while down and self.frozen:  # noqa: ASYNC110 - the test's switch
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()

        releaser = asyncio.get_running_loop().create_task(release())
        try:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    held.put_nowait((time.monotonic() + self.delay, data))
            while not held.empty():  # noqa: ASYNC110 - the releaser drains it
                await asyncio.sleep(0.05)
        finally:
            releaser.cancel()
            writer.close()


def bridge_settings(broker: BrokerHandle, tmp_path: Path, port: int, timeout: float) -> Settings:
    return Settings(
        data_dir=tmp_path,
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        mqtt_username=BRIDGE_USER,
        mqtt_password=broker.secrets.bridge,
        service_timeout=timeout,
    )


async def test_publish_behind_hands_board_entries_over_without_waiting_and_keeps_their_order(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    metrics = BridgeMetrics()
    link = Link(metrics)
    topic = broker.topics.board("pc-01")
    seen: list[int] = []
    async with broker.client("observer", broker.secrets.observer) as observer:
        await observer.subscribe(topic, qos=1)

        async def watch() -> None:
            async for message in observer.messages:
                assert isinstance(message.payload, bytes)
                seen.append(json.loads(message.payload)["n"])

        watching = asyncio.ensure_future(watch())
        async with DelayingProxy(broker.host, broker.port, DELAY) as proxy:
            settings = bridge_settings(broker, tmp_path, proxy.port, 10.0)
            async with service_client(settings, settings.bridge_id, persistent=False) as client:
                link.client = client
                t0 = time.monotonic()
                for n in range(50):
                    entry = Outbound(topic, json.dumps({"n": n}).encode(), retain=True)
                    await link.publish_behind([entry])
                handed = time.monotonic() - t0
                acknowledged_when_handed = metrics.board_published
                # an ordinary publish after them waits for its own acknowledgement, and its
                # message still goes out after the fifty
                await link.publish([Outbound(topic, b'{"n":50}', retain=True)])
                acked = time.monotonic() - t0
                async with asyncio.timeout(10):
                    while len(seen) < 51 or metrics.board_published < 51:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
        watching.cancel()
    assert acknowledged_when_handed < 50, f"handed over in {handed:.2f} s: each PUBACK awaited"
    assert acked >= 2 * DELAY, "the plain publish waited for its acknowledgement"
    assert seen == list(range(51)), "every entry reached the broker, in call order"
    assert metrics.unsendable == 0


async def test_more_entries_than_paho_s_default_in_flight_window_are_all_acknowledged_in_time(
    broker: BrokerHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """200 entries behind a 0.6 s round trip with a 3 s publish timeout: paho's default of 20
    in flight would take ten round trips (6 s) and time the tail out; the services let
    PLAZA_MQTT_MAX_INFLIGHT (100, the broker's Receive Maximum) fly and have them all
    acknowledged in two or three."""
    metrics = BridgeMetrics()
    link = Link(metrics)
    async with DelayingProxy(broker.host, broker.port, DELAY) as proxy:
        settings = bridge_settings(broker, tmp_path, proxy.port, 3.0)
        async with service_client(settings, settings.bridge_id, persistent=False) as client:
            link.client = client
            for n in range(200):
                topic = broker.topics.board(f"pc-{n:03d}")
                await link.publish_behind([Outbound(topic, b'{"n":0}', retain=True)])
            async with asyncio.timeout(10):
                while metrics.board_published < 200:  # noqa: ASYNC110 - counted behind
                    await asyncio.sleep(0.05)
    assert "publish failed" not in caplog.text


async def test_past_a_thousand_entries_awaiting_acknowledgement_publish_behind_waits(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    """The presence path's bound (bridge.link.BEHIND): a thousand entries are handed over
    without waiting (acknowledging them all takes ten round trips of 2 x DELAY, with 100 in
    flight); the next one waits until the broker has acknowledged some."""
    metrics = BridgeMetrics()
    link = Link(metrics)
    async with DelayingProxy(broker.host, broker.port, DELAY) as proxy:
        settings = bridge_settings(broker, tmp_path, proxy.port, 30.0)
        async with service_client(settings, settings.bridge_id, persistent=False) as client:
            link.client = client
            entries = [
                Outbound(broker.topics.board(f"pc-{n:04d}"), b'{"n":0}', retain=True)
                for n in range(BEHIND + 1)
            ]
            for entry in entries[:BEHIND]:
                await link.publish_behind([entry])
            acknowledged_when_handed = metrics.board_published
            await link.publish_behind([entries[BEHIND]])
            acknowledged_when_past = metrics.board_published
            async with asyncio.timeout(30):
                while metrics.board_published < BEHIND + 1:  # noqa: ASYNC110 - counted behind
                    await asyncio.sleep(0.05)
    assert acknowledged_when_handed < BEHIND, "the thousand were handed over, not each awaited"
    assert acknowledged_when_past > 0, "the one past the bound waited for acknowledgements"


async def test_a_connection_that_stops_acknowledging_is_closed_so_the_bridge_reconnects(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    """A publish not acknowledged within the timeout on a connection that still looks up:
    the link closes the connection's socket, so the bridge reconnects at once instead of
    waiting for the keepalive (a fresh-clone CI run: the bridge's writes stopped after a
    broker restart and it stayed wedged for 43 s, until the keepalive ended it)."""
    metrics = BridgeMetrics()
    link = Link(metrics)
    async with DelayingProxy(broker.host, broker.port, 0.0) as proxy:
        settings = bridge_settings(broker, tmp_path, proxy.port, 1.0)
        client = service_client(settings, settings.bridge_id, persistent=False)
        with contextlib.suppress(aiomqtt.MqttError):
            async with client:
                link.client = client
                await link.publish([Outbound(broker.topics.board("pc-01"), b"{}", retain=True)])
                assert metrics.board_published == 1
                proxy.frozen = True
                started = time.monotonic()
                await link.publish([Outbound(broker.topics.board("pc-01"), b"{}", retain=True)])
                async with asyncio.timeout(5):
                    async for _ in client.messages:
                        pass
        ended = time.monotonic() - started
    assert ended < 1.0 + 2.0, f"the wedged connection ended after {ended:.1f} s"
    assert metrics.wedged == 1
