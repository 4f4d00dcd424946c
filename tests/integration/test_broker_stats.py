"""plaza.broker_stats against the real broker: the bridge's account reads $SYS/broker/#, and
the figures come out as plaza_broker_* metrics."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plaza.broker_stats import BrokerStats, register, watch_broker
from tests.conftest import BrokerHandle

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_the_bridge_account_exports_the_brokers_sys_figures(broker: BrokerHandle) -> None:
    stats, registry = BrokerStats(), CollectorRegistry()
    register(registry, stats)
    async with (
        broker.client("bridge", broker.secrets.bridge) as client,
        broker.observer(),  # a second client, so "connected" counts more than us
    ):
        task = asyncio.get_running_loop().create_task(watch_broker(client, stats))
        try:
            # the retained figures arrive at once (from the broker's start: 0 clients); the
            # next report, within sys_interval (10 s), counts the two of us
            # (one message per figure: wait for the report's received count too, which may
            # come a moment after its connected count)
            async with asyncio.timeout(25):
                while (  # noqa: ASYNC110
                    stats.values.get("clients/connected", 0) < 2
                    or stats.values.get("messages/received", 0) <= 0
                ):
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    connected = families["plaza_broker_clients_connected"]
    assert connected.type == "gauge"
    assert connected.samples[0].value >= 2
    assert "$SYS/broker/clients/connected" in connected.documentation
    received = families["plaza_broker_messages_received"]
    assert received.type == "counter"
    assert received.samples[0].name == "plaza_broker_messages_received_total"
    assert received.samples[0].value > 0
    assert families["plaza_broker_uptime_seconds"].samples[0].value >= 0
    assert "plaza_broker_sys_updated_timestamp_seconds" in families
    assert "plaza_broker_publish_dropped" in families
    assert all(name.startswith("plaza_broker_") for name in families)


async def test_a_player_account_may_not_read_the_sys_tree(broker: BrokerHandle) -> None:
    async with broker.client("player1", broker.secrets.players["player1"]) as player:
        granted = await player.subscribe("$SYS/broker/#", qos=0)
    assert granted is not None
    codes = [c.value if isinstance(c, ReasonCode) else c for c in granted]
    assert codes
    assert all(code >= 0x80 for code in codes), codes  # not authorized
