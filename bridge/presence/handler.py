"""PresenceHandler: a machine's presence and state messages in, its board and events out.

The tracker decides (pure); this publishes what it returns at once and hands the view to the
store, which commits behind the publish. It also notices a reservation code the machine
reports in a new session (a player typed it there) and hands a check-in to the reservation
intake; a session the bridge itself started carries the same code back and is not a second
check-in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiomqtt

from bridge.context import BridgeContext
from bridge.models import Incoming, Outbound
from bridge.presence.board_sync import BoardSync, entry_body, to_republish
from bridge.presence.store import DeviceStore
from bridge.presence.tracker import Effects, PresenceTracker
from plaza.messages import (
    AdminAlert,
    DeviceState,
    MachineState,
    PayloadError,
    Presence,
    decode,
    now,
)
from plaza.mqtt import PlazaClient
from plaza.topics import DeviceChannel, DeviceTopic

log = logging.getLogger(__name__)


class PresenceHandler:
    def __init__(
        self,
        ctx: BridgeContext,
        *,
        tracker: PresenceTracker,
        store: DeviceStore,
        check_in_by_code: Callable[[str, str], None],
    ) -> None:
        self.topics = ctx.topics
        self._metrics = ctx.metrics
        self._publish = ctx.link.publish
        #: a machine's change goes out without waiting for its PUBACK (in order with every
        #: other publish): the main loop reads the next message meanwhile
        self._publish_behind = ctx.link.publish_behind
        self._limit = ctx.settings.max_payload_bytes
        self.tracker = tracker
        self.store = store
        self._check_in_by_code = check_in_by_code
        #: several bridges: a machine's board, events, alerts and rows are its owner's alone
        #: (every bridge still tracks every machine, to take it over warm)
        self._owns = ctx.ownership.owns
        self._link = ctx.link
        self.board_sync = BoardSync(self.topics, ctx.settings.bridge_id, payload_limit=self._limit)
        self._sync_wanted = asyncio.Event()
        self._sync_for: tuple[PlazaClient, dict[str, int]] | None = None

    async def handle(self, where: DeviceTopic, message: Incoming) -> bool:
        """A presence or state message; False for a machine's cmd topic (not ours to read)."""
        if where.channel is DeviceChannel.CMD:
            return False
        raw = message.payload
        if not raw:
            return True  # an empty retained payload clears a removed machine's topic
        if where.device in self.tracker.removed:
            # a removed machine's late will (or a retained copy): clear it again, show nothing
            await self._publish([Outbound(message.topic, b"", retain=True)])
            return True
        try:
            if where.channel is DeviceChannel.PRESENCE:
                effects = self.tracker.on_presence(
                    where.device, decode(Presence, raw, self._limit), now()
                )
            else:
                effects = self._on_state(where.device, decode(DeviceState, raw, self._limit))
        except PayloadError as exc:
            self._metrics.bad_payloads += 1
            log.warning(
                "dropped bad payload on %s: %s", message.topic, exc, extra={"sender": where.device}
            )
            return True
        await self.apply(effects)
        return True

    def _on_state(self, device: str, state: DeviceState) -> Effects:
        before = self.tracker.views.get(device)
        effects = self.tracker.on_state(device, state, now())
        code = state.session.reservation_code if state.session else None
        known = before.session.reservation_code if before and before.session else None
        # A new code typed on the machine; the session the bridge itself started carries the
        # same code back and is not a second check-in.
        if (
            effects.view is not None
            and state.state is MachineState.IN_USE
            and code
            and code != known
            and self._owns(device)
        ):
            self._check_in_by_code(device, code)
        return effects

    async def apply(self, effects: Effects) -> None:
        """Publish what the tracker decided, then store the view behind it."""
        if effects.view is not None and not self._owns(effects.view.id):
            return
        if effects.publish:
            await self._publish_behind(effects.publish)
        self.store.enqueue(
            effects.view,
            effects.status_changed,
            effects.alerts,
            effects.view.since if effects.view else time.time(),
        )

    async def took_over(self, devices: set[str]) -> None:
        """Machines this bridge has just taken over: their boards again, with a version of
        this bridge's (just raised) generation, above anything the old owner published."""
        ts = now()
        out = []
        for device in devices:
            view = self.tracker.views.get(device)
            if view is not None and view.version > 0:
                view = view.advanced(self.tracker.generation, view.since)
                self.tracker.views[device] = view
                entry = view.entry(ts).encode()
                out.append(Outbound(self.topics.board(device), entry, retain=True))
        if out:
            await self._publish(out)

    async def raise_alert(self, alert: AdminAlert) -> None:
        """Publish an alert of the bridge's own at once, and store it behind the publish."""
        await self._publish([Outbound(self.topics.admin_alerts, alert.encode())])
        self.store.enqueue(None, False, [alert], alert.timestamp)

    async def republish_board(self) -> None:
        """After (re)connecting: restore what the broker lacks of the board (a publish lost
        while disconnected, retained messages a crashed broker did not save). The retained
        board is read back behind this call (:mod:`bridge.presence.board_sync`) and only the
        entries missing or older there go out again."""
        ts = now()
        for effects in self.tracker.settle_managed(ts):
            if effects.view is not None and self._owns(effects.view.id):
                await self.apply(effects)
        client = self._link.client
        if client is None:
            return
        expected = {
            v.id: v.version
            for v in self.tracker.views.values()
            if v.version > 0 and self._owns(v.id)
        }
        self._sync_for = (client, expected)
        self._sync_wanted.set()

    async def run_board_sync(self) -> None:
        """The board reads :meth:`republish_board` asks for, one at a time: a new connect
        cancels the read of the last one (its client is gone), and so does the bridge's
        stop."""
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            assert self._sync_for is not None
            reading = asyncio.ensure_future(self._sync(*self._sync_for))
            wanted = asyncio.ensure_future(self._sync_wanted.wait())
            try:
                await asyncio.wait({reading, wanted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reading, wanted):
                    task.cancel()
                await asyncio.gather(reading, wanted, return_exceptions=True)

    async def _sync(self, client: PlazaClient, expected: dict[str, int]) -> None:
        try:
            held = await self.board_sync.read(client, expected) if expected else {}
        except aiomqtt.MqttError as exc:
            if self._link.client is not client:  # the connection went: the next one reads
                log.info("board sync stopped: %s", exc)
                return
            # a SUBACK that timed out on a live connection, a refused subscription: what the
            # broker holds is unknown, so every entry goes out again
            log.warning("board sync could not read the board (%s); publishing every entry", exc)
            held = {}
        except Exception:  # a bug must not take the bridge down; every entry goes out again
            log.exception("board sync failed; publishing every entry again")
            held = {}
        if self._link.client is not client:
            return
        views = self.tracker.views
        current = {d: v.version for d, v in views.items() if self._owns(d)}
        versions = {d: int(body["version"]) for d, body in held.items()}
        ts = now()
        # the unchanged views' entries, encoded once: compared with the broker's copy as the
        # board sync reads it, and published as they are if it differs
        same = {
            d: views[d].entry(ts).encode()
            for d, v in expected.items()
            if versions.get(d) == v and current.get(d) == v
        }
        stale = [d for d, e in same.items() if entry_body(e, len(e)) != held[d]]
        again = to_republish(expected, versions, current, stale)
        out = [
            Outbound(self.topics.board(d), same.get(d) or views[d].entry(ts).encode(), retain=True)
            for d in again
        ]
        # a machine removed while the broker was away: its entry is cleared again
        gone = [d for d in held if d in self.tracker.removed and self._owns(d)]
        out += [Outbound(self.topics.board(d), b"", retain=True) for d in gone]
        await self._publish(out)
        self._metrics.board_republished += len(again)
        log.info(
            "board sync: the broker held %d of %d entries (%d of an older content); "
            "published again: %d; cleared: %d",
            sum(1 for d, v in expected.items() if versions.get(d, -1) >= v),
            len(expected),
            len(stale),
            len(again),
            len(gone),
        )
