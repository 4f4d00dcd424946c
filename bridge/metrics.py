"""Counters and gauges of the bridge (exported in Prometheus format by a later issue)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BridgeMetrics:
    presence_applied: int = 0
    #: presences older than the machine's current epoch (a late will of a dead connection)
    fenced_presences: int = 0
    states_applied: int = 0
    stale_states: int = 0
    bad_payloads: int = 0
    unknown_topics: int = 0
    reconnects: int = 0
    db_batches: int = 0
    db_errors: int = 0
    board_published: int = 0
    #: messages whose handling raised (a bug, logged with its traceback; the loop goes on)
    handler_errors: int = 0
