"""BoardSync: after (re)connecting, publish again only the board entries the broker lacks.

The bridge used to publish every machine's entry again on every connect, so that a publish
lost with the last connection, or retained messages a crashed broker had not saved, were
restored. At 2,000 machines and 1,000 screens that is 2 million deliveries of nothing new
after each broker restart and each bridge restart (`plaza soak`: 4.1 million in a 10-minute
run, with screens dropped for missed keepalives behind them).

Now, on connecting, the bridge reads the retained board back on its main connection
(``board/+``, MQTT 5 no-local, retained messages only) and publishes an entry again only when
the broker's copy is missing or older than the view the bridge had when it began reading,
and that view has not moved since (a newer entry is then already on its way):

- a publish handed to the last connection and never acknowledged (lost with it);
- retained messages a broker killed before its ``autosave_interval`` had not saved;
- a bridge started after one killed before its publish went out.

The broker queues a subscription's retained messages to the connection when it takes the
SUBSCRIBE, behind whatever it had queued already (after a broker restart: thousands of
machines' presence and state, which the bridge works through first). So the end of the read is
a marker: once the SUBACK is in, the bridge publishes a nonce to its own marker topic
(``services/{client id}/board-sync``, subscribed without no-local), which the broker queues
behind the retained entries. The read ends when every expected entry has come, or the marker
has, or after :data:`LIMIT` seconds; an entry not heard by then goes out again (the safe
side: at worst the old behaviour, never a missing entry). Clients keep the highest version
they have seen, so one sent again needlessly costs bandwidth, not correctness. (A first cut
ended the read after 2 s without a board entry: in `plaza bench storm` the entries were still
queued behind 4,000 presence and state messages then, and 636 were sent again needlessly.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.models import Incoming
from plaza.mqtt import PlazaClient
from plaza.topics import BoardTopic, Topics

log = logging.getLogger(__name__)

#: the read ends after this long even without its marker (seconds)
LIMIT = 30.0


def to_republish(
    expected: Mapping[str, int],
    held: Mapping[str, int],
    current: Mapping[str, int],
    stale: Collection[str] = (),
) -> list[str]:
    """The machines whose entry goes out again: ``expected`` is each machine's version when
    the read began, ``held`` the version the broker holds retained, ``current`` the version
    now, ``stale`` the machines whose retained copy has the bridge's version but not its
    content (an entry of an older release, before a field was added)."""
    return [
        d
        for d, v in expected.items()
        if current.get(d) == v and (held.get(d, -1) < v or d in stale)
    ]


def entry_body(payload: bytes, limit: int) -> dict[str, Any] | None:
    """A board entry's JSON object without its ``ts`` (which every publish renews), with a
    readable ``version``; None when it is not one."""
    if not payload or len(payload) > limit:
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return None
    body.pop("ts", None)
    return body


class BoardSync:
    """Reads the retained board back once per connection (see the module's docstring)."""

    def __init__(
        self, topics: Topics, client_id: str, *, payload_limit: int, limit: float = LIMIT
    ) -> None:
        self.topics = topics
        #: this connection's end-of-read marker topic (Connections hands its messages here)
        self.marker_topic = topics.board_sync_marker(client_id)
        self._payload_limit = payload_limit
        self.limit = limit
        self._reading = False
        self._held: dict[str, dict[str, Any]] = {}
        self._missing: set[str] = set()
        self._expected: Mapping[str, int] = {}
        self._nonce = b""
        self._complete = asyncio.Event()

    def marked(self, payload: bytes) -> None:
        """The marker came back: every retained entry queued before it has come too."""
        if self._reading and payload == self._nonce:
            self._complete.set()

    async def handle(self, where: BoardTopic, message: Incoming) -> bool:
        """A board entry from the broker: kept while reading, retained ones only (a live one
        is another bridge's; this bridge's own never come back: no-local)."""
        if not (self._reading and message.retained):
            return True
        body = entry_body(message.payload, self._payload_limit)
        if body is None:
            return True
        device = where.device
        held = self._held.get(device)
        if held is None or body["version"] >= held["version"]:
            self._held[device] = body
        if device in self._missing and self._held[device]["version"] >= self._expected[device]:
            self._missing.discard(device)
            if not self._missing:
                self._complete.set()
        return True

    async def read(
        self, client: PlazaClient, expected: Mapping[str, int]
    ) -> dict[str, dict[str, Any]]:
        """Subscribe to the board, collect what the broker holds retained, unsubscribe.
        Returns each machine's retained entry without ``ts`` (machines the broker has none
        for are absent).

        QoS 0, board and marker alike: the broker sends QoS 0 messages to a connected client
        at once, outside its queue of QoS 1 messages (``max_queued_messages``), which after a
        restart is full of machines' presence and state; at QoS 1 the 10,000 entries of a
        large venue would be dropped there, and live presence behind them. The marker, at
        QoS 0 too, stays behind the entries. Whatever the broker drops is missing here and
        goes out again."""
        self._expected = expected
        self._held = {}
        self._missing = set(expected)
        self._nonce = uuid.uuid4().hex.encode()
        self._complete.clear()
        self._reading = True
        try:
            await _subscribed(client, self.marker_topic, SubscribeOptions(qos=0))
            options = SubscribeOptions(qos=0, noLocal=True, retainHandling=0)
            await _subscribed(client, self.topics.all_board, options)
            await client.publish(self.marker_topic, self._nonce, qos=0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limit):
                    await self._complete.wait()
        finally:
            self._reading = False
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe([self.topics.all_board, self.marker_topic])
        return dict(self._held)


async def _subscribed(client: PlazaClient, topic: str, options: SubscribeOptions) -> None:
    granted = await client.subscribe(topic, options=options)
    code = granted[0] if granted else None
    value = code.value if isinstance(code, ReasonCode) else (code or 0)
    if value >= 0x80:
        raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}: {code}")
