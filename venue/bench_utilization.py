"""`plaza bench utilization`: how long ``GET /admin/utilization`` takes to compute a month.

Set-up: a fresh database (SQLite in a temp dir, and a PostgreSQL database on the
``PLAZA_BENCH_PG`` server), the demo fleet of ``--machines`` (default 300) seeded as
``plaza up`` seeds it, with ``--days`` (default 31) of history from venue.floorplan (about
7 sessions per machine and day: two status changes each, and a quarter of them booked).
Then the report the endpoint computes (plaza.history.read: the reads and plaza.utilization)
for the whole month, ``--trials`` times; the median and the slowest are reported. The target
is under 1 s on both databases (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from plaza import history
from plaza.db import make_engine
from plaza.tables import DeviceStatusChange, Reservation
from venue.accounts import VenueSecrets, demo_fleet
from venue.benchkit import drop_pg_database, fresh_pg_database, pg_url, write_report
from venue.seed import seed

TZ = ZoneInfo("Asia/Seoul")


async def _measure(url: str, machines: int, days: int, trials: int) -> dict[str, float]:
    engine = make_engine(url)
    try:
        began = time.perf_counter()
        await seed(engine, demo_fleet(machines), VenueSecrets(), history_days=days, tz=TZ)
        seeded = time.perf_counter() - began
        end = datetime.now(UTC)
        start = end - timedelta(days=days)
        times, cpu = [], []
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(DeviceStatusChange))).one()
            bookings = (await conn.execute(select(func.count()).select_from(Reservation))).one()
            for _ in range(trials):
                began, began_cpu = time.perf_counter(), time.process_time()
                figures = await history.read(conn, start=start, end=end, zone=None, tz=TZ)
                times.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
                await conn.rollback()
        return {
            "median": statistics.median(times),
            "cpu": statistics.median(cpu),
            "max": max(times),
            "changes": float(rows[0]),
            "reservations": float(bookings[0]),
            "sessions": float(figures.sessions),
            "seed": seeded,
        }
    finally:
        await engine.dispose()


async def _bench(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if not args.postgresql_only:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'plaza.db'}"
            out["SQLite"] = await _measure(url, args.machines, args.days, args.trials)
    if not args.sqlite_only:
        name = await fresh_pg_database("plaza_bench_util")
        try:
            out["PostgreSQL"] = await _measure(pg_url(name), args.machines, args.days, args.trials)
        finally:
            await drop_pg_database(name)
    return out


def run_utilization_bench(args: argparse.Namespace) -> int:
    results = asyncio.run(_bench(args))
    load = os.getloadavg()[0]
    lines = [
        "## Utilization report (`plaza bench utilization`)",
        "",
        f"`plaza bench utilization --machines {args.machines} --days {args.days} "
        f"--trials {args.trials}`, {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end. "
        "One report of the whole window (every zone), as `GET /admin/utilization` computes "
        "it: the reads (plaza.history) and the figures (plaza.utilization). Target: under 1 s.",
        "",
        "The machine is shared (see the load average): `cpu` is this process's CPU time for one "
        "report (all its threads: SQLite runs in the process, PostgreSQL's server time is not in "
        "it), a figure that load does not inflate the way it does the wall time.",
        "",
        "| database | status changes | reservations | sessions | median | slowest | cpu (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for db, r in results.items():
        lines.append(
            f"| {db} | {r['changes']:.0f} | {r['reservations']:.0f} | {r['sessions']:.0f} "
            f"| {r['median'] * 1000:.0f} ms | {r['max'] * 1000:.0f} ms | {r['cpu'] * 1000:.0f} ms |"
        )
        print(
            f"{db}: {r['changes']:.0f} changes, {r['reservations']:.0f} reservations: "
            f"median {r['median'] * 1000:.0f} ms, slowest {r['max'] * 1000:.0f} ms, "
            f"cpu {r['cpu'] * 1000:.0f} ms "
            f"(seeded in {r['seed']:.1f} s)"
        )
    print(f"load average {load:.1f}")
    if args.output:
        write_report(Path(args.output), "\n".join(lines) + "\n")
    slow = [db for db, r in results.items() if r["median"] >= 1.0]
    return 1 if slow else 0
