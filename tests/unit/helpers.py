"""Helpers of the unit tests: the bridge's batch statements over dicts, and jobs outside a loop.

:class:`MemorySql` is a :class:`bridge.sql.BatchSql` with no database, so the SlotBook and the
committer's decision step run in pure tests (tests/unit/test_rules.py). It is held to the same
rows as the sqlite3 and Core implementations by tests/integration/test_batch_sql.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from bridge.models import Outbound, Stored
from bridge.reservations.actors import Job
from bridge.sql import DeviceRow, EntryRow, SlotRow, StandingRow
from bridge.sql.rows import InTurn
from bridge.writes import Writes
from plaza import rules

_ACTIVE = {s.value for s in rules.ACTIVE}
_LIVE_ENTRIES = {s.value for s in rules.LIVE_ENTRIES}
#: jobs made outside a running loop still need a future (nothing here ever resolves it)
_NO_LOOP = asyncio.new_event_loop()
_NO_LOOP.close()


def job(cmd: rules.Command, **kw: Any) -> Job:
    """A job for ``cmd``, made outside an event loop."""
    return Job(cmd.device_id, cmd, future=_NO_LOOP.create_future(), **kw)


class MemorySql(InTurn):
    """The batch's statements over a dict of reservation rows (see the module docstring)."""

    def __init__(self, devices: Iterable[DeviceRow], rows: Iterable[SlotRow] = ()) -> None:
        self.machines = {d.id: d for d in devices}
        self.rows: dict[str, SlotRow] = {r.id: r for r in rows}
        #: when each reservation last changed (what no-show strikes are counted by)
        self.updated: dict[str, datetime] = {}
        self.waitlist: dict[str, EntryRow] = {}
        #: player -> (suspended until, strikes since)
        self.standings: dict[str, tuple[datetime | None, datetime | None]] = {}
        self.logs: dict[str, str] = {}
        #: the reservations' request keys (unique, as in SQL)
        self.keys: set[str] = set()
        self.outbox: list[Stored] = []
        #: why a stored outbox message was written dead-lettered, by id
        self.dead: dict[int, str] = {}

    def _live(self, row: SlotRow, after: datetime, before: datetime) -> bool:
        return row.status in _ACTIVE and row.ends_at > after and row.starts_at < before

    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]:
        return [(k, self.logs[k]) for k in keys if k in self.logs]

    def devices(self, ids: Collection[str]) -> list[DeviceRow]:
        return [self.machines[i] for i in ids if i in self.machines]

    def targets(self, ids: Collection[str]) -> list[SlotRow]:
        return [self.rows[i] for i in ids if i in self.rows]

    def near(
        self,
        devices: Collection[str],
        players: Collection[str],
        after: datetime,
        before: datetime,
    ) -> list[SlotRow]:
        return [
            r
            for r in self.rows.values()
            if (r.device_id in devices or r.player in players) and self._live(r, after, before)
        ]

    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]:
        groups = {
            (r.player, r.party_id or r.id)
            for r in self.rows.values()
            if r.player in players and r.status in _ACTIVE and r.ends_at > now
        }
        return sorted(Counter(player for player, _ in groups).items())

    def party_seats(self, parties: Collection[str]) -> list[SlotRow]:
        return [r for r in self.rows.values() if r.party_id and r.party_id in parties]

    def kind_devices(self, kinds: Collection[str]) -> list[DeviceRow]:
        return [d for d in self.machines.values() if d.kind in kinds]

    def entries(self, ids: Collection[str], offers: Collection[str]) -> list[EntryRow]:
        return [e for e in self.waitlist.values() if e.id in ids or (e.offer_id or "") in offers]

    def live_entries(self, kinds: Collection[str], players: Collection[str]) -> list[EntryRow]:
        return [
            e
            for e in self.waitlist.values()
            if (e.kind in kinds or e.player in players) and e.status in _LIVE_ENTRIES
        ]

    def standing(self, players: Collection[str], window_start: datetime) -> list[StandingRow]:
        found = []
        for player in sorted(players):
            until, since = self.standings.get(player, (None, None))
            strikes = sum(
                1
                for r in self.rows.values()
                if r.player == player
                and r.status == rules.Status.NO_SHOW.value
                and (at := self.updated.get(r.id, window_start)) >= window_start
                and (since is None or at > since)
            )
            if until is not None or strikes or player in self.standings:
                found.append(StandingRow(player, until, strikes))
        return found

    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        return sorted(
            (
                r
                for r in self.rows.values()
                if r.device_id == device
                and r.status == rules.Status.APPROVED.value
                and r.starts_at <= early
                and r.ends_at > now
            ),
            key=lambda r: r.starts_at,
        )

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]:
        return [
            r for r in self.rows.values() if r.device_id in devices and self._live(r, now, horizon)
        ]

    def insert_reservations(self, rows: list[dict[str, Any]]) -> None:
        keys = set(self.keys)
        for r in rows:
            assert r["id"] not in self.rows, "a reservation id is inserted once"
            assert r["request_key"] not in keys, "a request key is used once"
            keys.add(r["request_key"])
            self.rows[r["id"]] = SlotRow(
                r["id"],
                r["device_id"],
                r["player"],
                r["starts_at"],
                r["ends_at"],
                r["status"],
                r["code"],
                r.get("party_id"),
                r.get("hold_until"),
            )
            if "updated_at" in r:
                self.updated[r["id"]] = r["updated_at"]
        self.keys = keys

    def insert_logs(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            assert r["request_key"] not in self.logs, "a request key is logged once"
            self.logs[r["request_key"]] = r["reply_json"]

    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int = 65_536
    ) -> list[Stored]:
        stored = [(len(self.outbox) + i + 1, m) for i, m in enumerate(messages)]
        self.outbox += stored
        for i, m in stored:
            if (reason := m.unsendable(max_packet)) is not None:
                self.dead[i] = reason
        return stored

    def flush(self, writes: Writes, now: datetime) -> list[Stored]:
        """What :meth:`bridge.writes.Writes.flush_sync` writes, in its order (notifications
        are not numbered here: that needs the database)."""
        for change in writes.changed:
            row = self.rows[change["id"]]
            fields = {k: v for k, v in change.items() if k in SlotRow._fields and k != "id"}
            self.rows[row.id] = row._replace(**fields)
            if "updated_at" in change:
                self.updated[row.id] = change["updated_at"]
        self.insert_reservations(writes.new)
        self.insert_logs(writes.logs)
        for e in writes.entries_new:
            assert e["id"] not in self.waitlist, "an entry id is inserted once"
            self.waitlist[e["id"]] = EntryRow(*(e[name] for name in EntryRow._fields))
        for change in writes.entries_changed:
            entry = self.waitlist[change["id"]]
            fields = {k: v for k, v in change.items() if k in EntryRow._fields and k != "id"}
            self.waitlist[entry.id] = entry._replace(**fields)
        for standing in writes.standings:
            self.standings[standing["player"]] = (
                standing["suspended_until"],
                standing["strikes_since"],
            )
        return self.insert_outbox(writes.outbox, now)
