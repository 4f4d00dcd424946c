"""The broker's own figures (Mosquitto's ``$SYS/broker/...`` tree) as Prometheus metrics.

Mosquitto publishes its statistics, retained, under ``$SYS/broker/`` every ``sys_interval``
seconds (10 by default): clients, messages and bytes in and out, publishes it dropped, stored
messages, retained messages, subscriptions, heap. :func:`watch_broker` subscribes to that tree
on a service connection and feeds :class:`BrokerStats`; :class:`BrokerStatsCollector` exports
what arrived last, at scrape time, named ``plaza_broker_*`` (every help text names the $SYS
topic it comes from), so a dashboard tells the broker's figures from the bridge's
(``plaza_bridge_*``) at a glance.

Levels (clients connected, stored messages, heap) are gauges; Mosquitto's running totals
(messages, bytes, drops since it started) are counters, so ``rate()`` and ``increase()`` handle
the reset when the broker restarts. ``plaza_broker_sys_updated_timestamp_seconds`` says when
the broker last reported: a stale value means the broker (or this connection) is gone.
A figure the broker does not publish (heap, in builds without memory tracking) is left out.

Who may read ``$SYS/broker/#``: the ``svc-bridge`` and ``observer`` roles (plaza.acl).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import aiomqtt
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plaza.topics import BROKER_SYS_PREFIX, BROKER_SYS_TREE

log = logging.getLogger(__name__)
PREFIX = "plaza_broker_"
Kind = Literal["gauge", "counter"]


@dataclass(frozen=True, slots=True)
class SysFigure:
    """One ``$SYS/broker/{path}`` figure and the metric it becomes."""

    path: str
    name: str
    kind: Kind
    help: str


#: what is exported, by $SYS path (below ``$SYS/broker/``); Mosquitto 2.0
FIGURES: tuple[SysFigure, ...] = (
    SysFigure("clients/connected", "clients_connected", "gauge", "Clients connected now"),
    SysFigure(
        "clients/disconnected",
        "clients_disconnected",
        "gauge",
        "Persistent clients disconnected, their sessions kept",
    ),
    SysFigure(
        "clients/total", "clients_known", "gauge", "Clients connected or with a kept session"
    ),
    SysFigure("clients/maximum", "clients_maximum", "gauge", "Most clients connected at once"),
    SysFigure("clients/expired", "clients_expired", "counter", "Sessions expired"),
    SysFigure("messages/received", "messages_received", "counter", "MQTT packets received"),
    SysFigure("messages/sent", "messages_sent", "counter", "MQTT packets sent"),
    SysFigure(
        "messages/stored",
        "messages_stored",
        "gauge",
        "Messages held: retained, and queued for clients",
    ),
    SysFigure("store/messages/count", "store_messages", "gauge", "Messages in the store"),
    SysFigure("store/messages/bytes", "store_bytes", "gauge", "Payload bytes in the store"),
    SysFigure(
        "publish/messages/received", "publish_received", "counter", "PUBLISH packets received"
    ),
    SysFigure("publish/messages/sent", "publish_sent", "counter", "PUBLISH packets sent"),
    SysFigure(
        "publish/messages/dropped",
        "publish_dropped",
        "counter",
        "Publishes dropped: a client's queue was full (max_queued_messages/bytes) or it was away",
    ),
    SysFigure("bytes/received", "bytes_received", "counter", "Bytes received"),
    SysFigure("bytes/sent", "bytes_sent", "counter", "Bytes sent"),
    SysFigure("retained messages/count", "retained_messages", "gauge", "Retained messages"),
    SysFigure("subscriptions/count", "subscriptions", "gauge", "Subscriptions"),
    SysFigure("heap/current", "heap_bytes", "gauge", "Heap in use"),
    SysFigure("heap/maximum", "heap_max_bytes", "gauge", "Most heap in use since start"),
    SysFigure("uptime", "uptime_seconds", "gauge", "Seconds since the broker started"),
)
_BY_PATH = {f.path: f for f in FIGURES}


def _number(payload: bytes) -> float | None:
    """``b"42"``, ``b"0.25"`` or ``b"1234 seconds"`` (uptime) as a number; None otherwise."""
    words = payload.decode("ascii", errors="replace").split()
    if not words:
        return None
    try:
        return float(words[0])
    except ValueError:
        return None


@dataclass
class BrokerStats:
    """The latest value of each figure, and when the broker last reported one."""

    values: dict[str, float] = field(default_factory=dict)
    updated: float | None = None

    def apply(self, topic: str, payload: bytes, at: float | None = None) -> bool:
        """Take one ``$SYS`` message; False (and nothing kept) for a topic or payload that is
        not a figure we export."""
        figure = _BY_PATH.get(topic.removeprefix(BROKER_SYS_PREFIX))
        if figure is None or not topic.startswith(BROKER_SYS_PREFIX):
            return False
        value = _number(payload)
        if value is None:
            return False
        self.values[figure.path] = value
        self.updated = time.time() if at is None else at
        return True


class BrokerStatsCollector(Collector):
    """Exports :class:`BrokerStats` at scrape time (only figures that have arrived)."""

    def __init__(self, stats: BrokerStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        for figure in FIGURES:
            value = self.stats.values.get(figure.path)
            if value is None:
                continue
            help_text = f"{figure.help} (Mosquitto $SYS/broker/{figure.path})"
            name = PREFIX + figure.name
            if figure.kind == "counter":
                yield CounterMetricFamily(name, help_text, value=value)
            else:
                yield GaugeMetricFamily(name, help_text, value=value)
        if self.stats.updated is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}sys_updated_timestamp_seconds",
                "When the broker last published a $SYS figure (Unix time)",
                value=self.stats.updated,
            )


def register(registry: CollectorRegistry, stats: BrokerStats) -> None:
    registry.register(BrokerStatsCollector(stats))


async def watch_broker(client: aiomqtt.Client, stats: BrokerStats) -> None:
    """Subscribe ``client`` (connected; an account whose role reads ``$SYS/broker/#``) and feed
    ``stats`` until the connection ends. Runs beside other consumers only if they share
    ``client.messages`` knowingly: give it a connection of its own, or route ``$SYS`` topics
    to :meth:`BrokerStats.apply` from the one message loop."""
    await client.subscribe(BROKER_SYS_TREE, qos=0)
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        stats.apply(message.topic.value, payload)
