"""Which board entries the bridge publishes again after connecting (bridge.presence.board_sync).

An entry goes out again only when the broker's retained copy is missing or older than the
view the bridge had when it began reading the board back, and the view has not moved since
(a newer one is already on its way)."""

from __future__ import annotations

import pytest

from bridge.presence.board_sync import entry_body, to_republish


@pytest.mark.parametrize(
    ("expected", "held", "current", "again"),
    [
        # the broker holds every entry at the bridge's version: nothing again
        ({"a": 5, "b": 7}, {"a": 5, "b": 7}, {"a": 5, "b": 7}, []),
        # missing (a crashed broker had not saved it) or older (a publish lost with the
        # connection): again
        ({"a": 5, "b": 7}, {"a": 5}, {"a": 5, "b": 7}, ["b"]),
        ({"a": 5, "b": 7}, {"a": 4, "b": 7}, {"a": 5, "b": 7}, ["a"]),
        # the broker's is newer (the bridge's SQL was behind its last publish when it was
        # killed): the broker's stands
        ({"a": 5}, {"a": 6}, {"a": 5}, []),
        # the view moved while reading: its new entry is already published
        ({"a": 5}, {}, {"a": 6}, []),
        # the machine was removed meanwhile: nothing
        ({"a": 5}, {}, {}, []),
        # nothing expected (no machine has a board yet)
        ({}, {"a": 1}, {"a": 1}, []),
    ],
)
def test_to_republish(
    expected: dict[str, int], held: dict[str, int], current: dict[str, int], again: list[str]
) -> None:
    assert to_republish(expected, held, current) == again


def test_an_entry_at_the_same_version_but_of_an_older_content_goes_out_again() -> None:
    """An upgrade that adds a field to the board (pos, managed, locked did) leaves every
    unchanged machine's retained entry without it at the same version."""
    assert to_republish({"a": 5, "b": 7}, {"a": 5, "b": 7}, {"a": 5, "b": 7}, ["b"]) == ["b"]
    # ...unless the view moved meanwhile (its new entry is on its way)
    assert to_republish({"a": 5}, {"a": 5}, {"a": 6}, ["a"]) == []


@pytest.mark.parametrize(
    ("payload", "body"),
    [
        (
            b'{"device_id":"a","version":4294967298,"ts":1}',
            {"device_id": "a", "version": 4294967298},  # without ts: every publish renews it
        ),
        (b"", None),  # a cleared (removed) machine's topic
        (b"{broken", None),
        (b'{"version":"7"}', None),
        (b'{"version":true}', None),
        (b"[1,2]", None),
        (b'{"version":-1}', None),
        (b'{"ts":3}', None),
    ],
)
def test_entry_body(payload: bytes, body: dict[str, object] | None) -> None:
    assert entry_body(payload, limit=1024) == body


def test_a_retained_entry_past_the_payload_limit_is_not_read() -> None:
    big = b'{"version":3,"pad":"' + b"x" * 2000 + b'"}'
    assert entry_body(big, limit=1024) is None
    assert entry_body(big, limit=4096) == {"version": 3, "pad": "x" * 2000}
