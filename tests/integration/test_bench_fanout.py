"""`plaza bench fanout` in small (20 subscribers, 5 changes), so the bench cannot rot, and the
frame counter it relies on, shown to see the several frames per packet of mqtt.js's stock
Node transport."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from venue.bench_fanout import FanoutOptions, _bench
from venue.cli import main

pytestmark = [pytest.mark.integration]
FRAMES = re.compile(
    r"sent (\d+) WebSocket frames, (\d+) of them exactly one whole MQTT packet, for (\d+) MQTT"
)


def test_a_small_fanout_bench_delivers_every_change_one_frame_per_packet(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    small = ["--subscribers", "20", "--changes", "5", "--processes", "2"]
    code = main(["bench", "fanout", *small, "--output", str(out)])
    text = out.read_text()
    assert code == 0, text
    assert "## Fan-out (`plaza bench fanout`)" in text
    assert "| raw state topic -> last subscriber (reference) | 5 |" in text
    assert "| state change -> board entry at the last subscriber | 5 |" in text
    assert "Missing deliveries: raw 0, board 0 of 100 each" in text
    found = FRAMES.search(text)
    assert found is not None, text
    frames, whole, packets = (int(g) for g in found.groups())
    assert frames == whole == packets > 20 * 5  # CONNECT, SUBSCRIBE, a PUBACK per delivery
    assert "| node0 (10 clients) |" in text
    assert "| node1 (10 clients) |" in text


def test_the_frame_counter_sees_mqtt_js_stock_transport_split_packets(tmp_path: Path) -> None:
    result = asyncio.run(
        _bench(FanoutOptions(subscribers=2, changes=1, processes=1, transport="stock"), tmp_path)
    )
    (stats,) = result.stats
    assert result.missing("raw") == result.missing("board") == 0
    assert stats["frames"] > stats["packets"]
    assert stats["whole"] < stats["frames"]
