"""Accounts: register, log in, refresh, me, broker credentials for the browser, and (admin)
the user list and account removal."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api import commands
from api.problems import ApiError, responses, too_many
from api.schemas import (
    BROWSER_ID_PREFIX,
    LoginIn,
    LogoutIn,
    MeUpdate,
    MqttCredentials,
    MqttSessionIn,
    RegisterIn,
    TokenOut,
    UserPublic,
)
from api.security import DEVICE_COOKIE, Claims
from api.state import AdminUser, CurrentClaims, CurrentUser, Db, State
from plaza import acl
from plaza.dynsec import SESSION_SEPARATOR
from plaza.messages import OnBehalfOf, VenueRequest
from plaza.standing import Standing, standings
from plaza.tables import BrokerSession, CoolOff, Device, RevokedSession, User

log = logging.getLogger(__name__)
router = APIRouter(tags=["accounts"])
AUTH_ERRORS = responses(401)


def public(user: User) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


def token_for(state: State, user: User, session: Claims | None = None) -> TokenOut:
    """A token of a new login session, or (a refresh) of ``session``."""
    token, expires = state.tokens.issue(
        user.username,
        user.role,
        session=session.session if session else None,
        auth_time=session.auth_time if session else None,
    )
    return TokenOut(
        access_token=token, expires_in=state.tokens.ttl, expires_at=expires, user=public(user)
    )


def session_client_id(username: str, key: str) -> str:
    """The client id a browser session's account is bound to. Machine ids may not start with
    ``web-`` (nor services' ``plaza-``), and a key has no ``-``, so no other account's id is
    ever one of these."""
    return f"{BROWSER_ID_PREFIX}{username}-{key}"


def role_of(state: State, user: User) -> acl.Role:
    if user.role == "admin":
        return acl.staff_role(state.topics, user.username)
    return acl.player_role(state.topics, user.username)


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    responses=responses(409, 422, 429),
    summary="Register a player account",
)
async def register(body: RegisterIn, request: Request, state: State) -> UserPublic:
    client = request.client.host if request.client else "unknown"
    wait = state.registrations.take(client)
    if wait > 0:
        raise too_many("login_rate_limited", "too many attempts from this address", wait)
    reserved = {"api", "bridge", "observer", "system"}
    if body.username in reserved or body.username.startswith(acl.SIM_PLAYER_PREFIX):
        raise ApiError(409, "username_taken", f"{body.username!r} is reserved")
    async with state.write() as session:  # a machine's id is its broker name: not a person's
        if await session.get(Device, body.username) is not None:
            raise ApiError(409, "username_taken", f"{body.username!r} is a machine's name")
    user = User(
        username=body.username,
        password_hash=await state.passwords.hash(body.password),
        role="player",
        locale=body.locale,
    )
    async with state.write() as session:
        session.add(user)
        try:
            await session.commit()
        except IntegrityError as exc:
            raise ApiError(409, "username_taken", f"{body.username!r} is taken") from exc
    return public(user)


@router.post("/auth/login", responses=responses(401, 422, 429), summary="Log in; get a JWT")
async def login(
    body: LoginIn, request: Request, response: Response, state: State, session: Db
) -> TokenOut:
    """Sets a device cookie (``plaza_device``): failed logins from a device that logged in
    to this account before count against that device only, so nobody else can lock its
    owner out (see api/security.py ``LoginGuard``)."""
    address = request.client.host if request.client else "unknown"
    device = state.tokens.device_of(request.cookies.get(DEVICE_COOKIE), body.username)
    wait = state.logins.admit(body.username, address, device)
    if wait > 0:  # refused before the password is looked at: no oracle
        state.metrics.logins.labels("rate_limited").inc()
        raise too_many("login_rate_limited", "too many failed logins", wait)
    user = (await session.exec(select(User).where(User.username == body.username))).first()
    if not await state.passwords.verify(body.password, user.password_hash if user else None):
        state.metrics.logins.labels("invalid_credentials").inc()
        raise ApiError(401, "invalid_credentials", "unknown user or wrong password")
    assert user is not None
    state.logins.succeeded(body.username, address, device)
    state.metrics.logins.labels("ok").inc()
    ttl = state.settings.device_cookie_ttl
    response.set_cookie(
        DEVICE_COOKIE,
        state.tokens.issue_device(user.username, ttl),
        max_age=ttl,
        path="/auth",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return token_for(state, user)


@router.post("/auth/refresh", responses=AUTH_ERRORS, summary="Trade a valid token for a new one")
async def refresh(user: CurrentUser, claims: CurrentClaims, state: State) -> TokenOut:
    """A token of the same login session; none once the session is
    ``PLAZA_SESSION_MAX_AGE`` old (401 ``session_expired``: log in again)."""
    if state.tokens.session_ended(claims):
        raise ApiError(
            401,
            "session_expired",
            "this login session has reached its maximum age; log in again",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return token_for(state, user, claims)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=AUTH_ERRORS,
    summary="End this login session (and, given its key, this browser's broker session)",
)
async def logout(
    user: CurrentUser, claims: CurrentClaims, state: State, body: LogoutIn | None = None
) -> Response:
    """Every token of this session is refused from now on (401 ``token_revoked``), also
    the ones refreshed from it. With ``session``, that browser session's broker account is
    deleted too (its connection drops)."""
    if claims.session is not None:
        until = datetime.fromtimestamp(claims.auth_time + state.settings.session_max_age, UTC)
        async with state.write() as session:
            if await session.get(RevokedSession, claims.session) is None:
                session.add(RevokedSession(sid=claims.session, until=until))
                with contextlib.suppress(IntegrityError):  # logged out twice at once
                    await session.commit()
    if body is not None and body.session is not None:
        client = f"{user.username}{SESSION_SEPARATOR}{body.session}"
        async with state.session_lock(user.username), state.session_lock(client):
            await commands.revoke_accounts(state, [client], None)
            async with state.write() as session:
                await session.exec(delete(BrokerSession).where(col(BrokerSession.client) == client))
                await session.commit()
        state.session_locks.pop(client, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def prune_revoked(state: State) -> int:
    """Forget logged-out sessions that would have ended by now anyway."""
    async with state.write() as session:
        result = await session.exec(
            delete(RevokedSession).where(col(RevokedSession.until) < datetime.now(UTC))
        )
        await session.commit()
    return int(result.rowcount or 0)


async def standing_of(state: State, session: AsyncSession, names: list[str]) -> dict[str, Standing]:
    """The no-show standing of accounts (those with none are absent)."""
    window_start = datetime.now(UTC) - timedelta(seconds=state.settings.no_show_window)
    conn = await session.connection()
    found = await conn.run_sync(lambda c: standings(c, names, window_start))
    return {s.player: s for s in found}


def with_standing(user: User, standing: Standing | None) -> UserPublic:
    """The account with its no-show strikes and, if it is suspended now, until when."""
    shown = public(user)
    shown.strikes = standing.strikes if standing else 0
    if standing is not None and standing.suspended(datetime.now(UTC)):
        shown.suspended_until = standing.suspended_until
    return shown


@router.get("/me", responses=AUTH_ERRORS, summary="The account of the token")
async def me(user: CurrentUser, state: State, session: Db) -> UserPublic:
    """With the no-show policy's ``strikes`` and, while suspended, ``suspended_until``."""
    found = await standing_of(state, session, [user.username])
    return with_standing(user, found.get(user.username))


@router.patch("/me", responses=responses(401, 422), summary="Change my language")
async def update_me(body: MeUpdate, user: CurrentUser, state: State) -> UserPublic:
    async with state.write() as session:
        await session.exec(update(User).where(col(User.id) == user.id).values(locale=body.locale))
        await session.commit()
    user.locale = body.locale
    return public(user)


@router.post(
    "/auth/mqtt",
    responses=responses(401, 429, 502, 503, 504),
    summary="Short-lived broker credentials for MQTT over WebSocket",
)
async def mqtt_credentials(
    user: CurrentUser, state: State, body: MqttSessionIn | None = None
) -> MqttCredentials:
    """A broker account for this browser session (``{user}~{session}``) holding the user's
    role of literal topics: the board, notices, events and the user's own tree; players also
    write requests (and read receipts) in their own name, admins read the alerts feed.
    Without ``session`` a new session is made; with it, that session's account gets a new
    password (which drops only that session's own old connection). Other sessions (tabs,
    phones) are never touched, except that a user holds at most
    ``PLAZA_MAX_BROWSER_SESSIONS``: a new one retires the least recently used."""
    await _refuse_while_cooling_off(state, user.username)
    wait = state.credentials_budget.take(user.username)
    if wait > 0:
        state.metrics.limited.labels("mqtt_credentials").inc()
        raise too_many("rate_limited", "too many requests for broker credentials", wait)
    key = body.session if body and body.session else secrets.token_hex(4)
    client = f"{user.username}{SESSION_SEPARATOR}{key}"
    client_id = session_client_id(user.username, key)
    password = commands.new_secret()
    expires = datetime.now(UTC) + timedelta(seconds=state.settings.mqtt_credential_ttl)
    async with state.session_lock(user.username), state.session_lock(client):
        async with state.write() as session:  # first: an account never outlives its row
            row = await session.get(BrokerSession, client)
            retired: list[str] = []
            if row is None:
                retired = await _retire_over_cap(state, session, user.username)
                row = BrokerSession(client=client, owner=user.username, expires_at=expires)
            row.expires_at = expires  # the least recently used is the soonest to expire
            session.add(row)
            await session.commit()
        if retired:
            await commands.revoke_accounts(state, retired, None)
            state.metrics.browser_sessions.labels("retired").inc(len(retired))
            for gone in retired:
                state.session_locks.pop(gone, None)
        await commands.provision_account(state, client, role_of(state, user), password, client_id)
    return MqttCredentials(
        username=client,
        password=password,
        user=user.username,
        session=key,
        ws_url=state.settings.ws_url(),
        client_id=client_id,
        expires_at=expires.timestamp(),
        topic_root=state.settings.topic_root,
    )


async def _refuse_while_cooling_off(state: State, username: str) -> None:
    """A player the bridge disabled for flooding gets no broker account until the cooling-off
    ends (else a fresh session would walk around the ban): 429 ``cooling_off`` with
    ``until`` and ``Retry-After``."""
    async with AsyncSession(state.reader) as session:
        row = await session.get(CoolOff, username)
    now = datetime.now(UTC)
    if row is None or row.until <= now:
        return
    wait = math.ceil((row.until - now).total_seconds())
    raise ApiError(
        429,
        "cooling_off",
        f"this account sent too many messages and is disabled until {row.until.isoformat()}",
        headers={"Retry-After": str(max(1, wait))},
        until=row.until,
    )


async def _retire_over_cap(state: State, session: AsyncSession, owner: str) -> list[str]:
    """Delete the rows of ``owner``'s least recently used sessions so that one more fits
    under the cap; return their account names (to revoke once the rows are gone)."""
    query = (
        select(BrokerSession.client)
        .where(BrokerSession.owner == owner)
        .order_by(col(BrokerSession.expires_at))
    )
    live = list((await session.exec(query)).all())
    surplus = live[: max(0, len(live) - state.settings.max_browser_sessions + 1)]
    if surplus:
        await session.exec(delete(BrokerSession).where(col(BrokerSession.client).in_(surplus)))
    return surplus


@router.get("/users", tags=["admin"], responses=responses(401, 403), summary="All accounts")
async def list_users(_admin: AdminUser, state: State, session: Db) -> list[UserPublic]:
    """With each player's no-show ``strikes`` and, while suspended, ``suspended_until``."""
    users = (await session.exec(select(User).order_by(col(User.username)))).all()
    found = await standing_of(state, session, [u.username for u in users])
    return [with_standing(u, found.get(u.username)) for u in users]


@router.delete(
    "/users/{username}/suspension",
    tags=["admin"],
    responses=responses(401, 403, 404, 502, 503, 504),
    summary="Lift a no-show suspension (and reset the strikes)",
)
async def lift_suspension(username: str, admin: AdminUser, state: State, session: Db) -> UserPublic:
    """Through the bridge (the only writer of standing); the player is notified."""
    user = (await session.exec(select(User).where(User.username == username))).first()
    if user is None:
        raise ApiError(404, "not_found", f"no account {username!r}")
    request = VenueRequest(
        request_id=commands.request_id(None),
        op="lift_suspension",
        user=username,
        on_behalf_of=OnBehalfOf(user=admin.username, role="admin"),
    )
    await commands.venue(state, request)
    await session.commit()  # a fresh snapshot: the bridge committed before it answered
    found = await standing_of(state, session, [username])
    return with_standing(user, found.get(username))


@router.delete(
    "/users/{username}",
    tags=["admin"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 404, 409, 502, 503, 504),
    summary="Remove an account and revoke its broker access",
)
async def delete_user(username: str, admin: AdminUser, state: State, session: Db) -> Response:
    user = (await session.exec(select(User).where(User.username == username))).first()
    if user is None:
        raise ApiError(404, "not_found", f"no account {username!r}")
    if user.username == admin.username:
        raise ApiError(409, "cannot_remove_self", "an admin cannot remove their own account")
    sessions = (
        await session.exec(select(BrokerSession.client).where(BrokerSession.owner == username))
    ).all()
    # its browser sessions, and the account of its own name (demo seeding makes one)
    await commands.revoke_accounts(state, [*sessions, user.username], role_of(state, user).name)
    async with state.write() as write:
        await write.exec(delete(BrokerSession).where(col(BrokerSession.owner) == username))
        await write.exec(delete(User).where(col(User.username) == username))
        await write.commit()
    log.info("account %s removed by %s", username, admin.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
