# ruff: noqa: S608  (SQL text built from constants at import; see below)
"""The batched path's SQL as fixed text, for the implementations that run it on the driver's
own connection (:mod:`bridge.sql.sqlite`, :mod:`bridge.sql.postgres`): the same statements,
written once, with each driver's way of naming a parameter and of testing membership in a
list passed as one parameter (so a statement's text never changes with the list's length).

The text is assembled once, at import, from constants and the Core tables' names; values
always go in as parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError

from bridge.sql.rows import DeviceRow, SlotRow
from plaza import rules
from plaza.tables import CommandLog, Device, Outbox, Reservation, table_of

RES, LOG, DEV, OUTBOX = (
    table_of(Reservation),
    table_of(CommandLog),
    table_of(Device),
    table_of(Outbox),
)


def columns(table: Table, names: Iterable[str] | None = None) -> tuple[str, ...]:
    """Column names of ``table`` (those in ``names``, in that order; else every column that is
    not a generated key), as the Core table defines them."""
    if names is not None:
        return tuple(table.c[name].name for name in names)
    return tuple(c.name for c in table.columns if c is not table.autoincrement_column)


@dataclass(frozen=True)
class Statements:
    logged: str
    devices: str
    targets: str
    board: str
    near: str
    check_in: str
    held: str
    insert_reservation: str
    insert_log: str
    insert_outbox: str


def statements(
    param: Callable[[str], str], member: Callable[[str, str], str], returning: str = ""
) -> Statements:
    """The statements, with ``param(name)`` for a parameter and ``member(column, name)`` for
    "``column`` is one of the list ``name``"; ``returning`` ends the outbox insert."""
    # written as `status || ''` for the same reason as plaza.tables.is_active
    live = "status || '' IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(rules.ACTIVE)))
    slots = f"SELECT {', '.join(columns(RES, SlotRow._fields))} FROM {RES.name}"
    window = f"ends_at > {param('after')} AND starts_at < {param('before')}"
    board = f"{slots} WHERE {member('device_id', 'devices')} AND {live} AND {window}"

    def insert(table: Table, tail: str = "") -> str:
        names = columns(table)
        values = ", ".join(param(c) for c in names)
        return f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({values}){tail}"

    return Statements(
        logged=f"SELECT request_key, reply_json FROM {LOG.name}"
        f" WHERE {member('request_key', 'keys')}",
        devices=f"SELECT {', '.join(columns(DEV, DeviceRow._fields))} FROM {DEV.name}"
        f" WHERE {member('id', 'ids')}",
        targets=f"{slots} WHERE {member('id', 'ids')}",
        board=board,
        near=f"{board} UNION {slots} WHERE {member('player', 'players')} AND {live} AND {window}",
        check_in=f"{slots} WHERE device_id = {param('device')}"
        f" AND status || '' = '{rules.Status.APPROVED.value}'"
        f" AND starts_at <= {param('early')} AND ends_at > {param('now')} ORDER BY starts_at",
        held=f"SELECT player, count(DISTINCT coalesce(party_id, id)) FROM {RES.name}"
        f" WHERE {member('player', 'players')} AND {live} AND ends_at > {param('now')}"
        " GROUP BY player",
        insert_reservation=insert(RES),
        insert_log=insert(LOG),
        insert_outbox=insert(OUTBOX, returning),
    )


@contextmanager
def as_sqlalchemy_error(statement: str, driver_error: type[Exception]) -> Iterator[None]:
    """A broken constraint (the driver's ``driver_error``) raises what it raises through
    SQLAlchemy, so the committer's handling (the careful path for the loser of a race) is
    the same either way."""
    try:
        yield
    except driver_error as exc:
        raise IntegrityError(statement, None, exc) from exc
