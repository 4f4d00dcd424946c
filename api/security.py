"""Passwords, tokens and the login budget.

- Passwords are argon2 hashes (pwdlib's recommended hasher).
- Access tokens are HS256 JWTs (pyjwt) with ``sub`` (username), ``role``, ``iat``, ``exp`` and
  ``jti``. They live ``PLAZA_JWT_TTL`` seconds (15 minutes by default); ``POST /auth/refresh``
  trades a still-valid token for a fresh one, so a client that refreshes in time never logs in
  again, and one that lets it lapse logs in again. Every request re-reads the account, so a
  deleted account or a changed role takes effect at once, whatever the token says.
- Logins are limited per (username, client address) by a token bucket.
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


class Tokens:
    def __init__(self, secret: str, ttl: int) -> None:
        self._secret = secret
        self.ttl = ttl

    def issue(self, username: str, role: str, now: float | None = None) -> tuple[str, float]:
        issued = int(now if now is not None else time.time())
        expires = issued + self.ttl
        claims: dict[str, Any] = {
            "sub": username,
            "role": role,
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), float(expires)

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
        return Claims(str(data["sub"]), str(data["role"]), float(data["exp"]))


@dataclass
class RateLimiter:
    """A token bucket per key: ``burst`` at once, refilled at ``per_minute``. At most
    ``max_keys`` buckets are kept (full ones are forgotten first), so a sweep over keys
    cannot grow memory without bound."""

    per_minute: float
    burst: int
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one; return 0 if allowed, else the seconds until the next one is."""
        moment = now if now is not None else time.monotonic()
        rate = self.per_minute / 60
        level, last = self._buckets.get(key, (float(self.burst), moment))
        level = min(float(self.burst), level + (moment - last) * rate)
        if level < 1:
            return (1 - level) / rate
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_full(moment)
        self._buckets[key] = (level - 1, moment)
        return 0.0

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
class LoginLimiter:
    """A token bucket per (username, client address): ``burst`` attempts at once, refilled at
    ``per_minute``. Successful logins cost a token too (no oracle for a correct password)."""

    per_minute: float
    burst: int
    _buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    def take(self, username: str, client: str, now: float | None = None) -> float:
        """Take one attempt; return 0 if allowed, else the seconds until the next one.
        Each address also has a budget across all names (ten times one name's), so
        rotating user names does not get around the limit."""
        moment = now if now is not None else time.monotonic()
        wait = max(
            self._peek((username.lower(), client), moment, 1),
            self._peek(("*", client), moment, 10),
        )
        if wait > 0:
            return wait
        self._take((username.lower(), client), moment, 1)
        self._take(("*", client), moment, 10)
        if len(self._buckets) > 100_000:  # bound the memory an address sweep can take
            self._buckets.clear()
        return 0.0

    def _level(self, key: tuple[str, str], moment: float, scale: int) -> float:
        rate = self.per_minute * scale / 60
        level, last = self._buckets.get(key, (float(self.burst * scale), moment))
        return min(float(self.burst * scale), level + (moment - last) * rate)

    def _peek(self, key: tuple[str, str], moment: float, scale: int) -> float:
        level = self._level(key, moment, scale)
        return 0.0 if level >= 1 else (1 - level) / (self.per_minute * scale / 60)

    def _take(self, key: tuple[str, str], moment: float, scale: int) -> None:
        self._buckets[key] = (self._level(key, moment, scale) - 1, moment)
