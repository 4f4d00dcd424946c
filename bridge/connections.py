"""The bridge's two broker connections, and its own retained status.

- **main** (client id ``PLAZA_BRIDGE_ID``): machines' presence and state, and the
  dynamic-security responses. Everything the bridge publishes goes out on it
  (:class:`~bridge.link.Link`): replies, boards, events, notifications, alerts, its status.
  Its will is the bridge's status ``online: false``.
- **intake** (``PLAZA_BRIDGE_ID-intake``, account ``{PLAZA_MQTT_USERNAME}-intake``): what
  players and the api send the bridge, which is what a flood is made of: reservation requests
  (through the shared group when ``PLAZA_SHARED_GROUP`` is set), read receipts and the api's
  admin commands. Every message is charged to its sender before it is read
  (:mod:`plaza.fast_receive`, :class:`~bridge.flood.FloodGate`); what is let through waits
  in a :class:`~bridge.flood.FairQueue`. A flood therefore never delays a presence, a board
  or a reply on the main connection, and one sender's backlog never delays another's.

Requests and read receipts are subscribed with retain handling 2 (the broker sends no
retained copy at subscribe time) and retain-as-published: a retained one still arriving (a
live publish with the retain flag, or one queued in the persistent session) is never applied,
and its topic is cleared (an empty retained publish), so junk does not pile up in the broker.

Both connections are persistent sessions (clean start off, a session expiry), each made on a
fresh aiomqtt client for every attempt, and reconnect forever with jittered backoff.

The status (``services/bridge/status``, retained): a birth when both connections are up, a
heartbeat every ``PLAZA_BRIDGE_HEARTBEAT`` while they stay up, ``online: false`` when the
intake is down while the main connection is up, on a clean stop, and as the main connection's
will. :attr:`Connections.ready` is set while both are up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.cooloff import Dynsec
from bridge.flood import RETAINED, FairQueue, FloodGate
from bridge.link import Link
from bridge.metrics import BridgeMetrics
from bridge.models import Incoming, Outbound
from bridge.router import Router
from plaza import fast_receive
from plaza.acl import DYNSEC_RESPONSE
from plaza.messages import ServiceStatus
from plaza.mqtt import Backoff, PlazaClient, service_client
from plaza.settings import Settings
from plaza.topics import BRIDGE_SERVICE, BROKER_SYS_TREE, Topics

log = logging.getLogger(__name__)
Filters = list[tuple[str, int]] | list[tuple[str, SubscribeOptions]]
#: retained topics waiting to be cleared, at most (a flood of distinct ones is cut here)
MAX_TO_CLEAR = 10_000
CLEAR_BATCH = 100


def incoming(message: aiomqtt.Message) -> Incoming:
    payload = message.payload
    props = message.properties
    return Incoming(
        message.topic.value,
        bytes(payload) if isinstance(payload, bytes | bytearray) else b"",
        getattr(props, "ResponseTopic", None),
        getattr(props, "CorrelationData", None),
        bool(message.retain),
    )


def _sender(message: aiomqtt.Message) -> bytes | None:
    return Topics.sender_of(message.topic.value.encode())


class RetainedSweeper:
    """Clears retained requests and read receipts the intake saw (an empty retained
    publish on their topic), a batch at a time, on the main connection."""

    def __init__(self, link: Link, limit: int = MAX_TO_CLEAR) -> None:
        self._link = link
        self._limit = limit
        self._topics: dict[bytes, None] = {}
        self._wake = asyncio.Event()
        self.cleared = 0

    def saw(self, topic: bytes) -> None:
        if len(self._topics) < self._limit:
            self._topics[topic] = None
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._topics:
                await self._link.connected.wait()
                batch = list(self._topics)[:CLEAR_BATCH]
                for topic in batch:
                    del self._topics[topic]
                await self._link.publish(
                    [Outbound(t.decode(errors="replace"), b"", retain=True) for t in batch]
                )
                self.cleared += len(batch)


class Connections:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        link: Link,
        metrics: BridgeMetrics,
        router: Router,
        *,
        gate: FloodGate,
        dynsec: Dynsec,
        on_main_connected: Callable[[], Awaitable[None]],
        markers: Mapping[str, Callable[[bytes], None]] | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.link = link
        self.metrics = metrics
        self.router = router
        self.gate = gate
        self.dynsec = dynsec
        self._on_main_connected = on_main_connected
        #: the main connection's own marker topics (board sync): topic -> who hears it
        self.markers = dict(markers or {})
        #: every topic whose messages answer this connection itself (dynamic security, the
        #: markers), handed over as they come instead of routed
        self._answers = {DYNSEC_RESPONSE: dynsec.answer, **self.markers}
        self.sweeper = RetainedSweeper(link)
        self.status_topic = topics.service_status(BRIDGE_SERVICE)
        #: set while both connections are up and subscribed
        self.ready = ready if ready is not None else asyncio.Event()
        self.main_up = asyncio.Event()
        self.intake_up = asyncio.Event()
        self._changed = asyncio.Event()
        #: which hook the intake's drop path uses ("packet" or "message")
        self.drop_hook = ""

    # -- subscriptions --------------------------------------------------------------------
    def requests_filter(self, requests: str | None = None) -> str:
        group = self.settings.shared_group
        requests = requests or self.topics.all_requests
        return self.topics.shared(group, requests) if group else requests

    def intake_filters(self) -> list[tuple[str, SubscribeOptions]]:
        def unretained() -> SubscribeOptions:
            return SubscribeOptions(
                qos=1,
                retainAsPublished=True,
                retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,
            )

        return [
            (self.requests_filter(), unretained()),
            (self.requests_filter(self.topics.all_venue_requests), unretained()),
            (self.topics.all_acks, unretained()),
            (self.topics.admin_requests, unretained()),
        ]

    def main_filters(self) -> list[tuple[str, int]]:
        return [
            (self.topics.all_presence, 1),
            (self.topics.all_state, 1),
            (DYNSEC_RESPONSE, 1),
            # the broker's own figures, for /metrics: QoS 0, a fresh one comes every
            # sys_interval
            (BROKER_SYS_TREE, 0),
        ]

    async def _subscribe(self, client: PlazaClient, filters: Filters) -> None:
        granted = await client.subscribe(filters)
        for (f, _), code in zip(filters, granted or [], strict=False):
            if int(getattr(code, "value", 0)) >= 0x80:
                log.error("the broker refused subscription %s: %s", f, code)

    # -- the status -----------------------------------------------------------------------
    def _status(self, online: bool) -> bytes:
        if not online:
            return ServiceStatus(online=False, id=self.settings.bridge_id).encode()
        return ServiceStatus(online=True, ts=time.time(), id=self.settings.bridge_id).encode()

    def _will(self) -> aiomqtt.Will:
        return aiomqtt.Will(
            self.status_topic, ServiceStatus(online=False).encode(), qos=1, retain=True
        )

    def _changed_state(self) -> None:
        both = self.main_up.is_set() and self.intake_up.is_set()
        if both and not self.ready.is_set():
            self.ready.set()
            log.info(
                "bridge connected to %s:%d (main and intake)",
                self.settings.mqtt_host,
                self.settings.mqtt_port,
            )
        elif not both:
            self.ready.clear()
        self._changed.set()

    async def run_status(self) -> None:
        """Birth, heartbeats and 'intake down' on the main connection (the one heartbeat)."""
        said: bool | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.settings.bridge_heartbeat)
            self._changed.clear()
            if not self.main_up.is_set():
                said = None  # the will (or the broker's restart) has spoken meanwhile
                continue
            online = self.ready.is_set()
            if online or said is not False:
                out = Outbound(self.status_topic, self._status(online), retain=True)
                await self.link.publish([out])
                said = online

    # -- the loops ------------------------------------------------------------------------
    async def run_main(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        while True:
            # a fresh client for every attempt (see plaza.mqtt.service_client)
            client = service_client(
                self.settings, self.settings.bridge_id, persistent=True, will=self._will()
            )
            try:
                async with client:
                    await self._subscribe(client, self.main_filters())
                    # An older release read requests and receipts on this connection; its
                    # persistent session would still deliver them here too.
                    # The board is read back on this connection after each connect (board
                    # sync); a bridge that died while reading left it in its session.
                    await client.unsubscribe(
                        [
                            self.requests_filter(),
                            self.topics.admin_requests,
                            self.topics.all_acks,
                            self.topics.all_board,
                            *self.markers,
                        ]
                    )
                    self.link.client = client
                    backoff.reset()
                    self.link.connected.set()
                    await self._on_main_connected()
                    self.main_up.set()
                    self._changed_state()
                    try:
                        await self._serve_main(client)
                    except asyncio.CancelledError:  # a clean stop: say so before DISCONNECT
                        client.publish_now(
                            self.status_topic, self._status(False), qos=1, retain=True
                        )
                        raise
            except aiomqtt.MqttError as exc:
                self._lost("main", exc)
            finally:
                client.settle()
                self.link.down()
                self.main_up.clear()
                self._changed_state()
            await asyncio.sleep(backoff.next_delay())

    async def _serve_main(self, client: PlazaClient) -> None:
        async for message in client.messages:
            hears = self._answers.get(message.topic.value)
            if hears is not None:  # the connection's own answers, not venue traffic
                payload = message.payload
                hears(bytes(payload) if isinstance(payload, bytes) else b"")
                continue
            await self.router.handle(incoming(message))

    async def run_intake(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        fair = cast(
            "type[asyncio.Queue[aiomqtt.Message]]", functools.partial(FairQueue, key=_sender)
        )
        while True:
            # Refusals and clearings go out on the main connection: no intake without it.
            await self.main_up.wait()
            client = service_client(
                self.settings,
                self.settings.intake_id,
                persistent=True,
                username=self.settings.intake_username,
                queue_type=fair,
            )
            self.drop_hook = fast_receive.install(client, self._decide)
            try:
                async with client:
                    await self._subscribe(client, self.intake_filters())
                    backoff.reset()
                    self.intake_up.set()
                    self._changed_state()
                    async for message in client.messages:
                        await self.router.handle(incoming(message))
            except aiomqtt.MqttError as exc:
                self._lost("intake", exc)
            finally:
                client.settle()
                self.intake_up.clear()
                self._changed_state()
            await self._intake_pause(backoff.next_delay())

    async def _intake_pause(self, delay: float) -> None:
        """The backoff before the intake's next attempt, cut short when the main connection
        comes back: a broker restart grew the backoff while the broker was down, and waiting
        it out kept the bridge not ready (no requests read) for seconds after the broker was
        back (12 s in `plaza bench storm`)."""
        main_was_up = self.main_up.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                if main_was_up:  # wait for it to go down, then to come back
                    while self.main_up.is_set():  # noqa: ASYNC110 - another task's state
                        await asyncio.sleep(0.05)
                await self.main_up.wait()
                return

    def _decide(self, topic: bytes, retained: bool, empty: bool) -> bool:
        """The intake's drop path (runs for every packet, before any decoding): charge the
        sender; a retained request or receipt is never applied, and is cleared."""
        admitted = self.gate.admit(Topics.sender_of(topic), time.monotonic())
        if not retained:
            return admitted
        if not empty:  # an empty one is a clearing (perhaps ours): nothing to apply or clear
            if admitted:
                self.gate.dropped[RETAINED] += 1
            self.sweeper.saw(topic)
        return False

    def _lost(self, which: str, exc: Exception) -> None:
        self.metrics.reconnects += 1
        log.warning("%s broker connection lost (%s); reconnecting", which, exc)
