"""The help call follows its player (plaza.help.follows): when a reservation is checked in,
the player's waiting call moves to that machine, in the same transaction, with an admin alert
naming the new machine. Written by :meth:`bridge.writes.Writes.flush_batch`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from bridge.alerts import make_alert
from bridge.models import Outbound
from plaza import help as rules
from plaza.messages import AdminAlert, AlertSeverity
from plaza.tables import HelpCallRow, table_of

_CALL = table_of(HelpCallRow)


@dataclass(frozen=True, slots=True)
class Follow:
    """``user`` checked in on ``device_id`` (named ``name``); alerts go to ``alerts_topic``."""

    user: str
    device_id: str
    name: str
    alerts_topic: str


def follow_rows(
    conn: Connection, follows: list[Follow], now: datetime
) -> tuple[list[AdminAlert], list[Outbound]]:
    """Move each player's waiting call to where they checked in; the alerts to store and
    publish."""
    alerts: list[AdminAlert] = []
    out: list[Outbound] = []
    for f in follows:
        waiting = conn.execute(
            sa.select(_CALL.c.id, _CALL.c.device_id, _CALL.c.status).where(
                _CALL.c.player == f.user, _CALL.c.status.in_([s.value for s in rules.WAITING])
            )
        ).all()
        for call in waiting:
            if not rules.follows(rules.HelpStatus(call.status), call.device_id, f.device_id):
                continue
            conn.execute(
                sa.update(_CALL).where(_CALL.c.id == call.id).values(device_id=f.device_id)
            )
            alert = make_alert(
                "help_moved",
                AlertSeverity.HIGH,
                now.timestamp(),
                f.device_id,
                user=f.user,
                name=f.name,
                previous=call.device_id,
                help_id=call.id,
            )
            alerts.append(alert)
            out.append(Outbound(f.alerts_topic, alert.encode()))
    return alerts, out
