"""What the players in a waitlist line see of it: their entries, places and expected turns.

The committer calls :func:`line_messages` in the transaction of a batch that changed a line
(a join, a leave, an offer, a take, a lapse, staff moving an entry), so what is published is
exactly what was committed, and through the outbox, so it is published after a crash too.
Every player with a live entry in a changed line gets their retained ``users/{user}/waitlist``
(:class:`~plaza.messages.WaitlistState`: all their live entries, in every line), and so does
every player whose entry just left one (their list shrinks); each changed line gets a
:class:`~plaza.messages.WaitlistEvent` (no identities) for staff screens. Lines are bounded
(``PLAZA_WAITLIST_MAX_LENGTH``), so a change costs at most that many messages.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Connection

from bridge.models import Outbound
from bridge.reservations.slots import entry_of, entry_public, offer_of, slot_of
from bridge.sql import batch_sql
from plaza import rules
from plaza.messages import WaitlistEvent, WaitlistState
from plaza.topics import Topics
from plaza.waitlist import expected_turns, positions

#: a reservation "under way" on a machine is one that covers this instant
_INSTANT = timedelta(microseconds=1)


def line_states(
    conn: Connection, kinds: Collection[str], players: Collection[str], now: datetime
) -> tuple[dict[str, WaitlistState], dict[str, int]]:
    """Each affected player's waitlist state, and each line's count of waiting entries."""
    sql = batch_sql(conn)
    entries = [entry_of(r) for r in sql.live_entries(kinds, players)]
    more = {e.kind for e in entries} - set(kinds)
    if more:  # an affected player's other lines, for their places there
        known = {e.id for e in entries}
        entries += [entry_of(r) for r in sql.live_entries(more, ()) if r.id not in known]
    all_kinds = {e.kind for e in entries} | set(kinds)
    machines = [d for d in sql.kind_devices(all_kinds) if not d.maintenance]
    busy = sql.near([d.id for d in machines], (), now, now + _INSTANT)
    free_at: dict[str, list[datetime]] = {}
    for device in machines:
        ends = [r.ends_at for r in busy if r.device_id == device.id]
        free_at.setdefault(device.kind, []).append(max(ends, default=now))
    offers = {e.offer_id for e in entries if e.offer_id}
    holds = {r.id: slot_of(r) for r in sql.targets(offers)} if offers else {}
    places = positions(entries)
    turns = expected_turns(entries, free_at, now)
    affected = set(players) | {e.user for e in entries if e.kind in kinds}
    states = {}
    for player in sorted(affected):
        mine = sorted(
            (e for e in entries if e.user == player), key=lambda e: (e.kind, e.rank, e.id)
        )
        shown = []
        for entry in mine:
            hold = holds.get(entry.offer_id) if entry.offer_id else None
            offer = offer_of(hold) if hold and hold.status is rules.Status.HELD else None
            turn = turns.get(entry.id)
            shown.append(
                entry_public(entry, places.get(entry.id), offer, turn.timestamp() if turn else None)
            )
        states[player] = WaitlistState(entries=shown, ts=now.timestamp())
    waiting = {
        kind: sum(1 for e in entries if e.kind == kind and e.status is rules.EntryStatus.WAITING)
        for kind in kinds
    }
    return states, waiting


def line_messages(
    conn: Connection,
    topics: Topics,
    kinds: Collection[str],
    players: Collection[str],
    now: datetime,
) -> list[Outbound]:
    """The retained waitlist states and the line events for a batch that changed ``kinds``
    (and the entries of ``players``)."""
    states, waiting = line_states(conn, kinds, players, now)
    messages = [
        Outbound(topics.waitlist(player), state.encode(), retain=True)
        for player, state in states.items()
    ]
    messages += [
        Outbound(
            topics.waitlist_events,
            WaitlistEvent(kind=kind, waiting=count, timestamp=now.timestamp()).encode(),
        )
        for kind, count in sorted(waiting.items())
    ]
    return messages
