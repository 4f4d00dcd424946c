"""The api's Prometheus metrics (prometheus-client), in a registry of its own per app, so two
apps in one process (tests) do not clash. Served at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def observe_bridge(self, op: str, result: str, seconds: float) -> None:
        self.bridge_requests.labels(op, result).inc()
        self.bridge_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
