"""Help calls as stored and as shown: shared by the bridge (which writes them) and the api
(which lists them). The rules are :mod:`plaza.help`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from plaza.messages import HelpCall
from plaza.tables import as_utc


def _ts(moment: datetime | None) -> float | None:
    return as_utc(moment).timestamp() if moment is not None else None


def call_public(row: Any) -> HelpCall:
    """A ``help_call`` row (a table object or a Core row) on the wire."""
    return HelpCall(
        id=row.id,
        user=row.player,
        device_id=row.device_id,
        topic=row.topic,
        message=row.message,
        status=row.status,
        created_at=as_utc(row.created_at).timestamp(),
        acknowledged_at=_ts(row.acknowledged_at),
        acknowledged_by=row.acknowledged_by,
        resolved_at=_ts(row.resolved_at),
        resolved_by=row.resolved_by,
    )
