"""Accounts: register, log in, refresh, me, broker credentials for the browser, and (admin)
the user list and account removal."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from api import commands
from api.problems import ApiError, responses
from api.schemas import LoginIn, MeUpdate, MqttCredentials, RegisterIn, TokenOut, UserPublic
from api.state import AdminUser, CurrentUser, Db, State
from plaza import acl
from plaza.tables import BrokerCredential, User

log = logging.getLogger(__name__)
router = APIRouter(tags=["accounts"])
AUTH_ERRORS = responses(401)


def public(user: User) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


def token_for(state: State, user: User) -> TokenOut:
    token, expires = state.tokens.issue(user.username, user.role)
    return TokenOut(
        access_token=token, expires_in=state.tokens.ttl, expires_at=expires, user=public(user)
    )


def role_of(state: State, user: User) -> acl.Role:
    if user.role == "admin":
        return acl.staff_role(state.topics, user.username)
    return acl.player_role(state.topics, user.username)


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    responses=responses(409, 422),
    summary="Register a player account",
)
async def register(body: RegisterIn, state: State) -> UserPublic:
    reserved = {"api", "bridge", "observer", "system"}
    if body.username in reserved:
        raise ApiError(409, "username_taken", f"{body.username!r} is reserved")
    user = User(
        username=body.username,
        password_hash=state.passwords.hash(body.password),
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
async def login(body: LoginIn, request: Request, state: State, session: Db) -> TokenOut:
    client = request.client.host if request.client else "unknown"
    wait = state.limiter.take(body.username, client)
    if wait > 0:
        state.metrics.logins.labels("rate_limited").inc()
        raise ApiError(
            429,
            "login_rate_limited",
            f"too many login attempts; try again in {wait:.0f} s",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    user = (await session.exec(select(User).where(User.username == body.username))).first()
    if not state.passwords.verify(body.password, user.password_hash if user else None):
        state.metrics.logins.labels("invalid_credentials").inc()
        raise ApiError(401, "invalid_credentials", "unknown user or wrong password")
    assert user is not None
    state.metrics.logins.labels("ok").inc()
    return token_for(state, user)


@router.post("/auth/refresh", responses=AUTH_ERRORS, summary="Trade a valid token for a new one")
async def refresh(user: CurrentUser, state: State) -> TokenOut:
    return token_for(state, user)


@router.get("/me", responses=AUTH_ERRORS, summary="The account of the token")
async def me(user: CurrentUser) -> UserPublic:
    return public(user)


@router.patch("/me", responses=responses(401, 422), summary="Change my language")
async def update_me(body: MeUpdate, user: CurrentUser, state: State) -> UserPublic:
    async with state.write() as session:
        await session.exec(update(User).where(col(User.id) == user.id).values(locale=body.locale))
        await session.commit()
    user.locale = body.locale
    return public(user)


@router.post(
    "/auth/mqtt",
    responses=responses(401, 502, 503, 504),
    summary="Short-lived broker credentials for MQTT over WebSocket",
)
async def mqtt_credentials(user: CurrentUser, state: State) -> MqttCredentials:
    """Creates or re-keys the caller's broker account with a role of literal topics (the
    board, notices, events, the caller's own tree; players also write requests in their own
    name, admins read the alerts feed). The password is new on every call and is replaced by
    an unknown one when it expires."""
    password = commands.new_secret()
    await commands.provision_account(state, user.username, role_of(state, user), password)
    expires = datetime.now(UTC) + timedelta(seconds=state.settings.mqtt_credential_ttl)
    async with state.write() as session:
        row = await session.get(BrokerCredential, user.username)
        if row is None:
            row = BrokerCredential(username=user.username, expires_at=expires)
        row.expires_at = expires
        session.add(row)
        await session.commit()
    return MqttCredentials(
        username=user.username,
        password=password,
        ws_url=state.settings.ws_url(),
        client_id=f"web-{user.username}-{secrets.token_hex(4)}",
        expires_at=expires.timestamp(),
        topic_root=state.settings.topic_root,
    )


@router.get("/users", tags=["admin"], responses=responses(401, 403), summary="All accounts")
async def list_users(_admin: AdminUser, session: Db) -> list[UserPublic]:
    users = (await session.exec(select(User).order_by(col(User.username)))).all()
    return [public(u) for u in users]


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
    await commands.revoke_account(state, user.username, role_of(state, user).name)
    async with state.write() as write:
        await write.exec(delete(BrokerCredential).where(col(BrokerCredential.username) == username))
        await write.exec(delete(User).where(col(User.username) == username))
        await write.commit()
    log.info("account %s removed by %s", username, admin.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
