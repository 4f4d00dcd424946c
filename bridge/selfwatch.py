"""The bridge watching itself: staff hear of its own degradation before players complain.

Every few seconds it compares the database-error counters with the last look and the number
of commands queued across actors with ``PLAZA_BACKLOG_ALERT``. Either raises an admin alert,
at most one per kind per ``PLAZA_ALERT_COOLDOWN``. The alert is published at once (the
database may be what is failing) and stored through the device store, which retries until
the database answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge.alerts import make_alert
from plaza.logs import flush_summaries
from plaza.messages import AdminAlert, AlertSeverity

CHECK_EVERY = 5.0


@dataclass
class Readings:
    db_errors: int
    backlog: int


class SelfWatch:
    def __init__(
        self,
        read: Callable[[], Readings],
        raise_alert: Callable[[AdminAlert], Awaitable[None]],
        backlog_limit: int,
        cooldown: float,
    ) -> None:
        self._read = read
        self._raise = raise_alert
        self.backlog_limit = backlog_limit
        self.cooldown = cooldown
        self._last_errors = 0
        self._last_alert: dict[str, float] = {}

    async def run(self) -> None:
        self._last_errors = self._read().db_errors
        while True:
            await asyncio.sleep(CHECK_EVERY)
            flush_summaries()  # how many repeated warnings the log left out, if any
            for alert in self.look(time.time()):
                await self._raise(alert)

    def look(self, now: float) -> list[AdminAlert]:
        readings = self._read()
        found: list[tuple[str, dict[str, object]]] = []
        new_errors = readings.db_errors - self._last_errors
        self._last_errors = readings.db_errors
        if new_errors > 0:
            found.append(("bridge_db_errors", {"count": new_errors}))
        if readings.backlog > self.backlog_limit:
            found.append(
                ("bridge_backlog", {"count": readings.backlog, "limit": self.backlog_limit})
            )
        alerts = []
        for kind, params in found:
            last = self._last_alert.get(kind)
            if last is not None and now - last < self.cooldown:
                continue
            self._last_alert[kind] = now
            alerts.append(make_alert(kind, AlertSeverity.HIGH, now, None, **params))
        return alerts
