"""Link: the bridge's main broker connection as everything that publishes sees it.

The main connection's loop (:mod:`bridge.connections`) sets :attr:`Link.client` once
connected, sets :attr:`Link.connected` once subscribed, and calls :meth:`Link.down` when the
connection is lost. :meth:`Link.publish` sends live messages (boards, presence events) and
gives up quietly while disconnected: boards are re-published on every reconnect.
:meth:`Link.post` does the same without waiting (the intake's refusals). The outbox publisher
waits on :attr:`Link.connected` instead and retries, because what it sends is committed.

:attr:`Link.max_packet` is the largest packet the broker takes: ``PLAZA_MQTT_MAX_PACKET_SIZE``
(which mirrors the broker's ``max_packet_size``), or less when the broker's CONNACK says so.
Nothing larger is ever sent: the broker would drop the connection for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from bridge.metrics import BridgeMetrics
from bridge.models import Outbound
from plaza.mqtt import PlazaClient

log = logging.getLogger(__name__)
#: messages :meth:`Link.run_posts` publishes at a time
POST_BATCH = 200
#: messages :meth:`Link.publish_behind` lets wait for acknowledgement at once: with 100 in
#: flight (PLAZA_MQTT_MAX_INFLIGHT) the last is acknowledged within ten broker round trips,
#: far inside the publish timeout, so a busy broker slows the presence path, never times it out
BEHIND = 1000


class Link:
    def __init__(self, metrics: BridgeMetrics, *, max_packet_size: int = 65_536) -> None:
        self._metrics = metrics
        self._client: PlazaClient | None = None
        self.connected = asyncio.Event()
        self._configured_max = max_packet_size
        #: the broker's Maximum Packet Size from the last CONNACK that gave one
        self._broker_max: int | None = None
        #: connections made so far (a publisher compares it to see a connection was lost)
        self.connections = 0
        self._posts: list[Outbound] = []
        self._posted = asyncio.Event()
        #: acknowledgements awaited behind publish_behind: the task, and its message count
        self._behind: dict[asyncio.Task[None], int] = {}
        self._behind_count = 0

    @property
    def client(self) -> PlazaClient | None:
        return self._client

    @client.setter
    def client(self, client: PlazaClient | None) -> None:
        self._client = client
        if client is None:
            return
        self.connections += 1
        if client.broker_max_packet is not None:
            self._broker_max = client.broker_max_packet

    @property
    def max_packet(self) -> int:
        """The largest packet this bridge may send (bytes)."""
        if self._broker_max is None:
            return self._configured_max
        return min(self._configured_max, self._broker_max)

    def post(self, outbound: Sequence[Outbound]) -> None:
        """Publish ``outbound`` soon, without waiting: the intake's refusals, so that reading
        the next request never waits on the broker's acknowledgement of the last refusal.
        :meth:`run_posts` sends what was posted, in order, a batch at a time."""
        self._posts.extend(outbound)
        self._posted.set()

    async def run_posts(self) -> None:
        while True:
            await self._posted.wait()
            self._posted.clear()
            while self._posts:
                batch, self._posts = self._posts[:POST_BATCH], self._posts[POST_BATCH:]
                await self.publish(batch)

    def down(self) -> None:
        self._client = None
        self.connected.clear()

    async def publish(self, outbound: Sequence[Outbound]) -> None:
        """Publish ``outbound`` now and wait for the broker's acknowledgements; while
        disconnected, log and drop (nothing committed). A message the broker could not take
        is dropped and counted, never sent."""
        client = self._client
        acks = self._dispatch(outbound)
        if acks is not None:
            await self._settle(acks, client)

    async def publish_behind(self, outbound: Sequence[Outbound]) -> None:
        """Like :meth:`publish`, but return once the messages are handed to the connection
        (in order with every other publish), with their acknowledgements awaited behind:
        the presence path, which would otherwise wait a broker round trip per board entry.
        At most ``BEHIND`` messages wait for acknowledgement; past that this waits too."""
        client = self._client
        acks = self._dispatch(outbound)
        if acks is None:
            return
        task = asyncio.ensure_future(self._settle(acks, client))
        self._behind[task] = len(acks[0])
        self._behind_count += len(acks[0])
        task.add_done_callback(self._done_behind)
        while self._behind_count > BEHIND:
            await asyncio.wait(set(self._behind), return_when=asyncio.FIRST_COMPLETED)

    def _done_behind(self, task: asyncio.Task[None]) -> None:
        self._behind_count -= self._behind.pop(task, 0)

    def _wedged(self, client: PlazaClient | None, exc: aiomqtt.MqttError) -> None:
        """No PUBACK within the timeout on the connection that is still the link's: it no
        longer moves (a half-open link; a socket whose writer the event loop lost, as uvloop
        can after a broker restart reuses a descriptor). Shut its socket: the connection ends
        and the bridge reconnects now, not when the keepalive runs out (43 s in one CI run)."""
        if client is None or client is not self._client or "timed out" not in str(exc):
            return
        if client.shut():
            self._metrics.wedged += 1
            log.warning("no acknowledgement on a live connection: closed it to reconnect")

    def _dispatch(
        self, outbound: Sequence[Outbound]
    ) -> tuple[list[Outbound], list[asyncio.Future[ReasonCode | None]]] | None:
        """Hand what can be sent to the connection, in order; None when nothing went."""
        client = self._client
        if client is None:
            log.warning("not connected; %d messages not published", len(outbound))
            return None
        limit = self.max_packet
        sendable = []
        for o in outbound:
            reason = o.unsendable(limit)
            if reason is None:
                sendable.append(o)
                continue
            self._metrics.unsendable += 1
            log.warning("not published to %s: %s", o.topic, reason, extra={"sender": "bridge"})
        acks = []
        try:
            for o in sendable:
                acks.append(
                    client.dispatch(
                        o.topic, o.payload, qos=o.qos, retain=o.retain, properties=o.properties()
                    )
                )
        except aiomqtt.MqttError as exc:
            log.warning("publish failed (%s); boards are re-published on reconnect", exc)
        return sendable[: len(acks)], acks

    async def _settle(
        self,
        sent: tuple[list[Outbound], list[asyncio.Future[ReasonCode | None]]],
        client: PlazaClient | None,
    ) -> None:
        sendable, acks = sent
        try:
            refusals = await asyncio.gather(*acks)
        except aiomqtt.MqttError as exc:
            log.warning("publish failed (%s); boards are re-published on reconnect", exc)
            self._wedged(client, exc)
            return
        for o, refused in zip(sendable, refusals, strict=True):
            if refused is not None:
                self._metrics.unsendable += 1
                log.warning("the broker refused a message on %s: %s", o.topic, refused)
        self._metrics.board_published += sum(1 for o in sendable if o.retain)
