"""The bridge's live view of one machine, and the board entry derived from it (pure).

Board versions must grow across bridge restarts even though SQL is written behind the publish
(group commit): a version is ``generation * 2**32 + counter``, where ``generation`` is bumped
and committed once at bridge start, before anything is published.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from plaza.messages import BoardEntry, BoardStatus, MachineState, Position, Session, Slot
from plaza.rules import Status

LockReason = Literal["reservation", "maintenance"]

GENERATION_SHIFT = 2**32


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    name: str
    kind: str
    zone: str
    maintenance: bool = False
    online: bool = False
    state: MachineState = MachineState.IDLE
    epoch: int = -1
    state_epoch: int = -1
    state_seq: int = -1
    session: Session | None = None
    fault: str | None = None
    version: int = 0
    status: BoardStatus = BoardStatus.OFFLINE
    since: float = 0.0
    current_slot: Slot | None = None
    next_slot: Slot | None = None
    #: False: no agent (a console, a cabinet): staff set its state, it is never offline
    agent: bool = True
    #: PLAZA_PRE_SLOT_LOCK (seconds): an approved slot's machine is locked this long before
    lock_lead: float = 0.0
    #: derived like ``status``: "reservation" or "maintenance" while the machine is locked
    locked: LockReason | None = None
    pos: Position | None = None

    def derive_lock(self, ts: float) -> LockReason | None:
        """Locked for maintenance, or kept free for an approved slot under way or starting
        within ``lock_lead`` (see plaza/floor.py); None when walk-ins may sit down."""
        if self.maintenance or self.state is MachineState.MAINTENANCE:
            return "maintenance"
        approved = Status.APPROVED.value
        for slot in (self.current_slot, self.next_slot):
            if slot and slot.status == approved and slot.starts_at - self.lock_lead <= ts:
                return "reservation"
        return None

    def derive_status(self) -> BoardStatus:
        if self.maintenance or self.state is MachineState.MAINTENANCE:
            return BoardStatus.MAINTENANCE
        if not self.online and self.agent:
            return BoardStatus.OFFLINE
        if self.state is MachineState.FAULT:
            return BoardStatus.FAULT
        if self.state is MachineState.IN_USE or self.checked_in_without_agent():
            return BoardStatus.IN_USE
        if self.current_slot is not None and self.current_slot.status == BoardStatus.HELD.value:
            return BoardStatus.HELD
        if self.current_slot is not None or self.locked == "reservation":
            return BoardStatus.RESERVED
        return BoardStatus.AVAILABLE

    def checked_in_without_agent(self) -> bool:
        """A machine without an agent has no session of its own: a booking checked in at
        the desk (also early, before its slot) is its session until the slot ends."""
        slots = (self.current_slot, self.next_slot)
        return not self.agent and any(s is not None and s.status == "checked_in" for s in slots)

    def advanced(self, generation: int, ts: float, **changes: object) -> DeviceView:
        """A copy with ``changes`` applied, the status re-derived and the version bumped."""
        nxt = replace(self, **changes)  # type: ignore[arg-type]
        nxt = replace(nxt, locked=nxt.derive_lock(ts))
        status = nxt.derive_status()
        base = generation * GENERATION_SHIFT
        version = max(self.version, base) + 1
        since = ts if status is not self.status else self.since
        return replace(nxt, status=status, version=version, since=since)

    def entry(self, ts: float) -> BoardEntry:
        return BoardEntry(
            device_id=self.id,
            name=self.name,
            kind=self.kind,
            zone=self.zone,
            status=self.status,
            online=self.online or not self.agent,
            state=self.state,
            epoch=self.epoch,
            version=self.version,
            session=self.session,
            current_slot=self.current_slot,
            next_slot=self.next_slot,
            since=self.since,
            pos=self.pos,
            ts=ts,
            managed=None if self.agent else "staff",
            locked=self.locked,
        )
