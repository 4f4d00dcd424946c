"""`plaza bench abuse` at a small size: every phase runs and reports, and with the production
settings each flooder is cut off by the broker and no other player's command is lost."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from venue.bench_abuse import SUSTAINED, report, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_abuse_small_cuts_off_each_flooder_and_loses_no_other_command(tmp_path: Path) -> None:
    args = argparse.Namespace(machines=6, players=4, rate=20.0, seconds=1.5, output="")
    phases = asyncio.run(run(args, tmp_path))
    print(report(phases, args, "plaza bench abuse (small)"))
    assert [p.label for p in phases] == [
        "unflooded",
        "flood QoS 0",
        "flood QoS 1",
        f"{SUSTAINED}QoS 0",
        f"{SUSTAINED}QoS 1",
    ]
    for production in phases[1:3]:
        assert production.flood_sent > 0
        assert 0 <= production.cut_after < 1.5, "the broker cut the flooder off"
        assert production.lost == 0
    assert all(p.round_trips for p in phases)
