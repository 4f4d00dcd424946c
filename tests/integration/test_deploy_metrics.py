"""Every series the Grafana dashboard and the alert rules (deploy/) read is one a running
venue really exports: scraped from a live bridge's /metrics, rendered by the api's registry,
and the broker's $SYS figures as plaza.broker_stats exports them from the real broker."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics
from bridge.service import BridgeService
from plaza.broker_stats import FIGURES, BrokerStats, register, watch_broker
from plaza.settings import Settings
from tests.conftest import BrokerHandle, RunningService
from tests.observability import alert_rules, dashboard_queries, series_names

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported(exposition: str) -> set[str]:
    """The series names an exposition offers, samples or not (a labelled counter that has
    not counted yet still declares its family)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


async def broker_exposition(broker: BrokerHandle) -> str:
    """plaza.broker_stats fed by the real broker's retained $SYS tree."""
    stats, registry = BrokerStats(), CollectorRegistry()
    register(registry, stats)
    async with broker.client("bridge", broker.secrets.bridge) as client:
        task = asyncio.get_running_loop().create_task(watch_broker(client, stats))
        try:
            async with asyncio.timeout(15):
                while len(stats.values) < len(FIGURES) - 1:  # noqa: ASYNC110 - (no clients/maximum in 2.0)
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
    return generate_latest(registry).decode()


async def test_the_dashboard_and_the_alert_rules_read_only_series_that_are_exported(
    broker: BrokerHandle, bridge_settings: Settings, seeded: list[str]
) -> None:
    running = RunningService(BridgeService(bridge_settings, metrics_port=0))
    service = await running.start()
    try:
        async with httpx.AsyncClient() as http:
            scraped = await http.get(f"http://127.0.0.1:{service.metrics_port}/metrics")
    finally:
        await running.stop()
    assert scraped.status_code == 200
    available = exported(scraped.text) | exported(ApiMetrics().render().decode())
    available |= exported(await broker_exposition(broker))
    assert "plaza_bridge_devices_online" in available
    assert "plaza_broker_publish_dropped_total" in available
    assert "plaza_api_bridge_request_seconds_bucket" in available
    used: dict[str, set[str]] = {}
    for title, query in dashboard_queries():
        used.setdefault(f"dashboard panel {title!r}", set()).update(series_names(query))
    for rule in alert_rules():
        used.setdefault(f"alert {rule['alert']}", set()).update(series_names(rule["expr"]))
    missing = {where: names - available for where, names in used.items() if names - available}
    assert missing == {}
    assert sum(len(n) for n in used.values()) >= 30
