"""Every series the Grafana dashboard and the alert rules (deploy/) read is one a running
venue really exports: scraped from a live bridge's /metrics and rendered by the api's
registry."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics
from bridge.service import BridgeService
from plaza.settings import Settings
from tests.conftest import RunningService
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


async def test_the_dashboard_and_the_alert_rules_read_only_series_that_are_exported(
    bridge_settings: Settings, seeded: list[str]
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
    assert "plaza_bridge_devices_online" in available
    assert "plaza_api_bridge_request_seconds_bucket" in available
    used: dict[str, set[str]] = {}
    for title, query in dashboard_queries():
        used.setdefault(f"dashboard panel {title!r}", set()).update(series_names(query))
    for rule in alert_rules():
        used.setdefault(f"alert {rule['alert']}", set()).update(series_names(rule["expr"]))
    missing = {where: names - available for where, names in used.items() if names - available}
    assert missing == {}
    assert sum(len(n) for n in used.values()) >= 30
