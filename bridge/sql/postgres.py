# ruff: noqa: S608  (SQL text built from constants at import; see below)
"""The batched path's statements as fixed strings on the ``psycopg`` connection itself, each
phase of a batch in one pipeline.

Through SQLAlchemy every statement of a batch was its own server round trip: a one-job
batch made ~11 (BEGIN, five reads, three inserts, the board read, COMMIT), 0.3-0.5 ms each on
a busy machine, and batches run one at a time. Here :meth:`PostgresBatchSql.facts` sends the
batch's reads (with the BEGIN psycopg puts before them) as one psycopg pipeline, and
:meth:`PostgresBatchSql.write_batch` its inserts and the board read as another: with the
COMMIT, three round trips. The near-slot window that depends on the targets' times is worked
out by the server in the same pipeline (sub-selects on the target ids), so no read waits for
another.

Lists go in as one array parameter (``= ANY(%s::text[])``), so a statement's text never
changes and psycopg prepares it after ``prepare_threshold`` executions (5, its default).
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection

from bridge.models import Outbound, Stored
from bridge.sql.booking import BookingSql
from bridge.sql.rows import BatchWrites, DeviceRow, Facts, FactsAsk, SlotRow
from bridge.sql.text import RES, as_sqlalchemy_error, statements

_SQL = statements(
    lambda name: f"%({name})s", lambda c, p: f"{c} = ANY(%({p})s::text[])", " RETURNING id"
)
_TARGETS_IN = f"{RES.name} WHERE id = ANY(%(targets)s::text[])"
#: the window from the earliest to the latest of the commands' times and their targets'
#: (LEAST and GREATEST skip NULLs; no times at all leaves it NULL, and no row in it)
_AFTER = f"LEAST(%(after)s::timestamptz, (SELECT min(starts_at) FROM {_TARGETS_IN}))"
_BEFORE = f"GREATEST(%(before)s::timestamptz, (SELECT max(ends_at) FROM {_TARGETS_IN}))"
_SQL_FACTS_NEAR = _SQL.near.replace("%(after)s", _AFTER).replace("%(before)s", _BEFORE)


def _slots(cursor: psycopg.Cursor[Any]) -> list[SlotRow]:
    return [SlotRow(*row) for row in cursor.fetchall()]


def _devices(cursor: psycopg.Cursor[Any]) -> list[DeviceRow]:
    return [DeviceRow(*row) for row in cursor.fetchall()]


def _as_sqlalchemy_error(statement: str) -> AbstractContextManager[None]:
    return as_sqlalchemy_error(statement, psycopg.IntegrityError)


class PostgresBatchSql(BookingSql):
    """The hot path's statements on ``raw`` (the psycopg connection of ``conn``'s
    transaction); the booking statements run on ``conn`` itself (:class:`BookingSql`)."""

    def __init__(self, raw: psycopg.Connection[Any], conn: Connection) -> None:
        super().__init__(conn)
        self.raw = raw

    def _run(self, sql: str, params: dict[str, Any]) -> psycopg.Cursor[Any]:
        return self.raw.execute(sql, params)

    def logged(self, keys: Collection[str]) -> list[tuple[str, str]]:
        return [(k, t) for k, t in self._run(_SQL.logged, {"keys": list(keys)})]

    def devices(self, ids: Collection[str]) -> list[DeviceRow]:
        return _devices(self._run(_SQL.devices, {"ids": list(ids)}))

    def targets(self, ids: Collection[str]) -> list[SlotRow]:
        return _slots(self._run(_SQL.targets, {"ids": list(ids)}))

    def near(
        self,
        devices: Collection[str],
        players: Collection[str],
        after: datetime,
        before: datetime,
    ) -> list[SlotRow]:
        params = {"devices": list(devices), "players": list(players)}
        return _slots(self._run(_SQL.near, {**params, "after": after, "before": before}))

    def held(self, players: Collection[str], now: datetime) -> list[tuple[str, int]]:
        rows = self._run(_SQL.held, {"players": list(players), "now": now})
        return [(p, int(n)) for p, n in rows]

    def check_in_rows(self, device: str, early: datetime, now: datetime) -> list[SlotRow]:
        return _slots(self._run(_SQL.check_in, {"device": device, "early": early, "now": now}))

    def board_rows(
        self, devices: Collection[str], now: datetime, horizon: datetime
    ) -> list[SlotRow]:
        params = {"devices": list(devices), "after": now, "before": horizon}
        return _slots(self._run(_SQL.board, params))

    def insert_reservations(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with _as_sqlalchemy_error(_SQL.insert_reservation), self.raw.cursor() as cursor:
                cursor.executemany(_SQL.insert_reservation, rows)

    def insert_logs(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with _as_sqlalchemy_error(_SQL.insert_log), self.raw.cursor() as cursor:
                cursor.executemany(_SQL.insert_log, rows)

    def insert_outbox(
        self, messages: list[Outbound], now: datetime, max_packet: int
    ) -> list[Stored]:
        if not messages:
            return []
        with _as_sqlalchemy_error(_SQL.insert_outbox), self.raw.cursor() as cursor:
            cursor.executemany(
                _SQL.insert_outbox,
                [m.row(now, max_packet) for m in messages],
                returning=True,
            )
            ids = [row[0] for _ in cursor.results() for row in cursor.fetchall()]
        return list(zip(ids, messages, strict=True))

    # -- whole phases, each one pipeline --------------------------------------------------------
    def facts(self, ask: FactsAsk) -> Facts:
        window = {
            "devices": list(ask.devices),
            "players": list(ask.players),
            "targets": list(ask.targets),
            "after": ask.after,
            "before": ask.before,
        }
        begin = self.raw.pgconn.transaction_status == TransactionStatus.IDLE
        if begin:
            # psycopg would send its own BEGIN and wait for it (a round trip of its own);
            # in autocommit mode it sends none, and ours goes with the reads. The
            # transaction is the server's either way: psycopg's (and so SQLAlchemy's) commit
            # and rollback go by the server's status. Connections of the sync engine leave
            # autocommit mode when they go back to the pool (plaza.db.make_sync_engine).
            self.raw.autocommit = True
        with self.raw.pipeline():
            if begin:
                self._run("BEGIN", {})
            logged = self._run(_SQL.logged, {"keys": list(ask.keys)}) if ask.keys else None
            devices = self._run(_SQL.devices, {"ids": list(ask.devices)})
            targets = self._run(_SQL.targets, {"ids": list(ask.targets)}) if ask.targets else None
            near = self._run(_SQL_FACTS_NEAR, window)
            held = (
                self._run(_SQL.held, {"players": list(ask.players), "now": ask.now})
                if ask.players
                else None
            )
        return Facts(
            [(k, t) for k, t in logged.fetchall()] if logged else [],
            _devices(devices),
            _slots(targets) if targets else [],
            _slots(near),
            [(p, int(n)) for p, n in held.fetchall()] if held else [],
        )

    def write_batch(
        self, writes: BatchWrites, *, commit: bool = False
    ) -> tuple[list[Stored], list[SlotRow]]:
        reservations, logs, messages, now, max_packet, board = writes
        outbox = board_rows = None
        with _as_sqlalchemy_error(_SQL.insert_outbox), self.raw.pipeline():
            cursor = self.raw.cursor()
            if reservations:
                cursor.executemany(_SQL.insert_reservation, reservations)
            if logs:
                cursor.executemany(_SQL.insert_log, logs)
            if messages:
                outbox = self.raw.cursor()
                outbox.executemany(
                    _SQL.insert_outbox,
                    [m.row(now, max_packet) for m in messages],
                    returning=True,
                )
            if board and board.devices:
                params = {"devices": list(board.devices), "after": board.now}
                board_rows = self._run(_SQL.board, {**params, "before": board.horizon})
            if commit:
                # a statement, not raw.commit(): that would sync the pipeline and the exit
                # sync it again, one more round trip; SQLAlchemy's commit then finds the
                # transaction closed (psycopg goes by the server's status) and sends nothing
                self._run("COMMIT", {})
        ids = [row[0] for _ in outbox.results() for row in outbox.fetchall()] if outbox else []
        return (
            list(zip(ids, messages, strict=True)),
            _slots(board_rows) if board_rows else [],
        )
