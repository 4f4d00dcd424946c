"""VenueDesk: venue-level requests in (``venue/requests/{user}``), jobs out.

Parties, the waitlist and suspensions name no one machine, so their jobs go to the venue's
own actor (:data:`~bridge.reservations.actors.VENUE_QUEUE`), one at a time in arrival order,
beside the machines' actors. They need no machine's actor to be race-free: every job, of any
machine or of the venue, is decided by the one committer in turn, on facts that include every
machine it touches (:mod:`bridge.reservations.slotbook`); across bridges the PostgreSQL
exclusion constraints refuse what a stale picture let through, and the loser's whole command
is redone in a savepoint of its own, so a party is booked whole or not at all.

The desk shares the machine desk's checks and budget (:class:`ReservationDesk`): the reply
topic inside the requester's own tree, the correlation-data cap, ``on_behalf_of`` from the
api only, and the per-player token bucket (a venue request costs one command).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bridge.help import CallRequest, HelpDesk
from bridge.link import Link
from bridge.metrics import UNKNOWN_OP
from bridge.models import Incoming, Outbound
from bridge.partitions import Ownership
from bridge.reservations.actors import VENUE_QUEUE, Job
from bridge.reservations.commands import peek_request_id, request_key, venue_command
from bridge.reservations.intake import ReservationDesk
from plaza import rules
from plaza.acl import API_USER
from plaza.messages import ErrorBody, PayloadError, Reply, VenueRequest, decode
from plaza.topics import VenueRequestTopic

log = logging.getLogger(__name__)


class VenueDesk:
    """Routes venue requests; see the module docstring."""

    def __init__(self, desk: ReservationDesk, help_desk: HelpDesk | None = None) -> None:
        self.desk = desk
        #: ``call_staff`` goes to the help desk, not to the venue's actor (bridge/help.py)
        self.help = help_desk

    def _error(
        self,
        topic: str,
        request_id: str | None,
        code: str,
        message: str,
        correlation: bytes | None = None,
    ) -> list[Outbound]:
        reply = Reply(request_id=request_id, ok=False, error=ErrorBody(code=code, message=message))
        return [Outbound(topic, reply.encode(), correlation=correlation)]

    def handle(
        self,
        where: VenueRequestTopic,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
    ) -> list[Outbound]:
        """Route one venue request; returns replies to publish now (refusals)."""
        desk, settings = self.desk, self.desk.settings
        started = time.perf_counter()
        desk.metrics.requests += 1
        reply_to = desk.reply_topic(where.user, response_topic)
        if correlation is not None and len(correlation) > settings.max_correlation_bytes:
            desk.metrics.malformed += 1
            desk.commands.refused(UNKNOWN_OP, "correlation_too_large")
            limit = settings.max_correlation_bytes
            return self._error(
                reply_to,
                peek_request_id(payload, settings.max_payload_bytes),
                "correlation_too_large",
                f"correlation data is {len(correlation)} bytes; at most {limit} are accepted",
            )
        try:
            request = decode(VenueRequest, payload, settings.max_payload_bytes)
        except PayloadError as exc:
            desk.metrics.malformed += 1
            desk.commands.refused(UNKNOWN_OP, "invalid")
            rid = peek_request_id(payload, settings.max_payload_bytes)
            log.warning(
                "bad venue request from %s: %s",
                where.user,
                exc,
                extra={"sender": where.user, "request_id": rid},
            )
            return self._error(reply_to, rid, "invalid", str(exc), correlation)
        actor = rules.Actor(where.user, rules.Role.PLAYER)
        behalf = request.on_behalf_of
        if behalf is not None:
            if where.user != API_USER:
                desk.metrics.forbidden += 1
                desk.commands.refused(request.op, "forbidden")
                return self._error(
                    reply_to,
                    request.request_id,
                    "forbidden",
                    "on_behalf_of is for the api only",
                    correlation,
                )
            actor = rules.Actor(behalf.user, rules.Role(behalf.role))
        if actor.role is rules.Role.PLAYER and not desk.bucket.take(actor.user, time.monotonic()):
            desk.metrics.rate_limited += 1
            desk.commands.refused(request.op, "rate_limited")
            return self._error(
                reply_to,
                request.request_id,
                "rate_limited",
                "too many commands; slow down and retry with the same request_id",
                correlation,
            )
        if request.op == "call_staff":
            return self._call_staff(request, actor, where.user, reply_to, correlation, started)
        job = Job(
            device_id=VENUE_QUEUE,
            command=venue_command(request, actor),
            request_key=request_key(where.user, request.request_id, behalf),
            request_id=request.request_id,
            reply_topic=reply_to,
            correlation=correlation,
            initiated_by=behalf.by if behalf else None,
        )
        desk.commands.follow(request.op, job.future, started)
        log.debug(
            "%s from %s: to the venue's actor",
            request.op,
            where.user,
            extra={"request_id": request.request_id},
        )
        desk.actors.submit(job)
        return []

    def _call_staff(
        self,
        request: VenueRequest,
        actor: rules.Actor,
        sender: str,
        reply_to: str,
        correlation: bytes | None,
        started: float,
    ) -> list[Outbound]:
        missing = [
            name
            for name, value in (("device_id", request.device_id), ("topic", request.topic))
            if value is None
        ]
        if missing or self.help is None or actor.role is not rules.Role.PLAYER:
            self.desk.commands.refused(request.op, "invalid")
            why = f"{' and '.join(missing)} missing" if missing else "call_staff is for players"
            return self._error(reply_to, request.request_id, "invalid", why, correlation)
        assert request.device_id is not None
        assert request.topic is not None
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self.desk.commands.follow(request.op, future, started)
        self.help.submit(
            CallRequest(
                user=actor.user,
                request_id=request.request_id,
                request_key=request_key(sender, request.request_id, request.on_behalf_of),
                device_id=request.device_id,
                topic=request.topic,
                message=request.message,
                reply_to=reply_to,
                correlation=correlation,
                future=future,
            )
        )
        return []


def venue_route(
    venue: VenueDesk, link: Link, ownership: Ownership
) -> Callable[[VenueRequestTopic, Incoming], Awaitable[bool]]:
    """The router's handler for venue requests: made a job, or answered at once (posted: never
    waiting on the broker before reading the next request). With keyed routing
    (``PLAZA_PARTITIONS`` > 0) every bridge receives them and only the clock's leader decides
    them (they touch several machines, of several owners); the others drop them unanswered
    (the client retries with the same request id; see docs/operations.md, "Growing past one
    machine")."""

    async def handle(where: VenueRequestTopic, message: Incoming) -> bool:
        if ownership.enabled and not ownership.leading.is_set():
            return True
        immediate = venue.handle(
            where, message.payload, message.response_topic, message.correlation
        )
        if immediate:
            link.post(immediate)
        return True

    return handle
