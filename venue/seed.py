"""Demo seeding for development: machines and accounts in SQL, written once and kept."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, tzinfo

import sqlalchemy as sa
from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import migrate
from plaza.tables import Device, DeviceStatusChange, FloorZone, Reservation, User, table_of
from venue.accounts import DeviceSpec, VenueSecrets
from venue.floorplan import demo_history, demo_layout


async def create_admin(db_url: str, username: str, password: str) -> bool:
    """Create admin ``username`` or, if the account exists, make it an admin with this
    password. Returns True when it was created."""
    from plaza.db import make_engine
    from plaza.topics import valid_id

    valid_id(username, "user name")
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with AsyncSession(engine, expire_on_commit=False) as session:
            user = (await session.exec(select(User).where(User.username == username))).first()
            created = user is None
            if user is None:
                user = User(username=username, password_hash="", role="admin")
            user.password_hash = PasswordHash.recommended().hash(password)
            user.role = "admin"
            session.add(user)
            await session.commit()
            return created
    finally:
        await engine.dispose()


async def seed(
    engine: AsyncEngine,
    fleet: list[DeviceSpec],
    secrets: VenueSecrets,
    *,
    floor_plan: bool = False,
    history_days: int = 0,
    tz: tzinfo = UTC,
) -> None:
    """Insert missing machines, the demo admin, the demo players and the simulator's players;
    change nothing else.
    ``floor_plan``: the demo floor too (its zones when there are none, a place for each new
    machine); ``history_days``: that much past play (venue.floorplan) on a database that has
    no status history yet (``plaza up`` asks for both)."""
    await migrate(engine)
    hasher = PasswordHash.recommended()
    layout = demo_layout(fleet) if floor_plan else None
    async with AsyncSession(engine, expire_on_commit=False) as session:
        known = set((await session.exec(select(Device.id))).all())
        for spec in fleet:
            if spec.id not in known:
                x, y = layout.places[spec.id] if layout else (None, None)
                session.add(
                    Device(
                        id=spec.id,
                        name=spec.name,
                        kind=spec.kind,
                        zone=spec.zone,
                        agent=spec.agent,
                        x=x,
                        y=y,
                    )
                )
        if layout and (await session.exec(select(FloorZone.id))).first() is None:
            for zone in layout.zones:
                outline = json.dumps([list(p) for p in zone.outline])
                session.add(FloorZone(id=zone.id, name=zone.name, outline_json=outline))
        users = set((await session.exec(select(User.username))).all())
        accounts = [
            ("admin", secrets.admin, "admin"),
            *((u, p, "player") for u, p in secrets.people().items()),
        ]
        for username, password, role in accounts:
            if username not in users:
                session.add(User(username=username, password_hash=hasher.hash(password), role=role))
        await session.commit()
        if history_days and (await session.exec(select(DeviceStatusChange.id))).first() is None:
            await _history(session, fleet, history_days, tz)


async def _history(session: AsyncSession, fleet: list[DeviceSpec], days: int, tz: tzinfo) -> None:
    changes, bookings = demo_history(fleet, datetime.now(UTC), tz, days=days)
    conn = await session.connection()
    if changes:
        await conn.execute(
            sa.insert(table_of(DeviceStatusChange)),
            [
                {
                    "device_id": c.device_id,
                    "status": c.status,
                    "online": c.status != "offline",
                    "state": "in_use" if c.status == "in_use" else "idle",
                    "epoch": -1,
                    "at": c.at,
                }
                for c in changes
            ],
        )
    if bookings:
        await conn.execute(
            sa.insert(table_of(Reservation)),
            [
                {
                    "id": (rid := uuid.uuid4().hex),
                    "device_id": b.device_id,
                    "player": b.player,
                    "starts_at": b.starts_at,
                    "ends_at": b.ends_at,
                    "status": b.status,
                    "code": f"{uuid.uuid4().int % 10**6:06d}",
                    # made by no player's command: system, as the clock's own (plaza check)
                    "request_key": f"system:seed-{rid}",
                    "created_at": b.starts_at - timedelta(hours=1),
                    "updated_at": b.ends_at,
                }
                for b in bookings
            ],
        )
    await session.commit()
