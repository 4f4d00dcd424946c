"""The api's broker link survives a frozen broker (issue 13, finding 4).

aiomqtt 2.5.1's ``Client.__aexit__`` keeps the client's reuse lock when its wait for the
broker to close the connection times out (a DISCONNECT stuck behind a full send buffer, or
a socket the loop lost track of); a client reused after that fails every reconnect with
"reusable, but not reentrant", and the link is down for good. A reused client also carries
state over from its last connection (aiomqtt leaves ``_connected`` set after a lost
connection, so the next ``__aenter__`` returns before any CONNACK). The api builds a fresh
client for every attempt; these tests freeze the real broker (a proxy that lets one CONNACK
through and then nothing, and SIGSTOP past the keepalive) and check that the link comes
back on a new client and a command goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.link import BrokerLink
from plaza.settings import Settings
from tests.conftest import DOCKER, BrokerHandle
from venue.accounts import API_USER
from venue.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class FreezingProxy:
    """Forwards TCP to the broker. While ``freeze_next`` is set, the next connection gets
    the broker's first packet (CONNACK) and then nothing more, not even the broker closing."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.freeze_next = False
        self.frozen = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Close every connection (the link sees its connection lost)."""
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers |= {writer, up_writer}
        freeze, self.freeze_next = self.freeze_next, False
        loop = asyncio.get_running_loop()
        for pump in (self._pump(reader, up_writer), self._down(up_reader, writer, freeze)):
            task = loop.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, freeze: bool
    ) -> None:
        if not freeze:
            await self._pump(reader, writer)
            return
        writer.write(await _one_packet(reader))  # the CONNACK
        await writer.drain()
        self.frozen.set()
        with contextlib.suppress(OSError):
            while await reader.read(65536):  # swallowed, the close too
                pass
        await asyncio.Event().wait()


async def _one_packet(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(1)
    length, shift, raw = 0, 0, b""
    while True:  # MQTT's variable-length "remaining length"
        byte = await reader.readexactly(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return head + raw + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def running(link: BrokerLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(link.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def api_settings(
    broker: BrokerHandle, tmp_path: Path, host: str, port: int, keepalive: int = 30
) -> Settings:
    """The api's account, with short timings: an operation fails after 1 s."""
    return Settings(
        data_dir=tmp_path,
        mqtt_host=host,
        mqtt_port=port,
        mqtt_username=API_USER,
        mqtt_password=broker.secrets.api,
        reconnect_min=0.05,
        reconnect_max=0.5,
        service_keepalive=keepalive,
        service_timeout=1.0,
    )


async def until(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - another's state
            await asyncio.sleep(0.05)


async def test_the_api_link_reconnects_after_a_disconnect_that_timed_out(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    async with FreezingProxy(broker.host, broker.port) as proxy:
        link = BrokerLink(api_settings(broker, tmp_path, "127.0.0.1", proxy.port))
        async with running(link):
            await until(lambda: link.connected.is_set(), 10)
            assert link.connections == 1
            first = link.client
            proxy.freeze_next = True
            proxy.cut()  # the next connection is the frozen one
            await asyncio.wait_for(proxy.frozen.wait(), 10)
            # its subscribe times out (1 s), then its disconnect wait (1 s); then it tries again
            await until(lambda: link.connections >= 2 and link.client is not None, 15)
            assert link.client is not first, "a new client for the new connection"
            (answer,) = await link.dynsec([{"command": "getClient", "username": API_USER}])
    assert "error" not in answer, answer
    assert answer["data"]["client"]["username"] == API_USER


@pytest.mark.skipif(DOCKER, reason="SIGSTOP needs the local mosquitto process")
async def test_the_api_link_comes_back_after_the_broker_froze_past_its_keepalive(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    link = BrokerLink(api_settings(broker, tmp_path, broker.host, broker.port, keepalive=1))
    assert isinstance(broker.broker, LocalBroker)
    process = broker.broker.proc
    assert process is not None
    async with running(link):
        await until(lambda: link.connected.is_set(), 10)
        first = link.client
        process.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: not link.connected.is_set(), 10)  # the keepalive noticed
            await asyncio.sleep(3)  # reconnect attempts against a frozen broker
        finally:
            process.send_signal(signal.SIGCONT)
        await until(lambda: link.connected.is_set() and link.client is not None, 20)
        assert link.client is not first
        (answer,) = await link.dynsec([{"command": "getClient", "username": API_USER}])
    assert "error" not in answer, answer
