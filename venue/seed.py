"""Demo seeding for development: machines and accounts in SQL, written once and kept."""

from __future__ import annotations

from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import migrate
from plaza.tables import Device, User
from venue.accounts import DeviceSpec, VenueSecrets


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


async def seed(engine: AsyncEngine, fleet: list[DeviceSpec], secrets: VenueSecrets) -> None:
    """Insert missing machines, the demo admin and the demo players; change nothing else."""
    await migrate(engine)
    hasher = PasswordHash.recommended()
    async with AsyncSession(engine, expire_on_commit=False) as session:
        known = set((await session.exec(select(Device.id))).all())
        for spec in fleet:
            if spec.id not in known:
                session.add(
                    Device(
                        id=spec.id, name=spec.name, kind=spec.kind, zone=spec.zone, agent=spec.agent
                    )
                )
        users = set((await session.exec(select(User.username))).all())
        accounts = [
            ("admin", secrets.admin, "admin"),
            *((u, p, "player") for u, p in secrets.players.items()),
        ]
        for username, password, role in accounts:
            if username not in users:
                session.add(User(username=username, password_hash=hasher.hash(password), role=role))
        await session.commit()
