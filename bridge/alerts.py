"""Admin alerts as the bridge raises them: typed, in Korean (the venue's staff) and English."""

from __future__ import annotations

import uuid

from plaza.i18n import alert_texts
from plaza.messages import AdminAlert, AlertSeverity


def make_alert(
    kind: str,
    severity: AlertSeverity,
    ts: float,
    device_id: str | None,
    /,
    **params: object,
) -> AdminAlert:
    ko, en = alert_texts(kind, {"id": device_id, **params})
    return AdminAlert(
        id=uuid.uuid4().hex,
        type=kind,
        severity=severity,
        device_id=device_id,
        message=ko[:500],
        message_en=en[:500],
        timestamp=ts,
    )
