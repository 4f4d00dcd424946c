"""What the players in a waitlist line see of it, published in the transaction of a change.

The committer calls :func:`line_messages` in the transaction of a batch that changed a line
(a join, a leave, an offer, a take, a lapse, staff moving an entry), so what is published is
exactly what was committed, and through the outbox, so it is published after a crash too.
Every player with a live entry in a changed line gets their retained ``users/{user}/waitlist``
(:class:`~plaza.messages.WaitlistState`: all their live entries, in every line, read by
:func:`plaza.lines.read_lines`), and so does every player whose entry just left one (their
list shrinks); each changed line gets a :class:`~plaza.messages.WaitlistEvent` (no
identities) for staff screens. Lines are bounded (``PLAZA_WAITLIST_MAX_LENGTH``), so a change
costs at most that many messages.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection

from bridge.models import Outbound
from plaza.lines import read_lines
from plaza.messages import WaitlistEvent
from plaza.topics import Topics


def line_messages(
    conn: Connection,
    topics: Topics,
    kinds: Collection[str],
    players: Collection[str],
    now: datetime,
) -> list[Outbound]:
    """The retained waitlist states and the line events for a batch that changed ``kinds``
    (and the entries of ``players``)."""
    lines = read_lines(conn, now, kinds=kinds, players=players)
    affected = set(players) | {e.user for e in lines.entries if e.kind in kinds}
    messages = [
        Outbound(topics.waitlist(player), lines.state_of(player).encode(), retain=True)
        for player in sorted(affected)
    ]
    messages += [
        Outbound(
            topics.waitlist_events,
            WaitlistEvent(
                kind=kind, waiting=lines.waiting(kind), timestamp=now.timestamp()
            ).encode(),
        )
        for kind in sorted(kinds)
    ]
    return messages
