"""Passwords, tokens and the login budget.

- Passwords are argon2 hashes (pwdlib's recommended hasher).
- Access tokens are HS256 JWTs (pyjwt) with ``sub`` (username), ``role``, ``iat``, ``exp`` and
  ``jti``, and their login session's ``sid`` and ``auth_time``. They live ``PLAZA_JWT_TTL``
  seconds (15 minutes by default); ``POST /auth/refresh`` trades a still-valid token for a
  fresh one of the same session, up to ``PLAZA_SESSION_MAX_AGE`` after the login; then the
  client logs in again. ``POST /auth/logout`` revokes the session. Every request re-reads
  the account, so a deleted account or a changed role takes effect at once, whatever the
  token says.
- Logins are guarded by :class:`LoginGuard` (device cookies, OWASP): failures count per
  known device, or for unknown clients per name and per address.
- Device cookies are HS256 JWTs of their own kind (``typ: device``; no ``role``, so no device
  cookie is an access token and no access token a device cookie).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from pwdlib import PasswordHash

from api.problems import ApiError

ALGORITHM = "HS256"
DEVICE = "device"
#: the device cookie's name (sent to /auth only)
DEVICE_COOKIE = "plaza_device"


class Passwords:
    """argon2 hashing off the event loop (each hash takes ~100-200 ms of CPU), at most two at
    once, so logins never stall the api's other requests or its broker link."""

    def __init__(self) -> None:
        self._hasher = PasswordHash.recommended()
        # verifying against a dummy hash when the user does not exist keeps the timing equal
        self._dummy = self._hasher.hash(uuid.uuid4().hex)
        self._slots = asyncio.Semaphore(2)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        async with self._slots:
            if hashed is None:
                await asyncio.to_thread(self._hasher.verify, password, self._dummy)
                return False
            return await asyncio.to_thread(self._hasher.verify, password, hashed)


@dataclass(frozen=True, slots=True)
class Claims:
    username: str
    role: str
    expires_at: float
    #: the login session every refresh of this token belongs to (None: a token from before
    #: sessions had ids; it cannot be revoked and lives out its short life)
    session: str | None
    #: when that session logged in
    auth_time: float


class Tokens:
    """Access tokens of login sessions: a login starts a session (``sid``, ``auth_time``);
    a refresh carries both on, and no token of a session outlives ``auth_time + max_age``."""

    def __init__(self, secret: str, ttl: int, max_age: int) -> None:
        self._secret = secret
        self.ttl = ttl
        self.max_age = max_age

    def issue(
        self,
        username: str,
        role: str,
        *,
        session: str | None = None,
        auth_time: float | None = None,
        now: float | None = None,
    ) -> tuple[str, float]:
        """A token of ``session`` (a new one when None) that logged in at ``auth_time``."""
        issued = int(now if now is not None else time.time())
        started = int(auth_time if auth_time is not None else issued)
        expires = min(issued + self.ttl, started + self.max_age)
        claims: dict[str, Any] = {
            "sub": username,
            "role": role,
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
            "sid": session or uuid.uuid4().hex,
            "auth_time": started,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), float(expires)

    def session_ended(self, claims: Claims, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= claims.auth_time + self.max_age

    def issue_device(self, username: str, ttl: int, now: float | None = None) -> str:
        """A device cookie: this client logged in to ``username`` before."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "sub": username,
            "typ": DEVICE,
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def device_of(self, cookie: str | None, username: str) -> str | None:
        """The device id of a valid device cookie of ``username``; None for no cookie, a
        forged or expired one, or one of another account."""
        if not cookie:
            return None
        try:
            data = jwt.decode(
                cookie,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "jti", "typ"]},
            )
        except jwt.InvalidTokenError:
            return None
        if data["typ"] != DEVICE or data["sub"] != username:
            return None
        return str(data["jti"])

    def verify(self, token: str) -> Claims:
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "iat", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ApiError(
                401,
                "token_expired",
                "the access token has expired; refresh it or log in again",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise ApiError(
                401,
                "token_invalid",
                f"the access token is not valid: {exc}",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from exc
        sid = data.get("sid")
        return Claims(
            str(data["sub"]),
            str(data["role"]),
            float(data["exp"]),
            str(sid) if sid else None,
            float(data.get("auth_time", data["iat"])),
        )


@dataclass
class RateLimiter:
    """A token bucket per key: ``burst`` at once, refilled at ``per_minute``. At most
    ``max_keys`` buckets are kept (full ones are forgotten first), so a sweep over keys
    cannot grow memory without bound."""

    per_minute: float
    burst: int
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _level(self, key: str, moment: float) -> float:
        level, last = self._buckets.get(key, (float(self.burst), moment))
        return min(float(self.burst), level + (moment - last) * self.per_minute / 60)

    def peek(self, key: str, now: float | None = None) -> float:
        """0 if one may be taken now, else the seconds until one may."""
        level = self._level(key, now if now is not None else time.monotonic())
        return 0.0 if level >= 1 else (1 - level) / (self.per_minute / 60)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one; return 0 if allowed, else the seconds until the next one is."""
        moment = now if now is not None else time.monotonic()
        wait = self.peek(key, moment)
        if wait > 0:
            return wait
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_full(moment)
        self._buckets[key] = (self._level(key, moment) - 1, moment)
        return 0.0

    def refund(self, key: str, now: float | None = None) -> None:
        """Give one back (an attempt that turned out not to count)."""
        if key in self._buckets:
            moment = now if now is not None else time.monotonic()
            self._buckets[key] = (min(float(self.burst), self._level(key, moment) + 1), moment)

    def _forget_full(self, moment: float) -> None:
        """Forget every full bucket (it is the same as none); if none is full, the fuller
        half, so drained buckets (the ones that refuse) are kept."""
        rate = self.per_minute / 60
        levels = {k: lv + (moment - at) * rate for k, (lv, at) in self._buckets.items()}
        full = [k for k, level in levels.items() if level >= self.burst]
        if not full:
            full = sorted(levels, key=levels.__getitem__, reverse=True)[: len(levels) // 2 or 1]
        for key in full:
            del self._buckets[key]


@dataclass
class LoginGuard:
    """Login budgets after OWASP's "device cookies" (Authentication Cheat Sheet): a browser
    that logged in to an account before holds a signed cookie naming that account; failures
    from it count against that device alone. Failures from any other client count against
    the name's *untrusted* budget and the address's. So an attacker guessing a name (even
    from the same venue NAT) locks out only untrusted logins of that name, never the user's
    known devices. While a budget is empty the attempt is refused before the password is
    checked: a correct password is refused the same way (no oracle).

    An attempt takes a token before the password is checked and gets it back when the
    password is right, so parallel guesses cannot overrun the budget."""

    per_minute: float
    burst: int
    _names: RateLimiter = field(init=False)
    _addresses: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self._names = RateLimiter(self.per_minute, self.burst)
        # an address may try several names (a venue NAT holds many players): ten names' worth
        self._addresses = RateLimiter(self.per_minute * 10, self.burst * 10)

    def _keys(
        self, username: str, address: str, device: str | None
    ) -> list[tuple[RateLimiter, str]]:
        if device is not None:
            return [(self._names, f"device:{device}")]
        return [(self._names, f"name:{username.lower()}"), (self._addresses, address)]

    def admit(
        self, username: str, address: str, device: str | None, now: float | None = None
    ) -> float:
        """Take one attempt; 0 if allowed, else the seconds until one is."""
        keys = self._keys(username, address, device)
        wait = max(limiter.peek(key, now) for limiter, key in keys)
        if wait > 0:
            return wait
        for limiter, key in keys:
            limiter.take(key, now)
        return 0.0

    def succeeded(
        self, username: str, address: str, device: str | None, now: float | None = None
    ) -> None:
        """The password was right: the attempt costs nothing."""
        for limiter, key in self._keys(username, address, device):
            limiter.refund(key, now)
