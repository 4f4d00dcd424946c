"""Per-player notification seqs from the counter row (SQLite in memory; PostgreSQL takes the
same upsert and row-locks it)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from bridge.notifier import reserve_seqs

pytestmark = pytest.mark.unit


def test_seqs_are_taken_in_blocks_and_never_handed_out_twice() -> None:
    engine = sa.create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        assert reserve_seqs(conn, {"a": 2, "b": 1}) == {"a": 0, "b": 0}
        assert reserve_seqs(conn, {"a": 3}) == {"a": 2}
        assert reserve_seqs(conn, {"b": 1, "a": 1}) == {"a": 5, "b": 1}
