"""The bridge's live view of one machine, and the board entry derived from it (pure).

Board versions must grow across bridge restarts even though SQL is written behind the publish
(group commit): a version is ``generation * 2**32 + counter``, where ``generation`` is bumped
and committed once at bridge start, before anything is published.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from plaza.messages import BoardEntry, BoardStatus, MachineState, Position, Session, Slot

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
    pos: Position | None = None

    def derive_status(self) -> BoardStatus:
        if self.maintenance or self.state is MachineState.MAINTENANCE:
            return BoardStatus.MAINTENANCE
        if not self.online:
            return BoardStatus.OFFLINE
        if self.state is MachineState.FAULT:
            return BoardStatus.FAULT
        if self.state is MachineState.IN_USE:
            return BoardStatus.IN_USE
        if self.current_slot is not None and self.current_slot.status == BoardStatus.HELD.value:
            return BoardStatus.HELD
        if self.current_slot is not None:
            return BoardStatus.RESERVED
        return BoardStatus.AVAILABLE

    def advanced(self, generation: int, ts: float, **changes: object) -> DeviceView:
        """A copy with ``changes`` applied, the status re-derived and the version bumped."""
        nxt = replace(self, **changes)  # type: ignore[arg-type]
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
            online=self.online,
            state=self.state,
            epoch=self.epoch,
            version=self.version,
            session=self.session,
            current_slot=self.current_slot,
            next_slot=self.next_slot,
            since=self.since,
            pos=self.pos,
            ts=ts,
        )
