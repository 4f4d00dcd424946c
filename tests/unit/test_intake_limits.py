"""The reservation desk's caps on what a request may carry (no broker, no database)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.reservations.actors import ActorPool, Job
from bridge.reservations.intake import ReservationDesk
from plaza.messages import Reply
from plaza.settings import Settings
from plaza.topics import RequestTopic, Topics

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

CANCEL = b'{"request_id":"r1","op":"cancel","reservation_id":"zz"}'


async def desk_answers(correlation: bytes, limit: int) -> tuple[list[Job], list[dict[str, object]]]:
    """What the desk does with a cancel carrying ``correlation``: jobs for the actors, and
    the replies it sends at once (with the correlation data each carries)."""
    topics = Topics()
    jobs: list[Job] = []

    async def submit(job: Job) -> Reply | None:
        jobs.append(job)
        return None

    actors = ActorPool(submit, idle_seconds=0.01)
    where = topics.parse(topics.request("pc-01", "ana"))
    assert isinstance(where, RequestTopic)
    async with asyncio.TaskGroup() as tg:
        actors.bind(tg)
        desk = ReservationDesk(Settings(max_correlation_bytes=limit), topics, actors)
        now = desk.handle(where, CANCEL, None, correlation)
        await asyncio.sleep(0)
    replies = [{**json.loads(o.payload), "correlation": o.correlation} for o in now]
    return jobs, replies


async def test_correlation_data_up_to_the_cap_goes_to_the_machine_s_actor() -> None:
    jobs, replies = await desk_answers(b"c" * 64, limit=64)
    assert replies == []
    assert [j.correlation for j in jobs] == [b"c" * 64]


async def test_correlation_data_over_the_cap_is_refused_and_the_reply_carries_none() -> None:
    jobs, replies = await desk_answers(b"c" * 65, limit=64)
    assert jobs == []
    (reply,) = replies
    assert reply["request_id"] == "r1"
    assert reply["ok"] is False
    assert reply["error"]["code"] == "correlation_too_large"  # type: ignore[index]
    assert reply["correlation"] is None


def test_the_default_cap_is_well_above_what_the_venue_s_clients_send() -> None:
    # the api sends a 16-byte uuid, the web client its request id (at most 64 characters)
    assert Settings().max_correlation_bytes >= 4 * 64
