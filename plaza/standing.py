"""Players' no-show standing, read from SQL: a suspension, and the strikes that count.

A strike is a reservation of the player that ended ``no_show``, recorded within the window
(``PLAZA_NO_SHOW_WINDOW``) and after the player's strikes were last reset (``strikes_since``:
when a suspension started, or staff lifted one). The bridge reads it inside its transaction to
decide a no-show (:mod:`bridge.sql.booking`); the api reads it for ``GET /me`` and the users
list. Only the bridge writes ``player_standing``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from plaza import rules
from plaza.tables import PlayerStanding, Reservation, as_utc, is_active, table_of

_RES, _STANDING = table_of(Reservation), table_of(PlayerStanding)

_SUSPENSIONS = sa.select(_STANDING.c.player, _STANDING.c.suspended_until).where(
    _STANDING.c.player.in_(sa.bindparam("players", expanding=True))
)
_STRIKES = (
    sa.select(_RES.c.player, sa.func.count())
    .select_from(_RES.outerjoin(_STANDING, _STANDING.c.player == _RES.c.player))
    .where(
        _RES.c.player.in_(sa.bindparam("players", expanding=True)),
        is_active(_RES.c.status, [rules.Status.NO_SHOW]),
        _RES.c.updated_at >= sa.bindparam("window_start"),
        sa.or_(_STANDING.c.strikes_since.is_(None), _RES.c.updated_at > _STANDING.c.strikes_since),
    )
    .group_by(_RES.c.player)
)


@dataclass(frozen=True, slots=True)
class Standing:
    player: str
    #: self-service booking is suspended until then (None: not suspended, or it was lifted)
    suspended_until: datetime | None
    strikes: int

    def suspended(self, now: datetime) -> bool:
        return self.suspended_until is not None and self.suspended_until > now


def standings(conn: Connection, players: Collection[str], window_start: datetime) -> list[Standing]:
    """The players with a standing row or strikes (others have neither), by name."""
    if not players:
        return []
    params = {"players": sorted(players)}
    until = {p: as_utc(u) if u else None for p, u in conn.execute(_SUSPENSIONS, params)}
    strikes: dict[str, int] = {
        p: int(n) for p, n in conn.execute(_STRIKES, {**params, "window_start": window_start})
    }
    return [Standing(p, until.get(p), strikes.get(p, 0)) for p in sorted(set(until) | set(strikes))]
