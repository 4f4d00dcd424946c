"""What a machine's board shows of its reservations: the current and the next slot.

The committer reads the rows of the machines a batch changed in its own transaction (so a
board shows exactly what was committed); the board refresher reads them on a reader session
for machines whose boards moved for other reasons (time passing, an admin change). The slots
are picked from the rows when the board is shown, since time may have crossed a boundary
meanwhile.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from bridge.sql import BoardAsk, SlotRow, batch_sql
from plaza.messages import Slot

#: a board entry's "next slot" looks this far ahead
BOARD_HORIZON = timedelta(hours=24)

#: a machine's current and next reservation slot, as its board entry shows them
BoardSlots = tuple[Slot | None, Slot | None]
#: a machine's live reservation rows up to the board's horizon
BoardRows = list[Any]


def board_slots(
    conn: Connection, devices: Collection[str], moment: datetime
) -> dict[str, BoardRows]:
    """The live reservation rows of each of ``devices`` from ``moment`` to the horizon, read on
    a synchronous connection: the committer's own transaction or a reader's."""
    if not devices:
        return {}
    return by_device(devices, batch_sql(conn).board_rows(devices, moment, moment + BOARD_HORIZON))


def board_ask(devices: Collection[str], moment: datetime) -> BoardAsk | None:
    """The read of :func:`board_slots`, to go with a batch's writes (None: no machines)."""
    return BoardAsk(devices, moment, moment + BOARD_HORIZON) if devices else None


def by_device(devices: Collection[str], rows: Iterable[SlotRow]) -> dict[str, BoardRows]:
    """Board rows per machine (every one of ``devices``, with or without rows)."""
    grouped: dict[str, list[Any]] = {d: [] for d in devices}
    for row in rows:
        grouped[row.device_id].append(row)
    return grouped


def current_and_next(rows: list[Any], now: datetime) -> BoardSlots:
    """Of one machine's active reservation rows: the one under way at ``now`` and the next."""
    current = nxt = None
    for row in sorted(rows, key=lambda r: r.starts_at):
        if row.starts_at <= now < row.ends_at and current is None:
            current = row
        elif row.starts_at > now and nxt is None:
            nxt = row

    def wire(row: Any) -> Slot | None:
        if row is None:
            return None
        return Slot(
            reservation_id=row.id,
            starts_at=row.starts_at.timestamp(),
            ends_at=row.ends_at.timestamp(),
            status=row.status,
        )

    return wire(current), wire(nxt)
