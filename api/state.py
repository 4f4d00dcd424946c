"""What every request needs (settings, engines, broker link, token service), kept on
``app.state.plaza`` by :func:`api.app.create_app`, and the dependencies that hand it out.

Two engines: request handlers read through ``reader`` (SQLite: deferred transactions, which
never take the write lock, so a handler waiting on the bridge never blocks the bridge's own
writes) and write only inside ``async with state.write() as session`` blocks, which hold no
network call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.link import BrokerLink
from api.metrics import ApiMetrics, LatencyWindow
from api.problems import ApiError
from api.security import Claims, LoginGuard, Passwords, RateLimiter, Tokens
from plaza.settings import Settings
from plaza.tables import RevokedSession, User
from plaza.topics import Topics


@dataclass
class AppState:
    settings: Settings
    topics: Topics
    engine: AsyncEngine
    reader: AsyncEngine
    link: BrokerLink
    tokens: Tokens
    passwords: Passwords
    logins: LoginGuard
    #: registrations per client address
    registrations: RateLimiter
    metrics: ApiMetrics
    #: POST /auth/mqtt per user
    credentials_budget: RateLimiter
    #: PUT /floor, for the whole venue (key ``floor``)
    floor_budget: RateLimiter
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    session_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    #: PUT /floor, one at a time from commit to announcement: two saves at once could
    #: interleave their delete and inserts, or announce in the other order than committed
    floor_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def session_lock(self, client: str) -> asyncio.Lock:
        """Serializes re-keying and expiring one browser session's broker account (keyed
        ``{user}~{session}``), or a user's making of new sessions (keyed by the user name,
        which has no ``~``)."""
        return self.session_locks.setdefault(client, asyncio.Lock())

    def write(self) -> AsyncSession:
        """A session for one short write transaction (``async with``; commit inside)."""
        return AsyncSession(self.engine, expire_on_commit=False)


def app_state(request: Request) -> AppState:
    state = request.app.state.plaza
    assert isinstance(state, AppState)
    return state


State = Annotated[AppState, Depends(app_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(state.reader, expire_on_commit=False) as session:
        yield session


Db = Annotated[AsyncSession, Depends(db_session)]
_bearer = HTTPBearer(auto_error=False, description="a JWT from POST /auth/login")


async def current_claims(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None:
        raise ApiError(
            401,
            "not_authenticated",
            "send an access token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return state.tokens.verify(credentials.credentials)


CurrentClaims = Annotated[Claims, Depends(current_claims)]


async def current_user(state: State, session: Db, claims: CurrentClaims) -> User:
    """The account of a valid token of a session that has not logged out."""
    revoked = claims.session is not None and (
        await session.get(RevokedSession, claims.session) is not None
    )
    if revoked:
        raise ApiError(
            401,
            "token_revoked",
            "this session has logged out; log in again",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    user = (await session.exec(select(User).where(User.username == claims.username))).first()
    await session.commit()  # end the read snapshot: what the handler reads next is current
    if user is None:
        raise ApiError(
            401,
            "token_invalid",
            "the account of this token no longer exists",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise ApiError(403, "forbidden", "this needs an admin account")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
