"""Test helpers: a requester that speaks the reservation protocol like a real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza.messages import NotificationEvent, Reply, WaitlistState
from tests.conftest import BrokerHandle


class Requester:
    """A player's (or the api's) connection: sends requests, collects replies and
    notifications. MQTT 5 with a response topic and correlation data."""

    def __init__(self, broker: BrokerHandle, user: str, password: str) -> None:
        self.broker = broker
        self.user = user
        self.client = broker.client(user, password)  # under the account's bound client id
        self.replies: dict[str, list[Reply]] = {}
        self.notifications: list[NotificationEvent] = []
        #: the retained waitlist state as it changed (users/{user}/waitlist)
        self.waitlists: list[WaitlistState] = []
        self.raw: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Requester:
        await self.client.__aenter__()
        await self.client.subscribe(self.broker.topics.user_tree(self.user), qos=1)
        self._task = asyncio.get_running_loop().create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _pump(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            async with self._arrived:
                self.raw.append((m.topic.value, payload))
                if m.topic.value.endswith("/notifications"):
                    self.notifications.append(NotificationEvent.model_validate_json(payload))
                elif m.topic.value.endswith("/waitlist"):
                    if payload:
                        self.waitlists.append(WaitlistState.model_validate_json(payload))
                else:
                    reply = Reply.model_validate_json(payload)
                    self.replies.setdefault(reply.request_id or "", []).append(reply)
                self._arrived.notify_all()

    async def send(
        self, device: str, body: dict[str, Any] | bytes, *, as_user: str | None = None, qos: int = 1
    ) -> str:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.broker.topics.replies(self.user)
        props.CorrelationData = uuid.uuid4().bytes
        topic = self.broker.topics.request(device, as_user or self.user)
        await self.client.publish(topic, payload, qos=qos, properties=props)
        return str(body.get("request_id", "")) if isinstance(body, dict) else ""

    async def send_venue(self, body: dict[str, Any], *, as_user: str | None = None) -> str:
        """A venue-level request (``venue/requests/{user}``): a party, the waitlist."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.broker.topics.replies(self.user)
        props.CorrelationData = uuid.uuid4().bytes
        topic = self.broker.topics.venue_request(as_user or self.user)
        await self.client.publish(topic, json.dumps(body).encode(), qos=1, properties=props)
        return str(body.get("request_id", ""))

    async def venue(self, timeout: float = 10.0, **body: Any) -> Reply:
        body.setdefault("request_id", uuid.uuid4().hex)
        await self.send_venue(body)
        return await self.reply(body["request_id"], timeout)

    async def waitlist(
        self, check: Callable[[WaitlistState], bool], timeout: float = 10.0
    ) -> WaitlistState:
        """The first waitlist state (seen or arriving) that passes ``check``."""

        async def wait() -> WaitlistState:
            async with self._arrived:
                while True:
                    for state in self.waitlists:
                        if check(state):
                            return state
                    await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def reply(self, request_id: str, timeout: float = 10.0, count: int = 1) -> Reply:
        async def wait() -> Reply:
            async with self._arrived:
                while len(self.replies.get(request_id, [])) < count:
                    await self._arrived.wait()
                return self.replies[request_id][count - 1]

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, device: str, timeout: float = 10.0, **body: Any) -> Reply:
        body.setdefault("request_id", uuid.uuid4().hex)
        await self.send(device, body)
        return await self.reply(body["request_id"], timeout)

    async def notification(self, kind: str, timeout: float = 10.0) -> NotificationEvent:
        """The first notification of type ``kind``, or the digest that carries one (low
        priority notifications arrive in digests)."""

        async def wait() -> NotificationEvent:
            async with self._arrived:
                while True:
                    for n in self.notifications:
                        if n.type == kind or any(i.type == kind for i in n.items or []):
                            return n
                    await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)


async def drive(
    p: Requester,
    device: str,
    body: dict[str, Any],
    final: dict[str, Reply],
    sends: dict[str, int],
    timeout: float = 2.0,
) -> None:
    """A client that retries on timeout with the same request id until it has a reply
    (``final``); ``sends`` counts what it sent per request id."""
    rid = str(body["request_id"])
    while True:
        sends[rid] = sends.get(rid, 0) + 1
        await p.send(device, body)
        try:
            final[rid] = await p.reply(rid, timeout=timeout)
            return
        except TimeoutError:
            continue


def load(
    players: list[Requester], devices: list[str], n: int
) -> list[tuple[Requester, str, dict[str, Any]]]:
    """``n`` reservations that conflict with nothing: every one must succeed exactly once."""
    return [
        (
            players[k % len(players)],
            devices[k % len(devices)],
            {
                "request_id": f"k{k:03d}-{uuid.uuid4().hex[:6]}",
                "op": "reserve",
                **slot(3600 + k * 11 * 60, 10),
            },
        )
        for k in range(n)
    ]


def slot(start_in: float, minutes: float) -> dict[str, float]:
    start = time.time() + start_in
    return {"starts_at": round(start, 3), "ends_at": round(start + minutes * 60, 3)}


def as_admin(body: dict[str, Any], admin: str = "admin") -> dict[str, Any]:
    return {**body, "on_behalf_of": {"user": admin, "role": "admin"}}


async def race(broker: BrokerHandle, device: str, clients: int, start_in: float) -> list[Reply]:
    """``clients`` players (racer000...) send at once a reserve for slots that all overlap
    (60 minutes, starts spread over less than an hour); every reply, in client order."""
    racers = [Requester(broker, f"racer{i:03d}", f"racer-pw-{i:03d}") for i in range(clients)]
    base = slot(start_in, 60)
    bodies: list[dict[str, Any]] = [
        {
            "request_id": uuid.uuid4().hex,
            "op": "reserve",
            "starts_at": base["starts_at"] + (i % 30) * 60,
            "ends_at": base["ends_at"] + (i % 30) * 60,
        }
        for i in range(clients)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for r in racers:
            await stack.enter_async_context(r)
        await asyncio.gather(*(r.send(device, b) for r, b in zip(racers, bodies, strict=True)))
        return list(
            await asyncio.gather(
                *(r.reply(b["request_id"], 30) for r, b in zip(racers, bodies, strict=True))
            )
        )
