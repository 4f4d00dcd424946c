"""The api's Prometheus metrics (prometheus-client), in a registry of its own per app, so two
apps in one process (tests) do not clash. Served at ``GET /metrics``."""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

WINDOW = 300.0
BRIDGE_HISTOGRAM = "plaza_bridge_command_seconds"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "plaza_api_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "plaza_api_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bridge_requests = Counter(
            "plaza_api_bridge_requests",
            "requests sent to the bridge, by op and result (ok or the error code)",
            ["op", "result"],
            registry=self.registry,
        )
        self.bridge_latency = Histogram(
            "plaza_api_bridge_request_seconds",
            "time from sending a request to the bridge to its reply",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.broker_connected = Gauge(
            "plaza_api_broker_connected",
            "1 while the api's MQTT connection is up",
            registry=self.registry,
        )
        self.logins = Counter(
            "plaza_api_logins",
            "login attempts by result (ok, invalid_credentials, rate_limited)",
            ["result"],
            registry=self.registry,
        )

        self.limited = Counter(
            "plaza_api_limited",
            "requests refused by a cap or a budget, by limit (mqtt_credentials, body_size, ...)",
            ["limit"],
            registry=self.registry,
        )
        self.browser_sessions = Counter(
            "plaza_api_browser_sessions",
            "browser-session broker accounts ended, by why (retired over the cap, expired)",
            ["event"],
            registry=self.registry,
        )

    def observe_bridge(self, op: str, result: str, seconds: float) -> None:
        self.bridge_requests.labels(op, result).inc()
        self.bridge_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- the bridge's command latency, for GET /admin/stats ---------------------------------------
Buckets = dict[float, float]  # upper bound -> cumulative count


class LatencyWindow:
    """Scrapes of the bridge's histogram; p99 over the difference to the oldest recent one."""

    def __init__(self) -> None:
        self.scrapes: deque[tuple[float, Buckets]] = deque()

    def add(self, at: float, buckets: Buckets) -> tuple[float | None, float | None]:
        while self.scrapes and at - self.scrapes[0][0] > WINDOW:
            self.scrapes.popleft()
        base_at, base = self.scrapes[0] if self.scrapes else (None, {})
        self.scrapes.append((at, buckets))
        if base and any(buckets.get(b, 0) < n for b, n in base.items()):
            base, base_at = {}, None  # the bridge restarted: its counters began again
        delta = {b: n - base.get(b, 0.0) for b, n in buckets.items()}
        return p99(delta), (at - base_at if base_at is not None else None)


def p99(cumulative: Buckets) -> float | None:
    if not cumulative:
        return None
    total = cumulative.get(float("inf"), max(cumulative.values()))
    if total <= 0:
        return None
    for bound in sorted(cumulative):
        if cumulative[bound] >= 0.99 * total:
            return bound
    return None


async def scrape_latency(host: str, port: int) -> Buckets | None:
    """GET the bridge's /metrics (plain HTTP/1.0 over asyncio streams) and read the buckets."""
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: bridge\r\n\r\n")
            await writer.drain()
            raw = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return None
    _, _, body = raw.partition(b"\r\n\r\n")
    buckets: Buckets = {}
    for family in text_string_to_metric_families(body.decode(errors="replace")):
        if family.name != BRIDGE_HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.name == f"{BRIDGE_HISTOGRAM}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets
