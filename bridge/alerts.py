"""Admin alerts as the bridge raises them: typed, in Korean (the venue's staff) and English,
and the ``alert`` table row each one is stored as."""

from __future__ import annotations

import uuid
from typing import Any

from plaza.i18n import alert_texts
from plaza.messages import AdminAlert, AlertSeverity
from plaza.tables import from_timestamp


def make_alert(
    kind: str,
    severity: AlertSeverity,
    ts: float,
    device_id: str | None,
    /,
    **params: object,
) -> AdminAlert:
    ko, en = alert_texts(kind, {"id": device_id, **params})
    help_id = params.get("help_id")
    return AdminAlert(
        id=uuid.uuid4().hex,
        type=kind,
        severity=severity,
        device_id=device_id,
        message=ko[:500],
        message_en=en[:500],
        timestamp=ts,
        help_id=help_id if isinstance(help_id, str) else None,
    )


def alert_row(alert: AdminAlert) -> dict[str, Any]:
    """An ``alert`` table row for a published :class:`AdminAlert`."""
    return {
        "id": alert.id,
        "type": alert.type,
        "severity": alert.severity.value,
        "device_id": alert.device_id,
        "message": alert.message,
        "message_en": alert.message_en,
        "created_at": from_timestamp(alert.timestamp),
        "acknowledged_at": None,
    }
