"""Simulated players who book a machine a little ahead and arrive for their slot.

A machine cannot know a reservation's code, so the simulator also plays the players: each is
a real player account (its own broker login, bound to its own client id) and speaks the
protocol exactly as a phone does (docs/protocol.md, "Reservations"). One player's life:

1. it waits a while (``pace``), picks a machine of the fleet that is online, and sends
   ``reserve`` for ``[now + book_ahead, + slot minutes)`` on
   ``devices/{device}/requests/{user}`` (MQTT 5 response topic and correlation data; no reply
   within the timeout: the same request again, with the same ``request_id``);
2. the reply carries the reservation and its check-in code. A ``pending`` one (the machine
   does not auto-approve) waits for staff's ``reservation_approved`` notification until the
   slot's start; none by then: the player cancels it and books again later;
3. :func:`plan_arrival` (pure) decides, from four random draws, whether the player comes
   (``no_show``), when (on time: up to ``early_by`` seconds before the start, inside the
   pre-slot lock window the bridge keeps the seat free in; ``late``: up to ``late_by``
   seconds after it) and whether they type a wrong code first (``wrong_code``);
4. at that moment it walks up to the machine (the in-process :class:`Machine`): it waits for a
   walk-in who overran to get up, types a wrong code if so planned (the bridge refuses it
   with ``end_session``), then the right one (:meth:`Machine.start_session_with_code`); the
   bridge checks the reservation in and answers with ``start_session``;
5. it plays until the slot's end (the bridge ends the session), then books again.

A player holds one booking at a time. Every count and timing here is capped
(:class:`PlayerPlan`, :data:`MAX_PLAYERS`; docs/operations.md, "The simulator").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza.messages import (
    MachineState,
    NotificationEvent,
    PayloadError,
    Reply,
    ReservationPublic,
    decode,
)
from plaza.topics import Topics
from plaza_sim.machine import Machine

log = logging.getLogger(__name__)
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def _session(expiry: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry
    return props


#: at most this many simulated players in one simulator process (each is a connection)
MAX_PLAYERS = 200
#: the furthest ahead a player books, and the longest and shortest slot it asks for
MAX_BOOK_AHEAD = 3600.0
MAX_SLOT_MINUTES = 240.0
MIN_SLOT_MINUTES = 0.05
#: a player's pause between bookings: at least this (one player cannot flood the bridge)
MIN_PACE = 1.0
MAX_PACE = 3600.0
#: how early or late (seconds) a player may arrive
MAX_EARLY_BY = 3600.0
MAX_LATE_BY = 3600.0
#: a request unanswered this long is sent again (same request id), at most this many times
REQUEST_TIMEOUT = 5.0
REQUEST_TRIES = 4
#: machines a player tries for one slot when they are taken
BOOKING_TRIES = 3
#: how long a player at the machine waits for the bridge to answer a code it typed
ANSWER_WAIT = 10.0
#: reservations a player remembers from notifications (an approval that overtook its booking)
HEARD = 16
#: how long the broker keeps a simulated player's session while it is away (seconds)
SESSION_EXPIRY = 900


@dataclass(frozen=True, slots=True)
class PlayerPlan:
    """How the simulated players behave; every field is capped (ValueError otherwise)."""

    #: seconds between the booking and the slot's start (keep it above PLAZA_PRE_SLOT_LOCK
    #: to see the machine locked for the slot before its player comes)
    book_ahead: float = 720.0
    #: each slot lasts between these many minutes
    slot_minutes: tuple[float, float] = (20.0, 45.0)
    #: a player waits between pace/2 and pace seconds before its next booking
    pace: float = 60.0
    #: probabilities: never comes; comes late; types a wrong code first
    no_show: float = 0.1
    late: float = 0.2
    wrong_code: float = 0.1
    #: a punctual player arrives up to this many seconds before the start
    early_by: float = 60.0
    #: a late player arrives up to this many seconds after the start (above
    #: PLAZA_NO_SHOW_GRACE, a late player finds the seat released and the code refused)
    late_by: float = 240.0

    def __post_init__(self) -> None:
        for name in ("no_show", "late", "wrong_code"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', '-')} is a probability: 0..1")
        low, high = self.slot_minutes
        if not MIN_SLOT_MINUTES <= low <= high <= MAX_SLOT_MINUTES:
            raise ValueError(
                f"slot minutes must satisfy {MIN_SLOT_MINUTES} <= min <= max <= "
                f"{MAX_SLOT_MINUTES:.0f}"
            )
        bounds = {
            "book_ahead": (0.0, MAX_BOOK_AHEAD),
            "pace": (MIN_PACE, MAX_PACE),
            "early_by": (0.0, MAX_EARLY_BY),
            "late_by": (0.0, MAX_LATE_BY),
        }
        for name, (lo, hi) in bounds.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name.replace('_', '-')} must be within {lo:g}..{hi:g} s")


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one player does about one booking."""

    comes: bool
    #: seconds after the slot's start they walk up (negative: before it)
    offset: float = 0.0
    late: bool = False
    wrong_code_first: bool = False


def plan_arrival(plan: PlayerPlan, draws: tuple[float, float, float, float]) -> Arrival:
    """Whether, when and how a player arrives, from four uniform draws in [0, 1): whether
    they come, whether they are late, whether they mistype first, and how early or late."""
    comes, late, wrong, when = draws
    if comes < plan.no_show:
        return Arrival(comes=False)
    is_late = late < plan.late
    offset = when * plan.late_by if is_late else -when * plan.early_by
    return Arrival(True, offset, is_late, wrong < plan.wrong_code)


def wrong_code(code: str, draw: float) -> str:
    """A six-digit code that is not ``code`` (what a player mistypes)."""
    step = 1 + int(draw * 999_998)  # 1..999_998: never 0 (mod 10**6)
    value = int(code) if code.isdigit() else 0
    return f"{(value + step) % 10**6:06d}"


@dataclass
class ArrivalStats:
    booked: int = 0
    refused: int = 0
    approved_later: int = 0
    not_approved: int = 0
    no_shows: int = 0
    late: int = 0
    wrong_codes: int = 0
    checked_in: int = 0
    #: came, but the seat stayed taken or the code was not taken (released meanwhile)
    turned_away: int = 0
    #: bookings that ended in an unexpected error (logged with its traceback)
    errors: int = 0


@dataclass(frozen=True, slots=True)
class PlayerLink:
    """Where the players connect (the machines' broker; a phone's is the same one)."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic_root: str = "plaza"
    tls: ssl.SSLContext | None = None


@dataclass
class Player:
    name: str
    password: str
    link: PlayerLink
    machines: list[Machine]
    plan: PlayerPlan
    stats: ArrivalStats
    rng: random.Random
    topics: Topics = field(init=False)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    #: the reservation this player holds now, as the bridge last told it
    holding: ReservationPublic | None = None
    _client: aiomqtt.Client | None = None
    _waiting: dict[str, asyncio.Future[Reply]] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    #: the last reservations notifications told of, by id (at most HEARD)
    _heard: dict[str, ReservationPublic] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = Topics(self.link.topic_root)

    async def run(self, bookings: int | None = None) -> None:
        """Stay connected and book, arrive, play, again: forever, or ``bookings`` times."""
        async with asyncio.TaskGroup() as tg:
            connection = tg.create_task(self._stay_connected())
            await self._life(bookings)
            connection.cancel()

    # -- the phone's connection ----------------------------------------------------------------
    async def _stay_connected(self) -> None:
        delay = 0.2
        while True:
            client = aiomqtt.Client(
                self.link.host,
                self.link.port,
                username=self.name,
                password=self.password,
                identifier=self.name,  # a player's account is bound to its own name
                protocol=aiomqtt.ProtocolVersion.V5,
                # a persistent session, as a phone's: staff's approval sent while the player
                # is away (a broker restart) is queued, not lost
                clean_start=False,
                properties=_session(SESSION_EXPIRY),
                keepalive=30,
                socket_options=NODELAY,
                tls_context=self.link.tls,
                timeout=10,
            )
            try:
                async with client:
                    await client.subscribe(self.topics.user_tree(self.name), qos=1)
                    self._client = client
                    self.connected.set()
                    delay = 0.2
                    await self._pump(client)
            except aiomqtt.MqttError as exc:
                log.debug("player %s: connection ended: %s", self.name, exc)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(delay * 2, 10.0)

    async def _pump(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if not payload:
                continue
            topic = message.topic.value
            try:
                if topic.endswith("/notifications"):
                    await self._on_notification(decode(NotificationEvent, payload))
                elif topic.endswith("/replies"):
                    reply = decode(Reply, payload)
                    waiting = self._waiting.get(reply.request_id or "")
                    if waiting is not None and not waiting.done():
                        waiting.set_result(reply)
            except PayloadError as exc:
                log.debug("player %s: ignored %s: %s", self.name, topic, exc)

    async def _on_notification(self, note: NotificationEvent) -> None:
        r = note.reservation
        if r is None:
            return
        # kept for the booking being made: an approval can come in right behind the reply,
        # before the booking is held (the message loop does not yield between them)
        self._heard[r.id] = r
        while len(self._heard) > HEARD:
            self._heard.pop(next(iter(self._heard)))
        if self.holding is not None and r.id == self.holding.id:
            async with self._changed:
                self.holding = r
                self._changed.notify_all()

    async def request(self, device: str, body: dict[str, Any]) -> Reply | None:
        """Send one request and wait for its reply, retrying with the same request id as
        the protocol asks; None when no reply came."""
        rid = str(body["request_id"])
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        payload = json.dumps(body).encode()
        try:
            for _ in range(REQUEST_TRIES):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        await self.connected.wait()
                client = self._client
                if client is not None:
                    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    props.ResponseTopic = self.topics.replies(self.name)
                    props.CorrelationData = uuid.uuid4().bytes
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.publish(
                            self.topics.request(device, self.name),
                            payload,
                            qos=1,
                            properties=props,
                        )
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), REQUEST_TIMEOUT)
            return None
        finally:
            self._waiting.pop(rid, None)
            future.cancel()

    # -- a player's evening --------------------------------------------------------------------
    async def _life(self, bookings: int | None) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.plan.pace / 2))  # players spread out
        done = 0
        while bookings is None or done < bookings:
            try:
                await self.one_booking()
            except Exception:  # one player's surprise must not end every machine's run
                self.stats.errors += 1
                log.exception("player %s: booking failed", self.name)
            done += 1
            if bookings is None or done < bookings:
                await asyncio.sleep(self.rng.uniform(self.plan.pace / 2, self.plan.pace))

    async def one_booking(self) -> None:
        """Book, wait for approval, arrive (or not), play to the end of the slot."""
        online = [m for m in self.machines if m.connected.is_set()]
        start = time.time() + self.plan.book_ahead
        end = start + self.rng.uniform(*self.plan.slot_minutes) * 60
        # a machine taken for that slot: the player tries another, as on a phone
        for machine in self.rng.sample(online, min(BOOKING_TRIES, len(online))):
            body = {
                "request_id": f"sim-{uuid.uuid4().hex[:16]}",
                "op": "reserve",
                "starts_at": round(start, 3),
                "ends_at": round(end, 3),
            }
            reply = await self.request(machine.device, body)
            if reply is not None and reply.ok and reply.reservation is not None:
                break
            self.stats.refused += 1
            log.debug("player %s: booking %s refused: %s", self.name, machine.device, reply)
            if reply is None or reply.error is None or reply.error.code != "conflict":
                return
        else:
            return
        self.stats.booked += 1
        self.holding = self._heard.pop(reply.reservation.id, reply.reservation)
        try:
            await self._through(machine, reply.reservation)
        finally:
            self.holding = None

    async def _through(self, machine: Machine, booked: ReservationPublic) -> None:
        if booked.status == "pending":
            if not await self._approved_by(booked.starts_at):
                self.stats.not_approved += 1
                await self.request(
                    machine.device,
                    {
                        "request_id": f"sim-{uuid.uuid4().hex[:16]}",
                        "op": "cancel",
                        "reservation_id": booked.id,
                    },
                )
                return
            self.stats.approved_later += 1
        draws = (self.rng.random(), self.rng.random(), self.rng.random(), self.rng.random())
        arrival = plan_arrival(self.plan, draws)
        if not arrival.comes:
            self.stats.no_shows += 1
            await _sleep_until(booked.ends_at)
            return
        self.stats.late += arrival.late
        await _sleep_until(booked.starts_at + arrival.offset)
        if self.holding is None or self.holding.status != "approved":
            self.stats.turned_away += 1  # released, cancelled or moved meanwhile
            return
        if await self.walk_up(machine, booked, arrival.wrong_code_first):
            self.stats.checked_in += 1
        else:
            self.stats.turned_away += 1
        await _sleep_until(booked.ends_at)

    async def _approved_by(self, deadline: float) -> bool:
        """Wait until staff approve the held reservation (their notification), or
        ``deadline``; True if approved."""

        def approved() -> bool:
            return self.holding is not None and self.holding.status == "approved"

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.time())), self._changed:
                await self._changed.wait_for(
                    lambda: approved() or self.holding is None or self.holding.status != "pending"
                )
        return approved()

    async def walk_up(self, machine: Machine, booked: ReservationPublic, mistype: bool) -> bool:
        """At the machine: wait for the seat, type the code (a wrong one first if
        ``mistype``); True when the bridge started the session for this reservation."""
        code = booked.code or ""

        def seat_free() -> bool:
            return machine.connected.is_set() and machine.state is MachineState.IDLE

        # a walk-in may still be getting up (or plays on under the soft policy)
        if not await _until(seat_free, max(ANSWER_WAIT, self.plan.late_by)):
            return False
        minutes = max(1.0, (booked.ends_at - time.time()) / 60)
        if mistype:
            self.stats.wrong_codes += 1
            await machine.start_session_with_code(wrong_code(code, self.rng.random()), minutes)
            if not await _until(seat_free, ANSWER_WAIT):  # the bridge refuses it: end_session
                return False  # (a late refusal would end the real session)
        machine.started_code = None
        await machine.start_session_with_code(code, minutes)
        return await _until(lambda: machine.started_code == code, ANSWER_WAIT)


async def _sleep_until(at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.time()))


async def _until(check: Callable[[], bool], within: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)
    return True


class Arrivals:
    """The simulated players of one simulator process, on the machines it runs."""

    def __init__(
        self,
        players: dict[str, str],
        machines: list[Machine],
        *,
        link: PlayerLink,
        plan: PlayerPlan | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(players) > MAX_PLAYERS:
            raise ValueError(f"at most {MAX_PLAYERS} simulated players (asked for {len(players)})")
        self.plan = plan or PlayerPlan()
        self.stats = ArrivalStats()
        rng = rng or random.Random()
        self.players = [
            Player(name, pw, link, machines, self.plan, self.stats, random.Random(rng.random()))
            for name, pw in sorted(players.items())
        ]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for player in self.players:
                tg.create_task(player.run(), name=f"player {player.name}")
                await asyncio.sleep(0.01)  # pace the connect burst

    def line(self) -> str:
        s = self.stats
        return (
            f"players: {len(self.players)}, {s.booked} booked ({s.refused} refused, "
            f"{s.not_approved} never approved), {s.checked_in} checked in by code "
            f"({s.late} late, {s.wrong_codes} mistyped first), {s.no_shows} no-shows, "
            f"{s.turned_away} turned away"
        )
