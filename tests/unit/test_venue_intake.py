"""The venue desk (``venue/requests/{user}``): what it refuses at once, and what it hands
to the venue's own actor (no broker, no database)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest

from bridge.help import CallRequest, HelpDesk
from bridge.reservations.actors import VENUE_QUEUE, ActorPool, Job
from bridge.reservations.intake import ReservationDesk
from bridge.reservations.venue_intake import VenueDesk
from plaza import rules
from plaza.messages import MAX_PARTY_DEVICES, Reply
from plaza.settings import Settings
from plaza.topics import Topics, VenueRequestTopic

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


class HelpCalls:
    """Records what the venue desk hands to the help desk (bridge/help.py)."""

    def __init__(self) -> None:
        self.calls: list[CallRequest] = []

    def submit(self, request: CallRequest) -> None:
        self.calls.append(request)


async def venue_answers(
    user: str,
    *bodies: dict[str, Any] | bytes,
    settings: Settings | None = None,
    help_calls: HelpCalls | None = None,
) -> tuple[list[Job], list[dict[str, Any]]]:
    """Jobs handed to the actors, and replies sent at once, for ``bodies`` from ``user``."""
    topics = Topics()
    jobs: list[Job] = []

    async def submit(job: Job) -> Reply | None:
        jobs.append(job)
        return None

    actors = ActorPool(submit, idle_seconds=0.01)
    where = topics.parse(topics.venue_request(user))
    assert isinstance(where, VenueRequestTopic)
    replies: list[dict[str, Any]] = []
    async with asyncio.TaskGroup() as tg:
        actors.bind(tg)
        desk = ReservationDesk(settings or Settings(), topics, actors)
        venue = VenueDesk(desk, cast(HelpDesk, help_calls or HelpCalls()))
        for body in bodies:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            replies += [json.loads(o.payload) for o in venue.handle(where, raw, None, None)]
        await asyncio.sleep(0)
    return jobs, replies


PARTY = {"request_id": "p1", "op": "reserve_party", "kind": "pc", "seats": 2}


async def test_a_party_request_goes_to_the_venues_actor_with_the_players_key() -> None:
    jobs, replies = await venue_answers("ana", {**PARTY, "starts_at": 2e9, "ends_at": 2e9 + 3600})
    assert replies == []
    (job,) = jobs
    assert (job.device_id, job.request_key) == (VENUE_QUEUE, "ana:p1")
    assert job.command is not None
    assert (job.command.op, job.command.seats, job.command.kind) == (
        rules.Op.RESERVE_PARTY,
        2,
        "pc",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {**PARTY, "devices": [f"pc-{i:02d}" for i in range(MAX_PARTY_DEVICES + 1)]},
            id="too-many-devices",
        ),
        pytest.param({**PARTY, "seats": MAX_PARTY_DEVICES + 1}, id="too-many-seats"),
        pytest.param({**PARTY, "devices": ["PC 1"]}, id="not-a-machine-id"),
        pytest.param({**PARTY, "op": "reserve"}, id="a-machine-op"),
        pytest.param({"request_id": "w", "op": "join_waitlist", "minutes": 0}, id="no-minutes"),
        pytest.param(b"{not json", id="not-json"),
    ],
)
async def test_a_venue_request_outside_the_contract_is_refused_as_invalid(
    body: dict[str, Any] | bytes,
) -> None:
    jobs, (reply,) = await venue_answers("ana", body)
    assert jobs == []
    assert (reply["ok"], reply["error"]["code"]) == (False, "invalid")


async def test_on_behalf_of_is_for_the_api_only() -> None:
    behalf = {"user": "bo", "role": "player"}
    jobs, (reply,) = await venue_answers("ana", {**PARTY, "on_behalf_of": behalf})
    assert jobs == []
    assert reply["error"]["code"] == "forbidden"
    jobs, replies = await venue_answers("api", {**PARTY, "on_behalf_of": behalf})
    assert replies == []
    assert [(j.command.actor.user if j.command else None) for j in jobs] == ["bo"]


async def test_venue_requests_spend_the_players_command_budget() -> None:
    settings = Settings(rate_burst=2, rate_per_minute=1)
    bodies = [{**PARTY, "request_id": f"p{i}"} for i in range(3)]
    jobs, replies = await venue_answers("ana", *bodies, settings=settings)
    assert len(jobs) == 2
    assert [r["error"]["code"] for r in replies] == ["rate_limited"]


CALL = {"request_id": "h1", "op": "call_staff", "device_id": "pc-01", "topic": "hardware"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**CALL, "topic": "pizza"}, id="unknown-topic"),
        pytest.param({**CALL, "message": "x" * 281}, id="message-too-long"),
        pytest.param({k: v for k, v in CALL.items() if k != "topic"}, id="no-topic"),
        pytest.param({k: v for k, v in CALL.items() if k != "device_id"}, id="no-machine"),
        pytest.param(
            {**CALL, "on_behalf_of": {"user": "admin", "role": "admin"}}, id="staff-call-staff"
        ),
    ],
)
async def test_a_call_for_staff_outside_the_contract_is_refused_and_reaches_no_actor(
    body: dict[str, Any],
) -> None:
    user = "api" if "on_behalf_of" in body else "ana"
    jobs, (reply,) = await venue_answers(user, body)
    assert jobs == []
    assert (reply["ok"], reply["error"]["code"]) == (False, "invalid")


async def test_calls_for_staff_go_to_the_help_desk_and_spend_the_players_command_budget() -> None:
    settings = Settings(rate_burst=1, rate_per_minute=1)
    bodies = [{**CALL, "request_id": f"h{i}", "message": "hi"} for i in range(2)]
    help_calls = HelpCalls()
    jobs, replies = await venue_answers("ana", *bodies, settings=settings, help_calls=help_calls)
    assert jobs == []  # a call goes to the help desk, never to the venue's actor
    (call,) = help_calls.calls
    assert (call.user, call.request_key, call.device_id, call.topic, call.message) == (
        "ana",
        "ana:h0",
        "pc-01",
        "hardware",
        "hi",
    )
    assert call.reply_to == "plaza/users/ana/replies"
    assert [r["error"]["code"] for r in replies] == ["rate_limited"]
