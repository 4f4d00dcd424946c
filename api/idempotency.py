"""REST ``Idempotency-Key``: the key becomes the command's request id (the bridge applies it
once and answers it again), and the api remembers a fingerprint of the command it was first
used for, so reusing a key for another command is 422 ``idempotency_key_reused`` (as Stripe
does) instead of silently answered with the first command's result.

The fingerprint is taken over the wire command (machine, op, times as Unix seconds, the person
acted for, ...) without its request id, so two spellings of one request (key order, time
zone offsets) are the same request. Keys are their caller's own: ``{caller}:{key}``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from api.problems import ApiError
from api.state import AppState
from plaza.messages import ReservationRequest, VenueRequest
from plaza.tables import IdempotencyKey


def fingerprint(device: str, request: ReservationRequest | VenueRequest) -> str:
    command = request.model_dump(mode="json", exclude={"request_id"}, exclude_none=True)
    canonical = json.dumps({"device": device, **command}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim(
    state: AppState,
    caller: str,
    key: str,
    device: str,
    request: ReservationRequest | VenueRequest,
) -> None:
    """Remember ``key`` for this command, or check that it was used for this command."""
    row_key, mark = f"{caller}:{key}", fingerprint(device, request)
    async with state.write() as session:
        known = await session.get(IdempotencyKey, row_key)
        if known is None:
            session.add(IdempotencyKey(key=row_key, fingerprint=mark))
            try:
                await session.commit()
                return
            except IntegrityError:  # the same key at the same moment: compare with that one
                await session.rollback()
                known = await session.get(IdempotencyKey, row_key)
    if known is not None and known.fingerprint != mark:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for another request; use a new key",
        )


async def prune(state: AppState) -> int:
    """Forget keys older than ``PLAZA_IDEMPOTENCY_TTL``; return how many."""
    before = datetime.now(UTC) - timedelta(seconds=state.settings.idempotency_ttl)
    async with state.write() as session:
        result = await session.exec(
            delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < before)
        )
        await session.commit()
    return int(result.rowcount or 0)
