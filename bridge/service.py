"""BridgeService: the bridge process. Wiring, and the MQTT loop; the work is in the parts.

:func:`assemble` builds every part from one :class:`~bridge.context.BridgeContext` (after
reading what start-up needs from SQL: the bridge generation and every machine's view), and
:meth:`BridgeService.run` runs them in one TaskGroup. The broker connections (two: the main
one and the intake, see :mod:`bridge.connections`) reconnect forever with jittered backoff
and keep persistent sessions; every message goes through the :class:`~bridge.router.Router`.
See docs/architecture.md for the path of a command and of a board refresh.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.admin import AdminDesk
from bridge.connections import Connections
from bridge.context import BridgeContext, open_context
from bridge.cooloff import CoolingOff, Dynsec
from bridge.flood import FloodGate
from bridge.help import HelpDesk
from bridge.link import Link
from bridge.metrics import BridgeMetrics
from bridge.metrics_http import metrics_endpoint
from bridge.models import Incoming, Outbound
from bridge.notifier import Notifier
from bridge.outbox import OutboxPublisher
from bridge.partitions import Ownership
from bridge.presence.boards import BoardRefresher
from bridge.presence.handler import PresenceHandler
from bridge.presence.outages import OutageWatch
from bridge.presence.store import DeviceStore, load_views, start_generation
from bridge.presence.tracker import PresenceTracker
from bridge.reservations.actors import ActorPool
from bridge.reservations.batch_runner import BatchRunner
from bridge.reservations.committer import Committer
from bridge.reservations.intake import ReservationDesk
from bridge.reservations.timers import Timers
from bridge.reservations.venue_intake import VenueDesk, venue_route
from bridge.retention import Keep, Retention
from bridge.router import Handler, Router
from bridge.selfwatch import Readings, SelfWatch
from plaza.acl import API_USER
from plaza.settings import Settings
from plaza.topics import (
    AdminRequestTopic,
    BoardTopic,
    BrokerSysTopic,
    DeviceTopic,
    RequestTopic,
    Topics,
    UserTopic,
    VenueRequestTopic,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Parts:
    """Every part of a running bridge, built by :func:`assemble`."""

    ctx: BridgeContext
    tracker: PresenceTracker
    store: DeviceStore
    presence: PresenceHandler
    boards: BoardRefresher
    committer: Committer
    runner: BatchRunner
    actors: ActorPool
    desk: ReservationDesk
    timers: Timers
    admin: AdminDesk
    notifier: Notifier
    outages: OutageWatch
    selfwatch: SelfWatch
    router: Router
    retention: Retention
    gate: FloodGate
    cooloff: CoolingOff
    connections: Connections


async def assemble(ctx: BridgeContext, ready: asyncio.Event | None = None) -> Parts:
    """Read what start-up needs from SQL and build every part around ``ctx``."""
    settings = ctx.settings
    generation = await start_generation(ctx.sessions)
    tracker = PresenceTracker(
        ctx.topics,
        await load_views(ctx.sessions),
        generation,
        ctx.metrics,
        flap_count=settings.flap_count,
        flap_window=settings.flap_window,
        pre_slot_lock=settings.pre_slot_lock,
    )
    store = DeviceStore(ctx, removed=tracker.removed)
    boards = BoardRefresher(
        tracker=tracker,
        store=store,
        reads=ctx.reads,
        publish=ctx.link.publish,
        owns=ctx.ownership.owns,
    )
    committer = Committer(ctx)
    runner = BatchRunner(
        committer.commit,
        gate=ctx.gate,
        batch_max=settings.commit_batch_max,
        publish=ctx.outbox.enqueue,
        on_boards=boards.committed,
    )
    actors = ActorPool(runner.submit, idle_seconds=settings.actor_idle_seconds)
    desk = ReservationDesk(
        settings, ctx.topics, actors, ctx.metrics.commands, removed=tracker.removed
    )
    presence = PresenceHandler(
        ctx, tracker=tracker, store=store, check_in_by_code=desk.check_in_by_code
    )
    notifier = Notifier(ctx)
    help_desk = HelpDesk(ctx)
    admin = AdminDesk(ctx, presence=presence, refresh=boards.moved, help_desk=help_desk)
    selfwatch = SelfWatch(
        lambda: Readings(
            db_errors=ctx.metrics.db_errors + runner.failed_batches, backlog=actors.depth()
        ),
        presence.raise_alert,
        settings.backlog_alert,
        settings.alert_cooldown,
    )
    router = Router(ctx.topics, ctx.metrics)
    router.route(DeviceTopic, presence.handle)
    router.route(BoardTopic, presence.board_sync.handle)
    router.route(RequestTopic, _requests(desk, ctx.link, ctx.ownership))
    router.route(
        VenueRequestTopic, venue_route(VenueDesk(desk, help_desk), ctx.link, ctx.ownership)
    )
    router.route(UserTopic, notifier.handle)
    router.route(AdminRequestTopic, admin.submit)
    router.route(BrokerSysTopic, _broker_figures(ctx.metrics))
    gate = FloodGate(
        settings.flood_burst,
        settings.flood_rate,
        settings.flood_disable_after,
        exempt=frozenset({API_USER.encode()}),
        dropped=ctx.metrics.dropped,
    )
    dynsec = Dynsec(ctx.link, settings.service_timeout)
    cooloff = CoolingOff(ctx, gate=gate, dynsec=dynsec, raise_alert=presence.raise_alert)
    gate.on_flood = cooloff.flooding
    connections = Connections(
        settings,
        ctx.topics,
        ctx.link,
        ctx.metrics,
        router,
        gate=gate,
        dynsec=dynsec,
        on_main_connected=presence.republish_board,
        markers={presence.board_sync.marker_topic: presence.board_sync.marked},
        ready=ready,
    )
    _wire_ownership(
        ctx, tracker=tracker, desk=desk, actors=actors, presence=presence, boards=boards
    )
    return Parts(
        ctx=ctx,
        tracker=tracker,
        store=store,
        presence=presence,
        boards=boards,
        committer=committer,
        runner=runner,
        actors=actors,
        desk=desk,
        timers=Timers(
            ctx,
            submit=actors.submit,
            refresh_boards=boards.moved,
            free=tracker.available,
            floor=committer.floor,
            walk_ins=tracker.walk_ins,
        ),
        admin=admin,
        notifier=notifier,
        outages=OutageWatch(ctx, tracker=tracker),
        selfwatch=selfwatch,
        router=router,
        retention=Retention(
            ctx.sessions, ctx.gate, Keep.from_settings(settings), every=settings.prune_interval
        ),
        gate=gate,
        cooloff=cooloff,
        connections=connections,
    )


def _broker_figures(metrics: BridgeMetrics) -> Handler[BrokerSysTopic]:
    """One of Mosquitto's $SYS figures: kept for the ``plaza_broker_*`` metrics."""

    async def handle(where: BrokerSysTopic, message: Incoming) -> bool:
        metrics.broker.apply(message.topic, message.payload)
        return True

    return handle


def _requests(desk: ReservationDesk, link: Link, ownership: Ownership) -> Handler[RequestTopic]:
    """A request: the desk makes it a job, or answers it at once (published right away);
    one for a machine another bridge owns is only kept, for a handover."""

    async def handle(where: RequestTopic, message: Incoming) -> bool:
        if not ownership.owns(where.device):
            ownership.keep(where.device, (where, message))
            return True
        immediate = desk.handle(where, message.payload, message.response_topic, message.correlation)
        if immediate:
            link.post(immediate)  # never wait on the broker before reading the next request
        return True

    return handle


def _wire_ownership(
    ctx: BridgeContext,
    *,
    tracker: PresenceTracker,
    desk: ReservationDesk,
    actors: ActorPool,
    presence: PresenceHandler,
    boards: BoardRefresher,
) -> None:
    """What taking and giving up a slot does (several bridges, bridge/partitions.py)."""
    ownership = ctx.ownership

    def of_slot(devices: Iterable[str], slot: int) -> set[str]:
        return {d for d in devices if ownership.slot(d) == slot}

    async def bump() -> None:
        tracker.generation = await start_generation(ctx.sessions)

    async def gained(slot: int) -> None:
        # Replayed before any await: no new request of the slot can overtake them.
        immediate: list[Outbound] = []
        replayed = ownership.buffer.take(slot, time.monotonic())
        for where, message in replayed:
            immediate += desk.handle(
                where, message.payload, message.response_topic, message.correlation
            )
        if replayed:
            log.info("slot %d: replaying %d requests of the handover", slot, len(replayed))
        if immediate:
            await ctx.link.publish(immediate)
        devices = of_slot(tracker.views, slot)
        await presence.took_over(devices)
        boards.moved(devices)
        # what the slot's last owner committed but never published (killed in between)
        ctx.outbox.sweep_soon()

    async def releasing(slot: int) -> None:
        # The jobs already taken for the slot are decided here before it is unlocked.
        deadline = time.monotonic() + ctx.settings.handover_window / 4
        while of_slot(actors.pending, slot) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the actors' counts
            await asyncio.sleep(0.01)

    ownership.wire(bump=bump, gained=gained, releasing=releasing)


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
        self.link = Link(self.metrics, max_packet_size=settings.mqtt_max_packet_size)
        self.ready = asyncio.Event()
        #: the running bridge's parts (None until :meth:`run` has built them)
        self.parts: Parts | None = None
        self.metrics.watch(self)
        self._metrics_bind = (
            (settings.bridge_metrics_port or None) if metrics_port is None else metrics_port
        )
        #: the port /metrics is served on (None: not served)
        self.metrics_port: int | None = None

    # -- what tests and the metrics collector read of the running bridge ----------------------
    @property
    def tracker(self) -> PresenceTracker | None:
        return self.parts.tracker if self.parts else None

    @property
    def store(self) -> DeviceStore | None:
        return self.parts.store if self.parts else None

    @property
    def desk(self) -> ReservationDesk | None:
        return self.parts.desk if self.parts else None

    @property
    def timers(self) -> Timers | None:
        return self.parts.timers if self.parts else None

    @property
    def runner(self) -> BatchRunner | None:
        return self.parts.runner if self.parts else None

    @property
    def notifier(self) -> Notifier | None:
        return self.parts.notifier if self.parts else None

    @property
    def partitions(self) -> Ownership | None:
        return self.parts.ctx.ownership if self.parts else None

    @property
    def publisher(self) -> OutboxPublisher | None:
        return self.parts.ctx.outbox if self.parts else None

    async def handle(
        self,
        topic: str,
        payload: object,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        """Route one incoming message (as the MQTT loop does); never raises for bad input."""
        if self.parts is None:
            raise RuntimeError("the bridge is not running")
        await self.parts.router.handle(_incoming(topic, payload, response_topic, correlation))

    # -- running --------------------------------------------------------------------------------
    async def run(self) -> None:
        # Database work runs in worker threads; with the default 5 ms GIL switch interval a
        # busy event loop makes each hand-off wait up to 5 ms. 0.5 ms keeps them short.
        sys.setswitchinterval(0.0005)
        async with open_context(self.settings, self.topics, self.metrics, self.link) as ctx:
            parts = await assemble(ctx, self.ready)
            self.parts = parts
            try:
                await self._serve(parts)
            finally:
                parts.committer.close()

    async def _serve(self, parts: Parts) -> None:
        ctx = parts.ctx
        unsent = await ctx.outbox.load_unsent()
        log.info(
            "bridge generation %d, %d machines known, %d outbox rows to send",
            parts.tracker.generation,
            len(parts.tracker.views),
            unsent,
        )
        await parts.boards.refresh(set(parts.tracker.views))
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
            parts.actors.bind(tg)
            tg.create_task(parts.store.run(), name="device-store")
            tg.create_task(ctx.outbox.run(), name="outbox")
            tg.create_task(parts.runner.run(), name="committer")
            tg.create_task(parts.timers.run(), name="timers")
            tg.create_task(ctx.ownership.run(parts.connections.ready), name="partitions")
            leading = ctx.ownership.while_leading
            tg.create_task(parts.boards.run(), name="boards")
            tg.create_task(parts.presence.run_board_sync(), name="board-sync")
            tg.create_task(leading(parts.notifier.run_digests, "digests"), name="lead-digests")
            tg.create_task(parts.notifier.run_acks(), name="read-receipts")
            tg.create_task(parts.admin.run(), name="admin-commands")
            tg.create_task(parts.admin.help.run(), name="help-calls")
            tg.create_task(leading(parts.outages.run, "outages"), name="lead-outages")
            tg.create_task(parts.selfwatch.run(), name="self-watch")
            tg.create_task(leading(parts.retention.run, "retention"), name="lead-retention")
            tg.create_task(ctx.link.run_posts(), name="refusals")
            tg.create_task(parts.cooloff.run(), name="cool-off")
            tg.create_task(parts.connections.sweeper.run(), name="retained-sweeper")
            tg.create_task(parts.connections.run_status(), name="status")
            tg.create_task(parts.connections.run_main(), name="mqtt-main")
            tg.create_task(parts.connections.run_intake(), name="mqtt-intake")


def _incoming(
    topic: str, payload: object, response_topic: str | None, correlation: bytes | None
) -> Incoming:
    raw = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
    return Incoming(topic, raw, response_topic, correlation)
