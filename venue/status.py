"""`plaza status`: one screen for staff, from a data dir (or a database URL alone).

What it shows, and where it reads it:

- each process (`plaza up` itself, mosquitto, bridge, api, simulator): up or down, for how
  long, how often it was restarted and how it last ended (``DIR/supervisor.json``, written by
  `plaza up` every second: :mod:`venue.runstate`);
- machines online of all (SQL);
- reservation commands decided in the last minute and their p99 (the bridge's ``/metrics``;
  without it, the command log's last minute, with no p99);
- unacknowledged alerts and dead-lettered outbox messages (SQL);
- the last backup and its age (``DIR/last-backup.json``, written by `plaza backup`);
- the schema revision beside this release's head, and the database's size.

Exit 0 when nothing needs attention; 1 with one ``attention:`` line per thing that does (a
process down, an unacknowledged alert, a dead letter, no backup within
``PLAZA_BACKUP_MAX_AGE``, a schema that is not this release's); 2 when the database cannot be
read at all. Machines offline are shown but are no cause by themselves: a machine switched
off at night is normal, and one that is reserved pages staff through an alert.

:func:`assess` and :func:`render` are pure functions of :class:`Facts`, tested as such.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from plaza import migrations
from plaza.db import is_sqlite, make_engine
from plaza.settings import Settings
from plaza.tables import Alert, CommandLog, Device, Outbox, table_of
from venue import runstate
from venue.backup import last_backup, sqlite_path

#: a supervisor that has not rewritten its file for this long is gone (it writes every 1 s)
STALE_AFTER = 10.0
_DEVICE, _ALERT, _OUTBOX, _LOG = (table_of(t) for t in (Device, Alert, Outbox, CommandLog))


@dataclass(frozen=True, slots=True)
class Facts:
    now: float
    head: str
    data_dir: Path | None = None
    supervisor: runstate.SupervisorState | None = None
    supervisor_alive: bool = False
    database: str = ""
    database_error: str | None = None
    machines_online: int = 0
    machines: int = 0
    #: commands decided in the last minute, and where the figure comes from
    commands_last_minute: float | None = None
    p99_seconds: float | None = None
    commands_from: str = "bridge metrics"
    unacknowledged_alerts: int = 0
    oldest_alert_at: float | None = None
    dead_letters: int = 0
    revision: str | None = None
    database_bytes: int | None = None
    last_backup: dict[str, object] | None = None
    backup_max_age: float = 26 * 3600
    notes: list[str] = field(default_factory=list)


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def supervisor_up(facts: Facts) -> bool:
    s = facts.supervisor
    return (
        s is not None
        and not s.stopped
        and facts.supervisor_alive
        and facts.now - s.updated_at <= STALE_AFTER
    )


def assess(facts: Facts) -> list[str]:
    """What needs attention, one line each (empty: all is well)."""
    out: list[str] = []
    s = facts.supervisor
    if s is not None:
        if not supervisor_up(facts):
            out.append("plaza up is not running: start the venue (`plaza up`)")
        else:
            out += [
                f"{p.name} is down ({p.last_exit or 'not started'}); plaza up restarts it"
                for p in s.processes
                if not p.up
            ]
    if facts.database_error is not None:
        out.append(f"the database cannot be read: {facts.database_error}")
        return out
    if facts.unacknowledged_alerts:
        out.append(
            f"{facts.unacknowledged_alerts} unacknowledged alerts: read and acknowledge them "
            "in the admin view"
        )
    if facts.dead_letters:
        out.append(
            f"{facts.dead_letters} dead-lettered messages: see the bridge log "
            "(docs/operations.md, 'Limits and abuse')"
        )
    if facts.revision != facts.head:
        out.append(
            f"schema revision {facts.revision} is not this release's ({facts.head}): "
            "see docs/operations.md, 'Upgrading'"
        )
    if facts.data_dir is not None:
        backup = facts.last_backup
        at = backup.get("at") if backup else None
        if not isinstance(at, int | float):
            out.append("no backup yet: run `plaza backup` (docs/operations.md, 'Backups')")
        elif facts.now - at > facts.backup_max_age:
            out.append(
                f"the last backup is {age(facts.now - at)} old (more than "
                f"{age(facts.backup_max_age)}): check the backup schedule"
            )
    return out


def render(facts: Facts, attention: list[str]) -> str:
    when = datetime.fromtimestamp(facts.now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    where = f"data dir {facts.data_dir}" if facts.data_dir else facts.database
    lines = [f"GamePlaza venue status  {when}  ({where})"]
    s = facts.supervisor
    if s is None:
        lines.append("processes     not known (no supervisor.json: not run by plaza up here)")
    elif not supervisor_up(facts):
        state = "stopped" if s.stopped else "gone"
        lines.append(f"plaza up      DOWN: {state}, last seen {age(facts.now - s.updated_at)} ago")
    else:
        lines.append(f"plaza up      up {age(facts.now - s.started_at)} (pid {s.pid})")
        for p in s.processes:
            state = f"up {age(facts.now - p.started_at)}" if p.up and p.started_at else "DOWN"
            last = f" (last: {p.last_exit})" if p.last_exit else ""
            lines.append(f"  {p.name:<11} {state:<12} restarts {p.restarts}{last}")
    if facts.database_error is not None:
        lines.append(f"database      UNREADABLE: {facts.database_error}")
    else:
        lines.append(f"machines      {facts.machines_online}/{facts.machines} online")
        if facts.commands_last_minute is None:
            lines.append("commands      not known (no bridge metrics, no command log)")
        else:
            p99 = facts.p99_seconds
            tail = ""
            if p99 is not None and not math.isnan(p99):
                tail = ", p99 > 5 s" if math.isinf(p99) else f", p99 <= {p99 * 1000:g} ms"
            lines.append(
                f"commands      {facts.commands_last_minute:.0f}/min{tail} "
                f"(last minute, {facts.commands_from})"
            )
        oldest = ""
        if facts.oldest_alert_at is not None:
            oldest = f" (oldest {age(facts.now - facts.oldest_alert_at)} ago)"
        lines.append(f"alerts        {facts.unacknowledged_alerts} unacknowledged{oldest}")
        lines.append(f"dead letters  {facts.dead_letters}")
        lines.append(f"schema        revision {facts.revision} (this release: {facts.head})")
        db_size = size(facts.database_bytes) if facts.database_bytes is not None else "?"
        dialect = "sqlite" if is_sqlite(facts.database) else "postgresql"
        lines.append(f"database      {dialect}, {db_size}")
    if facts.data_dir is not None:
        backup = facts.last_backup
        at = backup.get("at") if backup else None
        if backup and isinstance(at, int | float):
            bytes_ = backup.get("bytes")
            shown = size(bytes_) if isinstance(bytes_, int) else "?"
            lines.append(f"last backup   {age(facts.now - at)} ago ({backup.get('file')}, {shown})")
        else:
            lines.append("last backup   none")
    lines += [f"note: {n}" for n in facts.notes]
    lines += [f"attention: {a}" for a in attention]
    if not attention:
        lines.append("all well")
    return "\n".join(lines)


# -- reading ---------------------------------------------------------------------------------
_METRIC = re.compile(r"^(plaza_bridge_[a-z0-9_]+)\s+(\S+)$", re.MULTILINE)


def bridge_metrics(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - our own URL
            text = reply.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return {name: float(value) for name, value in _METRIC.findall(text)}


async def _read_sql(url: str) -> dict[str, object]:
    engine = make_engine(url, reader=True)
    now = datetime.now(UTC)
    try:
        async with asyncio.timeout(10), engine.connect() as conn:
            machines, online = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.coalesce(sa.func.sum(sa.case((_DEVICE.c.online, 1), else_=0)), 0),
                    )
                )
            ).one()
            alerts, oldest = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(_ALERT.c.created_at)).where(
                        _ALERT.c.acknowledged_at.is_(None)
                    )
                )
            ).one()
            dead = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(_OUTBOX)
                .where(_OUTBOX.c.dead_at.is_not(None))
            )
            logged = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(_LOG)
                .where(_LOG.c.created_at >= now - timedelta(minutes=1))
            )
            revision = await conn.run_sync(migrations.current)
            if conn.dialect.name == "postgresql":
                db_bytes = await conn.scalar(sa.text("SELECT pg_database_size(current_database())"))
            else:
                path = sqlite_path(url)
                db_bytes = sum(
                    p.stat().st_size
                    for p in (path, path.with_name(path.name + "-wal"))
                    if p.exists()
                )
    finally:
        await engine.dispose()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return {
        "machines": int(machines),
        "machines_online": int(online),
        "unacknowledged_alerts": int(alerts),
        "oldest_alert_at": oldest.timestamp() if oldest is not None else None,
        "dead_letters": int(dead or 0),
        "logged": int(logged or 0),
        "revision": revision,
        "database_bytes": int(db_bytes or 0),
    }


def gather(data_dir: Path | None, database_url: str, settings: Settings) -> Facts:
    supervisor = runstate.read(data_dir) if data_dir is not None else None
    # the URL given, else PLAZA_DATABASE_URL, else what plaza up recorded, else DIR/plaza.db
    recorded = supervisor.database_url if supervisor else ""
    url = database_url or settings.database_url or recorded
    if not url:
        url = Settings(data_dir=data_dir).db_url if data_dir is not None else settings.db_url
    facts: dict[str, object] = {
        "now": time.time(),
        "head": migrations.head(),
        "data_dir": data_dir.resolve() if data_dir is not None else None,
        "supervisor": supervisor,
        "supervisor_alive": supervisor is not None and runstate.alive(supervisor.pid),
        "database": url,
        "last_backup": last_backup(data_dir) if data_dir is not None else None,
        "backup_max_age": settings.backup_max_age,
    }
    try:
        if is_sqlite(url) and not sqlite_path(url).exists():  # connecting would create it
            raise FileNotFoundError(f"no database at {sqlite_path(url)}")
        sql = asyncio.run(_read_sql(url))
    except (sa.exc.SQLAlchemyError, OSError, TimeoutError) as exc:
        facts["database_error"] = str(exc).splitlines()[0][:300]
        return Facts(**facts)  # type: ignore[arg-type]
    logged = sql.pop("logged")
    facts.update(sql)
    port = (supervisor.ports.get("metrics") if supervisor else None) or settings.bridge_metrics_port
    metrics = bridge_metrics(f"http://127.0.0.1:{port}/metrics") if port else None
    if metrics is not None and "plaza_bridge_commands_last_minute" in metrics:
        facts["commands_last_minute"] = metrics["plaza_bridge_commands_last_minute"]
        facts["p99_seconds"] = metrics.get("plaza_bridge_command_seconds_p99_last_minute")
    else:
        facts["commands_last_minute"] = float(logged)  # type: ignore[arg-type]
        facts["commands_from"] = "command log"
    return Facts(**facts)  # type: ignore[arg-type]


def run(args: argparse.Namespace, settings: Settings) -> int:
    target: str | None = args.target
    data_dir: Path | None = None
    url = args.database_url or ""
    if target and "://" in target:
        url = target
    else:
        data_dir = Path(target or args.data_dir)
    facts = gather(data_dir, url, settings)
    attention = assess(facts)
    print(render(facts, attention))
    if facts.database_error is not None:
        return 2
    return 1 if attention else 0
