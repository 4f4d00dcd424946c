"""Read receipts of notifications, shared by the bridge (``users/{user}/acks``) and the api
(``POST /me/notifications/read``): plain SQL on a synchronous connection (``run_sync``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection, Table

from plaza.messages import NotificationAck
from plaza.tables import Notification


def mark_read(conn: Connection, user: str, ack: NotificationAck, now: datetime) -> int:
    """Set ``read_at`` on the acknowledged notifications of ``user``; return how many."""
    table = Notification.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    where = [table.c.user == user, table.c.read_at.is_(None)]
    if ack.up_to is not None and ack.seqs:
        where.append(sa.or_(table.c.seq <= ack.up_to, table.c.seq.in_(ack.seqs)))
    elif ack.up_to is not None:
        where.append(table.c.seq <= ack.up_to)
    elif ack.seqs:
        where.append(table.c.seq.in_(ack.seqs))
    else:
        return 0
    result = conn.execute(sa.update(table).where(*where).values(read_at=now))
    return int(result.rowcount or 0)
