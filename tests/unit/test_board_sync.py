"""Which board entries the bridge publishes again after connecting (bridge.presence.board_sync).

An entry goes out again only when the broker's retained copy is missing or older than the
view the bridge had when it began reading the board back, and the view has not moved since
(a newer one is already on its way)."""

from __future__ import annotations

import pytest

from bridge.presence.board_sync import retained_version, to_republish


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


@pytest.mark.parametrize(
    ("payload", "version"),
    [
        (b'{"device_id":"a","version":4294967298,"ts":1}', 4294967298),
        (b"", None),  # a cleared (removed) machine's topic
        (b"{broken", None),
        (b'{"version":"7"}', None),
        (b'{"version":true}', None),
        (b"[1,2]", None),
        (b'{"version":-1}', None),
    ],
)
def test_retained_version(payload: bytes, version: int | None) -> None:
    assert retained_version(payload, limit=1024) == version


def test_a_retained_entry_past_the_payload_limit_is_not_read() -> None:
    big = b'{"version":3,"pad":"' + b"x" * 2000 + b'"}'
    assert retained_version(big, limit=1024) is None
    assert retained_version(big, limit=4096) == 3
