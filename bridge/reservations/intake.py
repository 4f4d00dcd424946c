"""ReservationDesk: request messages in, jobs out; bad requests answered at once.

Requests that cannot be decided (malformed, oversize, over the player's budget, a response
topic outside the requester's own tree, a machine being removed, correlation data over
``PLAZA_MAX_CORRELATION_BYTES``) are answered here and never reach an actor. Everything else
becomes a :class:`~bridge.reservations.actors.Job` on the machine's actor, with the
idempotency key of the requester.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from bridge.metrics import UNKNOWN_OP, CommandMeter
from bridge.models import Outbound
from bridge.ratelimit import TokenBucket
from bridge.reservations.actors import ActorPool, Job
from bridge.reservations.commands import device_command, request_key
from bridge.reservations.commands import peek_request_id as _peek_request_id
from plaza import rules
from plaza.acl import API_USER
from plaza.messages import ErrorBody, PayloadError, Reply, ReservationRequest, decode
from plaza.settings import Settings
from plaza.topics import RequestTopic, Topics

log = logging.getLogger(__name__)
MAX_REPLY_TOPIC = 200  # the outbox's topic column


@dataclass
class DeskMetrics:
    requests: int = 0
    malformed: int = 0
    rate_limited: int = 0
    forbidden: int = 0


class ReservationDesk:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        actors: ActorPool,
        commands: CommandMeter | None = None,
        *,
        removed: set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.actors = actors
        self.bucket = TokenBucket(settings.rate_per_minute / 60, settings.rate_burst)
        self.metrics = DeskMetrics()
        #: machines being removed (the tracker's set): their requests are refused here
        self.removed: set[str] = removed if removed is not None else set()
        #: requests by op and result, and their latency (a private registry if none is given)
        self.commands = commands or CommandMeter(CollectorRegistry())

    def _error(
        self,
        topic: str,
        request_id: str | None,
        code: str,
        message: str,
        correlation: bytes | None = None,
    ) -> Outbound:
        reply = Reply(request_id=request_id, ok=False, error=ErrorBody(code=code, message=message))
        return Outbound(topic, reply.encode(), correlation=correlation)

    def reply_topic(self, user: str, requested: str | None) -> str:
        """The MQTT 5 response topic if it lies in the requester's own tree, else the
        default replies topic: the bridge never publishes where the requester cannot read."""
        own = self.topics.user_tree(user)[:-1]  # "plaza/users/{user}/"
        if (
            requested
            and requested.startswith(own)
            and len(requested) <= MAX_REPLY_TOPIC
            and "+" not in requested
            and "#" not in requested
        ):
            return requested
        return self.topics.replies(user)

    def handle(
        self,
        where: RequestTopic,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
    ) -> list[Outbound]:
        """Route one request; returns replies to publish now (refusals before any decision)."""
        started = time.perf_counter()
        self.metrics.requests += 1
        reply_to = self.reply_topic(where.user, response_topic)
        if correlation is not None and len(correlation) > self.settings.max_correlation_bytes:
            return [self._correlation_too_large(where, reply_to, payload, len(correlation))]
        try:
            request = decode(ReservationRequest, payload, self.settings.max_payload_bytes)
        except PayloadError as exc:
            self.metrics.malformed += 1
            self.commands.refused(UNKNOWN_OP, "invalid")
            rid = _peek_request_id(payload, self.settings.max_payload_bytes)
            log.warning(
                "bad request from %s on %s: %s",
                where.user,
                where.device,
                exc,
                extra={"sender": where.user, "request_id": rid},
            )
            return [self._error(reply_to, rid, "invalid", str(exc), correlation)]
        if where.device in self.removed:
            return [
                self._error(
                    reply_to,
                    request.request_id,
                    "not_found",
                    f"no machine {where.device!r}",
                    correlation,
                )
            ]
        actor = rules.Actor(where.user, rules.Role.PLAYER)
        if request.on_behalf_of is not None:
            if where.user != API_USER:
                self.metrics.forbidden += 1
                self.commands.refused(request.op, "forbidden")
                return [
                    self._error(
                        reply_to,
                        request.request_id,
                        "forbidden",
                        "on_behalf_of is for the api only",
                        correlation,
                    )
                ]
            actor = rules.Actor(request.on_behalf_of.user, rules.Role(request.on_behalf_of.role))
        if actor.role is rules.Role.PLAYER and not self.bucket.take(actor.user, time.monotonic()):
            self.metrics.rate_limited += 1
            self.commands.refused(request.op, "rate_limited")
            return [
                self._error(
                    reply_to,
                    request.request_id,
                    "rate_limited",
                    "too many commands; slow down and retry with the same request_id",
                    correlation,
                )
            ]
        command = device_command(request, actor, where.device)
        job = Job(
            device_id=where.device,
            command=command,
            request_key=request_key(where.user, request.request_id, request.on_behalf_of),
            request_id=request.request_id,
            reply_topic=reply_to,
            correlation=correlation,
            initiated_by=request.on_behalf_of.by if request.on_behalf_of else None,
        )
        self.commands.follow(request.op, job.future, started)
        log.debug(
            "%s from %s on %s: to the machine's actor",
            request.op,
            where.user,
            where.device,
            extra={"request_id": request.request_id},
        )
        self.actors.submit(job)
        return []

    def _correlation_too_large(
        self, where: RequestTopic, reply_to: str, payload: bytes, size: int
    ) -> Outbound:
        """The refusal of a request whose correlation data is over the cap. The reply would
        echo it (a 65 KB one made the reply larger than the broker takes), so it carries
        none: the requester matches it by ``request_id``."""
        self.metrics.malformed += 1
        self.commands.refused(UNKNOWN_OP, "correlation_too_large")
        limit = self.settings.max_correlation_bytes
        rid = _peek_request_id(payload, self.settings.max_payload_bytes)
        log.warning(
            "request from %s on %s: %d bytes of correlation data (at most %d)",
            where.user,
            where.device,
            size,
            limit,
            extra={"sender": where.user, "request_id": rid},
        )
        return self._error(
            reply_to,
            rid,
            "correlation_too_large",
            f"correlation data is {size} bytes; at most {limit} are accepted",
        )

    def check_in_by_code(self, device: str, code: str) -> None:
        """A player typed a reservation's code on the machine (it reported a session with it)."""
        self.actors.submit(
            Job(
                device_id=device,
                command=rules.Command(
                    op=rules.Op.CHECK_IN,
                    actor=rules.Actor(device, rules.Role.DEVICE),
                    device_id=device,
                    code=code,
                ),
            )
        )
