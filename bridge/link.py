"""Link: the bridge's broker connection as everything that publishes sees it.

The MQTT loop (:mod:`bridge.service`) sets :attr:`Link.client` once connected, sets
:attr:`Link.connected` once subscribed, and calls :meth:`Link.down` when the connection is
lost. :meth:`Link.publish` sends live messages
(boards, presence events, refusals) and gives up quietly while disconnected: boards are
re-published on every reconnect. The outbox publisher waits on :attr:`Link.connected`
instead and retries, because what it sends is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiomqtt

from bridge.metrics import BridgeMetrics
from bridge.models import Outbound

log = logging.getLogger(__name__)


class Link:
    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    def down(self) -> None:
        self.client = None
        self.connected.clear()

    async def publish(self, outbound: Sequence[Outbound]) -> None:
        """Publish ``outbound`` now; while disconnected, log and drop (nothing committed)."""
        client = self.client
        if client is None:
            log.warning("not connected; %d messages not published", len(outbound))
            return
        try:
            await asyncio.gather(
                *(
                    client.publish(
                        o.topic, o.payload, qos=o.qos, retain=o.retain, properties=o.properties()
                    )
                    for o in outbound
                )
            )
        except aiomqtt.MqttError as exc:
            log.warning("publish failed (%s); boards are re-published on reconnect", exc)
            return
        self._metrics.board_published += sum(1 for o in outbound if o.retain)
