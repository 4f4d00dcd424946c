"""plaza.broker_stats: $SYS payloads to numbers, and what the collector exports."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plaza.broker_stats import FIGURES, BrokerStats, register

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("topic", "payload", "value"),
    [
        ("$SYS/broker/clients/connected", b"42", 42.0),
        ("$SYS/broker/uptime", b"1234 seconds", 1234.0),
        ("$SYS/broker/heap/current", b"2097152", 2097152.0),
        ("$SYS/broker/retained messages/count", b"10001", 10001.0),
    ],
)
def test_a_figure_is_kept_as_a_number(topic: str, payload: bytes, value: float) -> None:
    stats = BrokerStats()
    assert stats.apply(topic, payload, at=5.0)
    assert stats.values == {topic.removeprefix("$SYS/broker/"): value}
    assert stats.updated == 5.0


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("$SYS/broker/version", b"mosquitto version 2.0.11"),  # not a figure we export
        ("$SYS/broker/clients/connected", b"many"),
        ("$SYS/broker/clients/connected", b""),
        ("plaza/clients/connected", b"3"),
        ("$SYS/other/clients/connected", b"3"),
    ],
)
def test_anything_else_is_ignored(topic: str, payload: bytes) -> None:
    stats = BrokerStats()
    assert not stats.apply(topic, payload)
    assert stats.values == {}
    assert stats.updated is None


def test_only_figures_that_arrived_are_exported_as_gauges_or_counters() -> None:
    stats, registry = BrokerStats(), CollectorRegistry()
    register(registry, stats)
    assert generate_latest(registry) == b""
    stats.apply("$SYS/broker/clients/connected", b"7", at=100.0)
    stats.apply("$SYS/broker/publish/messages/dropped", b"3", at=101.0)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert {n: (f.type, [s.value for s in f.samples]) for n, f in families.items()} == {
        "plaza_broker_clients_connected": ("gauge", [7.0]),
        "plaza_broker_publish_dropped": ("counter", [3.0]),
        "plaza_broker_sys_updated_timestamp_seconds": ("gauge", [101.0]),
    }


def test_every_figure_has_its_own_name() -> None:
    names = [f.name for f in FIGURES]
    assert len(names) == len(set(names))
    assert len({f.path for f in FIGURES}) == len(FIGURES)
