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

The broker sends a subscription's retained messages at once after the SUBACK. The read ends
when every expected entry has come, or nothing has come for :data:`QUIET` seconds, or after
:data:`LIMIT` seconds; an entry not heard by then goes out again (the safe side: at worst
the old behaviour, never a missing entry). Clients keep the highest version they have seen,
so one sent again needlessly costs bandwidth, not correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.models import Incoming
from plaza.mqtt import PlazaClient
from plaza.topics import BoardTopic, Topics

log = logging.getLogger(__name__)

#: the read ends when no retained entry has come for this long (seconds)
QUIET = 2.0
#: and in any case after this long (seconds)
LIMIT = 30.0


def to_republish(
    expected: Mapping[str, int], held: Mapping[str, int], current: Mapping[str, int]
) -> list[str]:
    """The machines whose entry goes out again: ``expected`` is each machine's version when
    the read began, ``held`` what the broker holds retained, ``current`` the version now."""
    return [d for d, v in expected.items() if current.get(d) == v and held.get(d, -1) < v]


def retained_version(payload: bytes, limit: int) -> int | None:
    """The ``version`` of a retained board entry; None when it has none we can read."""
    if not payload or len(payload) > limit:
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    version = body.get("version") if isinstance(body, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return None
    return version


class BoardSync:
    """Reads the retained board back once per connection (see the module's docstring)."""

    def __init__(
        self, topics: Topics, *, payload_limit: int, quiet: float = QUIET, limit: float = LIMIT
    ) -> None:
        self.topics = topics
        self._payload_limit = payload_limit
        self.quiet = quiet
        self.limit = limit
        self._reading = False
        self._held: dict[str, int] = {}
        self._missing: set[str] = set()
        self._expected: Mapping[str, int] = {}
        self._last = 0.0
        self._complete = asyncio.Event()

    async def handle(self, where: BoardTopic, message: Incoming) -> bool:
        """A board entry from the broker: counted while reading, retained ones only (a live
        one is another bridge's; this bridge's own never come back: no-local)."""
        if not (self._reading and message.retained):
            return True
        version = retained_version(message.payload, self._payload_limit)
        if version is None:
            return True
        device = where.device
        self._held[device] = max(version, self._held.get(device, -1))
        self._last = time.monotonic()
        if device in self._missing and self._held[device] >= self._expected[device]:
            self._missing.discard(device)
            if not self._missing:
                self._complete.set()
        return True

    async def read(self, client: PlazaClient, expected: Mapping[str, int]) -> dict[str, int]:
        """Subscribe to the board, collect what the broker holds retained, unsubscribe.
        Returns each machine's retained version (machines the broker has none for are
        absent)."""
        self._expected = expected
        self._held = {}
        self._missing = set(expected)
        self._complete.clear()
        self._reading = True
        try:
            options = SubscribeOptions(qos=1, noLocal=True, retainHandling=0)
            await client.subscribe(self.topics.all_board, options=options)
            began = self._last = time.monotonic()
            while self._missing:
                wait = min(self._last + self.quiet, began + self.limit) - time.monotonic()
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._complete.wait(), wait)
        finally:
            self._reading = False
        with contextlib.suppress(aiomqtt.MqttError):
            await client.unsubscribe(self.topics.all_board)
        return dict(self._held)
