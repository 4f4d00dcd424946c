"""BridgeService: the bridge process. One TaskGroup: the MQTT loop and the SQL writer.

The MQTT loop reconnects forever with jittered backoff and keeps a persistent session
(clean_start False + session expiry). One bad payload is logged, counted and dropped; the loop
lives on.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiomqtt
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.metrics import BridgeMetrics
from bridge.presence import Effects, Outbound, PresenceTracker
from bridge.store import DeviceStore
from plaza.db import make_engine, migrate, session_factory
from plaza.messages import DeviceState, PayloadError, Presence, decode, now
from plaza.mqtt import Backoff, service_client
from plaza.settings import Settings
from plaza.topics import DeviceChannel, DeviceTopic, TopicError, Topics

log = logging.getLogger(__name__)


class BridgeService:
    def __init__(self, settings: Settings, identifier: str = "plaza-bridge") -> None:
        self.settings = settings
        self.identifier = identifier
        self.topics = Topics(settings.topic_root)
        self.metrics = BridgeMetrics()
        self.ready = asyncio.Event()
        self.tracker: PresenceTracker | None = None
        self.store: DeviceStore | None = None
        self._client: aiomqtt.Client | None = None

    async def run(self) -> None:
        engine = make_engine(self.settings.db_url)
        try:
            await self._run(engine)
        finally:
            await engine.dispose()

    async def _run(self, engine: AsyncEngine) -> None:
        await migrate(engine)
        store = DeviceStore(session_factory(engine), self.metrics)
        generation = await store.start_generation()
        self.tracker = PresenceTracker(
            self.topics, await store.load_views(), generation, self.metrics
        )
        self.store = store
        log.info("bridge generation %d, %d machines known", generation, len(self.tracker.views))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(store.run(), name="device-store")
            tg.create_task(self._mqtt_loop(), name="mqtt")

    async def _mqtt_loop(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        client = service_client(self.settings, self.identifier, persistent=True)
        while True:
            try:
                async with client:
                    self._client = client
                    await client.subscribe(
                        [(self.topics.all_presence, 1), (self.topics.all_state, 1)]
                    )
                    backoff.reset()
                    await self.republish_board()
                    self.ready.set()
                    log.info(
                        "bridge connected to %s:%d",
                        self.settings.mqtt_host,
                        self.settings.mqtt_port,
                    )
                    async for message in client.messages:
                        await self.handle(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                self._client = None
                self.ready.clear()
                self.metrics.reconnects += 1
                delay = backoff.next_delay()
                log.warning("broker connection lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    async def handle(self, topic: str, payload: object) -> None:
        """Route one incoming message; never raises for bad input."""
        assert self.tracker is not None
        assert self.store is not None
        raw = payload if isinstance(payload, bytes | bytearray) else b""
        try:
            parsed = self.topics.parse(topic)
        except TopicError as exc:
            self.metrics.unknown_topics += 1
            log.warning("dropped message on unknown topic: %s", exc)
            return
        if not isinstance(parsed, DeviceTopic) or parsed.channel is DeviceChannel.CMD:
            self.metrics.unknown_topics += 1
            log.warning("dropped message on a topic the bridge does not handle: %s", topic)
            return
        if not raw:
            return  # an empty retained payload clears a removed machine's topic
        limit = self.settings.max_payload_bytes
        try:
            if parsed.channel is DeviceChannel.PRESENCE:
                effects = self.tracker.on_presence(
                    parsed.device, decode(Presence, raw, limit), now()
                )
            else:
                effects = self.tracker.on_state(
                    parsed.device, decode(DeviceState, raw, limit), now()
                )
        except PayloadError as exc:
            self.metrics.bad_payloads += 1
            log.warning("dropped bad payload on %s: %s", topic, exc)
            return
        await self.apply(effects)

    async def apply(self, effects: Effects) -> None:
        assert self.store is not None
        if effects.publish:
            await self.publish_all(effects.publish)
        self.store.enqueue(
            effects.view,
            effects.status_changed,
            effects.alerts,
            effects.view.since if effects.view else time.time(),
        )

    async def republish_board(self) -> None:
        """Publish every machine's current board entry (same version) after (re)connecting:
        a publish lost while disconnected, or retained messages a crashed broker did not
        save, are restored. Clients treat an equal version as nothing new."""
        assert self.tracker is not None
        ts = now()
        await self.publish_all(
            [
                Outbound(self.topics.board(v.id), v.entry(ts).encode(), retain=True)
                for v in self.tracker.views.values()
                if v.version > 0
            ]
        )

    async def publish_all(self, outbound: list[Outbound]) -> None:
        client = self._client
        if client is None:
            log.warning("not connected; %d messages not published", len(outbound))
            return
        try:
            await asyncio.gather(
                *(client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain) for o in outbound)
            )
        except aiomqtt.MqttError as exc:
            log.warning("publish failed (%s); boards are re-published on reconnect", exc)
            return
        self.metrics.board_published += sum(1 for o in outbound if o.retain)
