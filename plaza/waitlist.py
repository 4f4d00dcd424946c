"""The waitlist's arithmetic (pure): places in line and the expected wait.

A line is the live entries (waiting or offered) of one machine kind, in ``rank`` order (the
order they joined, unless staff moved one). An entry's *position* counts from 1 within its
kind's line, whatever zone it asked for. Its *expected* turn is an estimate from the machines
of the kind: each is free at the end of the reservation under way on it (now, if none); the
p-th in line gets the p-th machine to free up, the next round of the line the same machines
one entry's length later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from plaza.rules import LIVE_ENTRIES, Entry


def in_order(entries: Iterable[Entry]) -> list[Entry]:
    """The live entries, each line in order (rank, then id: two equal ranks stay stable)."""
    live = [e for e in entries if e.status in LIVE_ENTRIES]
    return sorted(live, key=lambda e: (e.kind, e.rank, e.id))


def positions(entries: Iterable[Entry]) -> dict[str, int]:
    """Each live entry's place (1: the head) in its kind's line."""
    places: dict[str, int] = {}
    seen: dict[str, int] = {}
    for entry in in_order(entries):
        seen[entry.kind] = seen.get(entry.kind, 0) + 1
        places[entry.id] = seen[entry.kind]
    return places


def expected_turns(
    entries: Iterable[Entry], free_at: Mapping[str, Sequence[datetime]], now: datetime
) -> dict[str, datetime | None]:
    """When each live entry may expect its turn; ``free_at[kind]``: when each machine of the
    kind is free (None: the kind has no machine in service)."""
    turns: dict[str, datetime | None] = {}
    places = positions(entries)
    for entry in in_order(entries):
        machines = sorted(max(now, t) for t in free_at.get(entry.kind, ()))
        if not machines:
            turns[entry.id] = None
            continue
        rounds, index = divmod(places[entry.id] - 1, len(machines))
        turns[entry.id] = machines[index] + rounds * timedelta(minutes=entry.minutes)
    return turns
