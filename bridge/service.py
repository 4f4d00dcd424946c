"""BridgeService: the bridge process. One TaskGroup: the MQTT loop and the SQL writer.

The MQTT loop reconnects forever with jittered backoff and keeps a persistent session
(clean_start False + session expiry). One bad payload is logged, counted and dropped; the loop
lives on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from bridge.admin import AdminDesk
from bridge.committer import Committer
from bridge.desk import ReservationDesk
from bridge.metrics import BridgeMetrics
from bridge.metrics_http import metrics_endpoint
from bridge.notifier import Notifier
from bridge.outages import OutageWatch
from bridge.outbox import OutboxPublisher
from bridge.presence import Effects, Outbound, PresenceTracker
from bridge.reservations import ActorPool, BoardRows, board_slots, current_and_next
from bridge.selfwatch import Readings, SelfWatch
from bridge.store import DeviceStore
from plaza.db import make_engine, migrate, session_factory
from plaza.messages import (
    AdminAlert,
    DeviceState,
    MachineState,
    PayloadError,
    Presence,
    decode,
    now,
)
from plaza.mqtt import Backoff, service_client
from plaza.settings import Settings
from plaza.topics import (
    AdminRequestTopic,
    DeviceChannel,
    DeviceTopic,
    RequestTopic,
    TopicError,
    Topics,
    UserTopic,
)

log = logging.getLogger(__name__)


class BridgeService:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics_port: int | None = None,
        freeze_startup_objects: bool = False,
    ) -> None:
        """``metrics_port`` overrides ``settings.bridge_metrics_port`` (where 0 means off);
        here 0 means any free port, read back from :attr:`metrics_port` once running.
        ``freeze_startup_objects``: for a process that runs one bridge (``plaza bridge``),
        exempt what start-up built from the cyclic garbage collector (:func:`gc.freeze`)."""
        self._freeze = freeze_startup_objects
        self.settings = settings
        self.identifier = settings.bridge_id
        self.topics = Topics(settings.topic_root)
        self.metrics = BridgeMetrics()
        self.ready = asyncio.Event()
        self.connected = asyncio.Event()
        self.tracker: PresenceTracker | None = None
        self.store: DeviceStore | None = None
        self.committer: Committer | None = None
        self.desk: ReservationDesk | None = None
        self.admin: AdminDesk | None = None
        self.notifier: Notifier | None = None
        self.outages: OutageWatch | None = None
        self.publisher: OutboxPublisher | None = None
        self._client: aiomqtt.Client | None = None
        self._refresh: asyncio.Queue[set[str] | dict[str, BoardRows]] = asyncio.Queue()
        self.metrics.watch(self)
        self._metrics_bind = (
            (settings.bridge_metrics_port or None) if metrics_port is None else metrics_port
        )
        #: the port /metrics is served on (None: not served)
        self.metrics_port: int | None = None

    async def run(self) -> None:
        # Database work runs in worker threads; with the default 5 ms GIL switch interval a
        # busy event loop makes each hand-off wait up to 5 ms. 0.5 ms keeps them short.
        sys.setswitchinterval(0.0005)
        engine = make_engine(self.settings.db_url)
        reader = make_engine(self.settings.db_url, reader=True)
        try:
            await self._run(engine, session_factory(reader))
        finally:
            if self.committer is not None:
                self.committer.close()
            await engine.dispose()
            await reader.dispose()

    async def _run(self, engine: AsyncEngine, reads: Callable[[], AsyncSession]) -> None:
        await migrate(engine)
        gate = asyncio.Lock()  # every write transaction of this bridge takes it
        store = DeviceStore(session_factory(engine), self.metrics, gate)
        generation = await store.start_generation()
        self.tracker = PresenceTracker(
            self.topics,
            await store.load_views(),
            generation,
            self.metrics,
            flap_count=self.settings.flap_count,
            flap_window=self.settings.flap_window,
        )
        self.store = store
        sessions = session_factory(engine)
        self.publisher = OutboxPublisher(sessions, lambda: self._client, self.connected, gate)
        self.committer = Committer(
            engine, self.settings, self.topics, self.publisher, self._refresh.put_nowait, gate
        )
        actors = ActorPool(self.committer, self.settings.actor_idle_seconds)
        self.desk = ReservationDesk(self.settings, self.topics, actors, self.metrics.commands)
        store.removed = self.tracker.removed
        self.desk.removed = self.tracker.removed
        self.admin = AdminDesk(
            self.settings,
            self.topics,
            self.tracker,
            sessions,
            gate,
            self.publisher,
            self.apply,
            self.publish_all,
            self._refresh.put_nowait,
            reads,
        )
        self.notifier = Notifier(
            self.topics,
            sessions,
            gate,
            self.publisher,
            self.settings.digest_interval,
            self.settings.max_payload_bytes,
        )
        self.outages = OutageWatch(
            self.settings, self.topics, self.tracker, sessions, gate, self.publisher
        )
        watch = SelfWatch(
            lambda: Readings(
                db_errors=self.metrics.db_errors
                + (self.committer.failed_batches if self.committer else 0),
                backlog=sum(q.qsize() for q in actors.queues.values()),
            ),
            self._raise_alert,
            self.settings.backlog_alert,
            self.settings.alert_cooldown,
        )
        unsent = await self.publisher.load_unsent()
        log.info(
            "bridge generation %d, %d machines known, %d outbox rows to send",
            generation,
            len(self.tracker.views),
            unsent,
        )
        await self._refresh_boards(set(self.tracker.views), reads)
        if self._freeze:
            # What start-up built (engines, metadata, models, every machine's view) lives as
            # long as the process. Left to the collector, each full collection walked all of
            # it: 70-100 ms with the event loop stopped, the bridge's worst latency. Frozen,
            # it is skipped (full collections then take 20-35 ms; docs/benchmarks.md).
            gc.collect()
            gc.freeze()
        async with (
            metrics_endpoint(
                self.metrics.registry, self.settings.http_host, self._metrics_bind
            ) as endpoint,
            asyncio.TaskGroup() as tg,
        ):
            if endpoint is not None:
                self.metrics_port = endpoint.port
                tg.create_task(endpoint.serve(), name="metrics")
            actors.bind(tg)
            tg.create_task(store.run(), name="device-store")
            tg.create_task(self.publisher.run(), name="outbox")
            tg.create_task(self.committer.run(), name="committer")
            tg.create_task(self.desk.run_timers(reads, self._refresh.put_nowait), name="timers")
            tg.create_task(self._board_refresher(reads), name="boards")
            tg.create_task(self.notifier.run_digests(), name="digests")
            tg.create_task(self.notifier.run_acks(), name="read-receipts")
            tg.create_task(self.admin.run(), name="admin-commands")
            tg.create_task(self.outages.run(), name="outages")
            tg.create_task(watch.run(), name="self-watch")
            tg.create_task(self._mqtt_loop(), name="mqtt")

    async def _board_refresher(self, sessions: Callable[[], AsyncSession]) -> None:
        """Show what the committer read in its own transaction, and read the slots of machines
        whose boards moved for other reasons (time passing, an admin change), in order."""
        while True:
            items = [await self._refresh.get()]
            while not self._refresh.empty():
                items.append(self._refresh.get_nowait())
            try:
                slots: dict[str, BoardRows] = {}
                for item in items:
                    slots.update(
                        item if isinstance(item, dict) else await self._read_slots(item, sessions)
                    )
                await self._show_slots(slots)
            except Exception:  # a failed refresh is redone by the next change or tick
                log.exception("board refresh failed for %d items", len(items))

    async def _refresh_boards(
        self, devices: set[str], sessions: Callable[[], AsyncSession]
    ) -> None:
        """Recompute current and next slots of ``devices`` from SQL and publish what moved."""
        await self._show_slots(await self._read_slots(devices, sessions))

    async def _read_slots(
        self, devices: set[str], sessions: Callable[[], AsyncSession]
    ) -> dict[str, BoardRows]:
        if not devices:
            return {}
        async with sessions() as session:
            conn = await session.connection()
            return await conn.run_sync(board_slots, devices, datetime.now(UTC))

    async def _show_slots(self, slots: dict[str, BoardRows]) -> None:
        """Give machines their current and next slots; publish the boards that moved at once."""
        assert self.tracker is not None
        assert self.store is not None
        ts, moment = now(), datetime.now(UTC)
        outbound: list[Outbound] = []
        for device, rows in slots.items():
            if device not in self.tracker.views:
                continue
            current, nxt = current_and_next(rows, moment)
            effects = self.tracker.set_slots(device, current, nxt, ts)
            if effects.view is None:
                continue
            outbound += effects.publish
            if effects.status_changed or effects.alerts:
                # A move of the slots alone is not stored: slots are read from SQL at start,
                # and board versions carry the bridge generation, so they still only grow.
                self.store.enqueue(
                    effects.view, effects.status_changed, effects.alerts, effects.view.since
                )
        if outbound:
            await self.publish_all(outbound)

    async def _mqtt_loop(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        client = service_client(self.settings, self.identifier, persistent=True)
        while True:
            try:
                async with client:
                    self._client = client
                    filters = [
                        self.topics.all_presence,
                        self.topics.all_state,
                        self._requests_filter(),
                        self.topics.admin_requests,
                        self.topics.all_acks,
                    ]
                    granted = await client.subscribe([(f, 1) for f in filters])
                    for f, code in zip(filters, granted or [], strict=False):
                        if int(getattr(code, "value", 0)) >= 0x80:
                            log.error("the broker refused subscription %s: %s", f, code)
                    backoff.reset()
                    self.connected.set()
                    await self.republish_board()
                    self.ready.set()
                    log.info(
                        "bridge connected to %s:%d",
                        self.settings.mqtt_host,
                        self.settings.mqtt_port,
                    )
                    async for message in client.messages:
                        props = message.properties
                        try:
                            await self.handle(
                                message.topic.value,
                                message.payload,
                                getattr(props, "ResponseTopic", None),
                                getattr(props, "CorrelationData", None),
                            )
                        except aiomqtt.MqttError:
                            raise
                        except Exception:  # a bug must not take the bridge down: log, go on
                            self.metrics.handler_errors += 1
                            log.exception("message on %s could not be handled", message.topic)
            except aiomqtt.MqttError as exc:
                self._client = None
                self.ready.clear()
                self.connected.clear()
                self.metrics.reconnects += 1
                delay = backoff.next_delay()
                log.warning("broker connection lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    def _requests_filter(self) -> str:
        group = self.settings.shared_group
        requests = self.topics.all_requests
        return self.topics.shared(group, requests) if group else requests

    async def handle(
        self,
        topic: str,
        payload: object,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        """Route one incoming message; never raises for bad input."""
        assert self.tracker is not None
        assert self.store is not None
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
        try:
            parsed = self.topics.parse(topic)
        except TopicError as exc:
            self.metrics.unknown_topics += 1
            log.warning("dropped message on unknown topic: %s", exc)
            return
        if isinstance(parsed, RequestTopic):
            assert self.desk is not None
            immediate = self.desk.handle(parsed, raw, response_topic, correlation)
            if immediate:
                await self.publish_all(immediate)
            return
        if isinstance(parsed, UserTopic) and parsed.channel == "acks":
            assert self.notifier is not None
            self.notifier.ack(parsed.user, raw)
            return
        if isinstance(parsed, AdminRequestTopic):
            assert self.admin is not None
            self.admin.submit(raw, response_topic, correlation)
            return
        if not isinstance(parsed, DeviceTopic) or parsed.channel is DeviceChannel.CMD:
            self.metrics.unknown_topics += 1
            log.warning("dropped message on a topic the bridge does not handle: %s", topic)
            return
        if not raw:
            return  # an empty retained payload clears a removed machine's topic
        if parsed.device in self.tracker.removed:
            # a removed machine's late will (or a retained copy): clear it again, show nothing
            await self.publish_all([Outbound(topic, b"", retain=True)])
            return
        limit = self.settings.max_payload_bytes
        try:
            if parsed.channel is DeviceChannel.PRESENCE:
                effects = self.tracker.on_presence(
                    parsed.device, decode(Presence, raw, limit), now()
                )
            else:
                state = decode(DeviceState, raw, limit)
                before = self.tracker.views.get(parsed.device)
                effects = self.tracker.on_state(parsed.device, state, now())
                code = state.session.reservation_code if state.session else None
                known = before.session.reservation_code if before and before.session else None
                # A new code typed on the machine; the session the bridge itself started
                # carries the same code back and is not a second check-in.
                if (
                    effects.view is not None
                    and state.state is MachineState.IN_USE
                    and code
                    and code != known
                ):
                    assert self.desk is not None
                    self.desk.check_in_by_code(parsed.device, code)
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

    async def _raise_alert(self, alert: AdminAlert) -> None:
        assert self.store is not None
        await self.publish_all([Outbound(self.topics.admin_alerts, alert.encode())])
        self.store.enqueue(None, False, [alert], alert.timestamp)

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
                *(
                    client.publish(
                        o.topic, o.payload, qos=o.qos, retain=o.retain, properties=o.properties()
                    )
                    for o in outbound
                )
            )
        except aiomqtt.MqttError as exc:
            log.warning("publish failed (%s); boards are re-published on reconnect", exc)
            return
        self.metrics.board_published += sum(1 for o in outbound if o.retain)
