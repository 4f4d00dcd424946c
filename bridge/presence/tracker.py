"""PresenceTracker: machine presence and state in, board entries, events and alerts out.

Theory of operation
-------------------
A machine connects with a retained will ``{online:false, epoch:E}`` and publishes a retained
birth ``{online:true, epoch:E}``; E grows on every connection. The tracker keeps the current
epoch per machine and *fences* any presence whose epoch is older: a late will from a dead
connection must never turn a live machine offline. States are ordered by (epoch, seq).

The tracker does no I/O. Each handler returns :class:`Effects` (messages to publish, the view
to persist, an optional history row and alerts); :mod:`bridge.presence.handler` publishes
and writes them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bridge.alerts import make_alert
from bridge.metrics import BridgeMetrics
from bridge.models import Outbound
from bridge.presence.board import DeviceView
from plaza.floor import is_walk_in
from plaza.messages import (
    AdminAlert,
    AlertSeverity,
    BoardStatus,
    DeviceEventType,
    DeviceState,
    DeviceStatusEvent,
    MachineState,
    Position,
    Presence,
    Slot,
)
from plaza.topics import Topics

_EVENT_FOR: dict[BoardStatus, DeviceEventType] = {
    BoardStatus.AVAILABLE: "device_available",
    BoardStatus.RESERVED: "device_available",
    BoardStatus.IN_USE: "device_in_use",
    BoardStatus.OFFLINE: "device_offline",
    BoardStatus.FAULT: "device_fault",
    BoardStatus.MAINTENANCE: "device_maintenance",
    BoardStatus.HELD: "device_held",
}


@dataclass
class Effects:
    publish: list[Outbound] = field(default_factory=list)
    view: DeviceView | None = None
    status_changed: bool = False
    alerts: list[AdminAlert] = field(default_factory=list)


class PresenceTracker:
    def __init__(
        self,
        topics: Topics,
        views: dict[str, DeviceView],
        generation: int,
        metrics: BridgeMetrics,
        *,
        flap_count: int = 4,
        flap_window: float = 300.0,
        pre_slot_lock: float = 0.0,
    ) -> None:
        self.topics = topics
        #: PLAZA_PRE_SLOT_LOCK: boards show a machine locked this long before its slot
        self.pre_slot_lock = pre_slot_lock
        self.flap_count = flap_count
        self.flap_window = flap_window
        #: when each machine came online lately, and when it was last reported as flapping
        self._births: dict[str, deque[float]] = {}
        self._flap_alerted: dict[str, float] = {}
        self.views = views
        self.generation = generation
        self.metrics = metrics
        #: machines removed by an admin while this bridge runs: what they (or a late will)
        #: still publish is cleared, not shown (a re-provisioned machine is synced back in)
        self.removed: set[str] = set()

    def available(self) -> list[tuple[str, str, float | None]]:
        """The machines a player could sit down at now (board status available), as
        (id, kind, when their next reservation starts: None if none is in sight)."""
        return [
            (v.id, v.kind, v.next_slot.starts_at if v.next_slot else None)
            for v in self.views.values()
            if v.status is BoardStatus.AVAILABLE and v.id not in self.removed
        ]

    def _view(self, device: str) -> DeviceView:
        view = self.views.get(device)
        if view is None:  # a machine provisioned in the broker but not yet in SQL
            view = DeviceView(id=device, name=device, kind="pc", zone="main")
            self.views[device] = view
        return view

    def on_presence(self, device: str, presence: Presence, ts: float) -> Effects:
        view = self._view(device)
        if not view.agent:  # staff set its state; whatever connects under its name is not it
            self.metrics.fenced_presences += 1
            return Effects()
        if presence.epoch < view.epoch:
            self.metrics.fenced_presences += 1
            return Effects()
        if presence.epoch == view.epoch and presence.online == view.online:
            return Effects()  # a retained copy we already applied
        self.metrics.presence_applied += 1
        return self._advance(view, ts, online=presence.online, epoch=presence.epoch)

    def on_state(self, device: str, state: DeviceState, ts: float) -> Effects:
        view = self._view(device)
        if not view.agent:
            self.metrics.stale_states += 1
            return Effects()
        if (state.epoch, state.seq) <= (view.state_epoch, view.state_seq):
            self.metrics.stale_states += 1
            return Effects()
        self.metrics.states_applied += 1
        return self._advance(
            view,
            ts,
            state=state.state,
            state_epoch=state.epoch,
            state_seq=state.seq,
            session=state.session,
            fault=state.fault if state.state is MachineState.FAULT else None,
        )

    def set_managed_state(
        self, device: str, state: MachineState, fault: str | None, ts: float
    ) -> Effects:
        """Staff set the state of a machine without an agent (the caller checked it has none)."""
        view = self._view(device)
        fault = fault if state is MachineState.FAULT else None
        if (view.state, view.fault) == (state, fault) and view.version > 0:
            return Effects()
        return self._advance(view, ts, state=state, fault=fault, session=None)

    def settle_managed(self, ts: float) -> list[Effects]:
        """Machines without an agent whose board entry is missing or stale (one seeded
        before the bridge ever ran, one that had an agent until now): their entry, as staff
        would see it. Called on connecting, before the board is republished."""
        return [
            self._advance(view, ts)
            for view in list(self.views.values())
            if not view.agent
            and view.id not in self.removed
            and (view.version == 0 or view.status is not view.derive_status())
        ]

    def set_maintenance(self, device: str, on: bool, ts: float) -> Effects:
        view = self._view(device)
        if view.maintenance == on:
            return Effects()
        return self._advance(view, ts, maintenance=on)

    def _flapping(self, view: DeviceView, ts: float, effects: Effects) -> None:
        """Alert once per window when a machine keeps coming back (flap_count births)."""
        births = self._births.setdefault(view.id, deque())
        births.append(ts)
        while births and ts - births[0] > self.flap_window:
            births.popleft()
        last = self._flap_alerted.get(view.id)
        if len(births) < self.flap_count or (last is not None and ts - last < self.flap_window):
            return
        self._flap_alerted[view.id] = ts
        alert = make_alert(
            "device_flapping",
            AlertSeverity.MEDIUM,
            ts,
            view.id,
            name=view.name,
            count=len(births),
            minutes=f"{self.flap_window / 60:g}",
        )
        effects.alerts.append(alert)
        effects.publish.append(Outbound(self.topics.admin_alerts, alert.encode()))

    def configure(
        self,
        device: str,
        *,
        name: str,
        kind: str,
        zone: str,
        maintenance: bool,
        ts: float,
        agent: bool = True,
        pos: Position | None = None,
    ) -> Effects:
        """An admin changed the machine's configuration (SQL is already written)."""
        view = self._view(device)
        changes = {
            "name": name,
            "kind": kind,
            "zone": zone,
            "maintenance": maintenance,
            "agent": agent,
            "pos": pos,
        }
        if all(getattr(view, k) == v for k, v in changes.items()) and view.version > 0:
            return Effects()
        return self._advance(view, ts, **changes)

    def set_slots(self, device: str, current: Slot | None, nxt: Slot | None, ts: float) -> Effects:
        """The machine's current and next reservation slots changed (or time moved on)."""
        view = self._view(device)
        same = (view.current_slot, view.next_slot) == (current, nxt)
        if same and view.locked == view.derive_lock(ts):  # (a lock window may have opened)
            return Effects()
        return self._advance(view, ts, current_slot=current, next_slot=nxt)

    def forget(self, device: str) -> list[Outbound]:
        """Drop a machine and clear its retained topics (empty retained payloads)."""
        self.views.pop(device, None)
        self.removed.add(device)
        return [
            Outbound(t, b"", retain=True)
            for t in (
                self.topics.board(device),
                self.topics.presence(device),
                self.topics.state(device),
            )
        ]

    def walk_ins(self) -> set[str]:
        """The machines in a walk-in session now: online, in use, no reservation code. A
        machine without an agent is never online in the bridge's view: staff set it in use,
        and it is a walk-in unless a booking is checked in on it at the desk."""
        return {
            v.id
            for v in self.views.values()
            if (v.online or not v.agent)
            and is_walk_in(
                v.state is MachineState.IN_USE, v.session.reservation_code if v.session else None
            )
            and not v.checked_in_without_agent()
            and v.id not in self.removed
        }

    def _advance(self, view: DeviceView, ts: float, **changes: object) -> Effects:
        changes.setdefault("lock_lead", self.pre_slot_lock)
        new = view.advanced(self.generation, ts, **changes)
        self.views[new.id] = new
        effects = Effects(view=new, status_changed=new.status is not view.status)
        effects.publish.append(
            Outbound(self.topics.board(new.id), new.entry(ts).encode(), retain=True)
        )
        came_online = new.online and not view.online
        if effects.status_changed or came_online:
            event = DeviceStatusEvent(
                type="device_online" if came_online else _EVENT_FOR[new.status],
                device_id=new.id,
                status=new.status,
                timestamp=ts,
                metadata={"epoch": new.epoch, "previous": view.status.value},
            )
            effects.publish.append(Outbound(self.topics.device_events, event.encode()))
        if came_online:
            self._flapping(new, ts, effects)
        if new.status is BoardStatus.FAULT and view.status is not BoardStatus.FAULT:
            alert = make_alert(
                "device_fault",
                AlertSeverity.HIGH,
                ts,
                new.id,
                name=new.name,
                fault=new.fault,
            )
            effects.alerts.append(alert)
            effects.publish.append(Outbound(self.topics.admin_alerts, alert.encode()))
        return effects
