"""BrokerLink: the api's one MQTT connection, and the two request/response conversations it
holds over it.

- **Bridge requests.** Reservation commands go to ``devices/{d}/requests/api`` (with
  ``on_behalf_of``) and admin commands to ``admin/requests``, as MQTT 5 requests whose response
  topic is this process's own inbox (``users/api/replies/{instance}``) and whose correlation
  data matches the reply to its waiter. A request that gets no reply within half the timeout is
  sent once more with the same request id (the bridge applies it once and answers again).
- **The bridge's status.** The bridge's retained ``services/bridge/status`` (birth,
  heartbeats, will) is kept as :attr:`BrokerLink.bridge_status`; ``/readyz`` reads it.
- **The floor map.** ``announce_floor`` publishes a changed floor on ``events/floor`` (QoS 1,
  not retained): the zones live only in SQL, which the api writes, so the api says so.
- **Dynamic security.** Broker accounts and roles are managed by publishing JSON commands to
  ``$CONTROL/dynamic-security/v1``; each command carries ``correlationData`` and the plugin's
  response is matched by it.

The connection is kept up forever with jittered backoff, on a new aiomqtt client for every
attempt (a reused 2.5.1 client can wedge for good after a disconnect that timed out).

Errors::

    LinkError (RuntimeError)
     +-- LinkDown       not connected to the broker now
     +-- LinkTimeout    no answer in time
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza import dynsec
from plaza.acl import API_USER, DYNSEC_COMMAND, DYNSEC_RESPONSE
from plaza.messages import (
    AdminCommand,
    FloorEvent,
    PayloadError,
    Reply,
    ReservationRequest,
    ServiceStatus,
    VenueRequest,
    decode,
)
from plaza.mqtt import Backoff, service_client
from plaza.settings import Settings
from plaza.topics import BRIDGE_SERVICE, Topics

log = logging.getLogger(__name__)

#: how long PUT /floor waits for the broker to take its announcement (seconds): the floor is
#: committed by then, and a stalled broker must not hold the answer for aiomqtt's 10 s
ANNOUNCE_TIMEOUT = 3.0


class LinkError(RuntimeError):
    pass


class LinkDown(LinkError):
    pass


class LinkTimeout(LinkError):
    pass


class DynsecError(RuntimeError):
    """The dynamic-security plugin refused a command (``error`` of its response)."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command = command
        self.error = error


class BrokerLink:
    def __init__(
        self,
        settings: Settings,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_root)
        self.instance = uuid.uuid4().hex[:12]
        self.inbox = self.topics.inbox(API_USER, self.instance)
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        #: successful connections so far (a reconnect adds one)
        self.connections = 0
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self._dynsec: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._observe = observe or (lambda _op, _result, _seconds: None)
        self.bridge_topic = self.topics.service_status(BRIDGE_SERVICE)
        #: the bridge's latest retained status (None: none seen, or cleared)
        self.bridge_status: ServiceStatus | None = None

    # -- the connection ----------------------------------------------------------------------
    async def run(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        while True:
            # A fresh client for every attempt (see plaza.mqtt.service_client). The api's
            # broker account is bound to this id: one api process per api_id.
            client = service_client(self.settings, self.settings.api_id, persistent=False)
            try:
                async with client:
                    await client.subscribe(
                        [(self.inbox, 1), (DYNSEC_RESPONSE, 1), (self.bridge_topic, 1)]
                    )
                    self.client = client
                    self.connections += 1
                    self.connected.set()
                    backoff.reset()
                    async for message in client.messages:
                        self._dispatch(message)
            except aiomqtt.MqttError as exc:
                log.warning("api broker link lost: %s", exc)
            finally:
                self.client = None
                self.connected.clear()
            await asyncio.sleep(backoff.next_delay())

    def _dispatch(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if message.topic.value == self.bridge_topic:
            self._bridge_status(bytes(payload))
            return
        if message.topic.value == DYNSEC_RESPONSE:
            try:
                found = dynsec.responses(bytes(payload))
            except ValueError as exc:
                log.warning("%s", exc)
                return
            for cid, response in found:
                answer = self._dynsec.pop(cid, None)
                if answer is not None and not answer.done():
                    answer.set_result(response)
            return
        correlation = getattr(message.properties, "CorrelationData", None)
        waiter = self._waiting.pop(bytes(correlation), None) if correlation else None
        if waiter is not None and not waiter.done():
            waiter.set_result(bytes(payload))

    def _bridge_status(self, payload: bytes) -> None:
        if not payload:  # cleared
            self.bridge_status = None
            return
        try:
            self.bridge_status = decode(ServiceStatus, payload, self.settings.max_payload_bytes)
        except PayloadError as exc:
            log.warning("unreadable bridge status: %s", exc)

    def _client(self) -> aiomqtt.Client:
        if self.client is None:
            raise LinkDown("the api is not connected to the broker")
        return self.client

    async def announce_floor(self, event: FloorEvent) -> None:
        """Publish ``event`` on ``events/floor``; :class:`LinkDown` when it could not be sent."""
        try:
            await self._client().publish(
                self.topics.floor_events, event.encode(), qos=1, timeout=ANNOUNCE_TIMEOUT
            )
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"publish failed: {exc}") from exc

    # -- bridge requests ---------------------------------------------------------------------
    async def reservation(self, device: str, request: ReservationRequest) -> Reply:
        return await self._ask(self.topics.request(device, API_USER), request.encode(), request.op)

    async def venue(self, request: VenueRequest) -> Reply:
        return await self._ask(self.topics.venue_request(API_USER), request.encode(), request.op)

    async def admin(self, command: AdminCommand) -> Reply:
        return await self._ask(self.topics.admin_requests, command.encode(), command.op)

    async def _ask(self, topic: str, payload: bytes, op: str) -> Reply:
        started = time.perf_counter()
        correlation = uuid.uuid4().bytes
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = future
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.inbox
        props.CorrelationData = correlation
        timeout = self.settings.bridge_timeout
        try:
            for attempt in (1, 2):  # the same request id twice: applied once, answered again
                await self._client().publish(topic, payload, qos=1, properties=props)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout / 2):
                        raw = await asyncio.shield(future)
                        break
                log.warning("no reply from the bridge to %s (attempt %d)", op, attempt)
            else:
                self._observe(op, "timeout", time.perf_counter() - started)
                raise LinkTimeout(f"the bridge did not answer within {timeout:g}s")
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"publish failed: {exc}") from exc
        finally:
            self._waiting.pop(correlation, None)
        try:
            reply = decode(Reply, raw, self.settings.max_payload_bytes)
        except PayloadError as exc:
            raise LinkError(f"unreadable reply from the bridge: {exc}") from exc
        result = "ok" if reply.ok else (reply.error.code if reply.error else "error")
        self._observe(op, result, time.perf_counter() - started)
        return reply

    # -- dynamic security --------------------------------------------------------------------
    async def dynsec(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` in one batch; return the plugin's response to each, in order.
        Raises :class:`DynsecError` for the first refused one unless the caller filters."""
        loop = asyncio.get_running_loop()
        ids = [uuid.uuid4().hex for _ in commands]
        futures = [loop.create_future() for _ in commands]
        for cid, fut in zip(ids, futures, strict=True):
            self._dynsec[cid] = fut
        try:
            await self._client().publish(DYNSEC_COMMAND, dynsec.tagged(commands, ids), qos=1)
            async with asyncio.timeout(self.settings.bridge_timeout):
                return list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            raise LinkTimeout("the broker did not answer the dynamic-security command") from exc
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"publish failed: {exc}") from exc
        finally:
            for cid in ids:
                self._dynsec.pop(cid, None)


def refused(responses: list[dict[str, Any]], *, tolerate: Sequence[str] = ()) -> None:
    """Raise :class:`DynsecError` for the first response with an error not in ``tolerate``
    (matched as substrings, e.g. "already exists", "not found")."""
    for response in responses:
        error = response.get("error")
        if error and not any(t in str(error) for t in tolerate):
            raise DynsecError(str(response.get("command")), str(error))
