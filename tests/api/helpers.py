"""Helpers of the api tests: reservations made over REST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.conftest import Api


def slot(minutes_from_now: float, length: float = 30) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(minutes=minutes_from_now)
    return {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=length)).isoformat(),
    }


async def reserve(
    api: Api, headers: dict[str, str], device: str, at: float, **extra: Any
) -> dict[str, Any]:
    reply = await api.client.post(
        "/reservations", headers=headers, json={"device_id": device, **slot(at), **extra}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert isinstance(body, dict)
    return body
