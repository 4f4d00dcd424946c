"""Router: one incoming message -> the handler of its parsed topic type.

The table is keyed by the type :meth:`plaza.topics.Topics.parse` returns (a device topic, a
request topic, a user topic, the admin requests topic). A handler answers False for a topic of
its type that the bridge does not read (a machine's cmd topic, a user's replies). Every
handler runs inside one catch-log-count: a message on a topic nobody handles is counted in
``unknown_topics``, and one whose handling raises (a bug) in ``handler_errors`` with its
traceback in the log; the MQTT loop lives on. A lost broker connection (``MqttError``) is not
the message's fault and goes up to the loop, which reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiomqtt

from bridge.metrics import BridgeMetrics
from bridge.models import Incoming
from plaza.topics import ParsedTopic, TopicError, Topics

log = logging.getLogger(__name__)

T = TypeVar("T", bound=ParsedTopic)
#: handles one message on a parsed topic; False: a topic of this type the bridge does not read
Handler = Callable[[T, Incoming], Awaitable[bool]]


class Router:
    def __init__(self, topics: Topics, metrics: BridgeMetrics) -> None:
        self.topics = topics
        self.metrics = metrics
        self._routes: dict[type[Any], Handler[Any]] = {}

    def route(self, kind: type[T], handler: Handler[T]) -> None:
        self._routes[kind] = handler

    async def handle(self, message: Incoming) -> None:
        """Route one incoming message; never raises for bad input."""
        try:
            parsed = self.topics.parse(message.topic)
        except TopicError as exc:
            self.metrics.unknown_topics += 1
            log.warning("dropped message on unknown topic: %s", exc)
            return
        handler = self._routes.get(type(parsed))
        try:
            handled = handler is not None and await handler(parsed, message)
        except aiomqtt.MqttError:
            raise
        except Exception:  # a bug must not take the bridge down: log, count, go on
            self.metrics.handler_errors += 1
            log.exception("message on %s could not be handled", message.topic)
            return
        if not handled:
            self.metrics.unknown_topics += 1
            log.warning("dropped message on a topic the bridge does not handle: %s", message.topic)
