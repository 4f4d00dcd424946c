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

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from pwdlib import PasswordHash

from api.problems import ApiError

ALGORITHM = "HS256"


class Passwords:
    def __init__(self) -> None:
        self._hasher = PasswordHash.recommended()
        # verifying against a dummy hash when the user does not exist keeps the timing equal
        self._dummy = self._hasher.hash(uuid.uuid4().hex)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password: str, hashed: str | None) -> bool:
        if hashed is None:
            self._hasher.verify(password, self._dummy)
            return False
        return self._hasher.verify(password, hashed)


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
class LoginLimiter:
    """A token bucket per (username, client address): ``burst`` attempts at once, refilled at
    ``per_minute``. Successful logins cost a token too (no oracle for a correct password)."""

    per_minute: float
    burst: int
    _buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    def take(self, username: str, client: str, now: float | None = None) -> float:
        """Take one attempt; return 0 if allowed, else the seconds until the next one."""
        moment = now if now is not None else time.monotonic()
        key = (username.lower(), client)
        rate = self.per_minute / 60
        level, last = self._buckets.get(key, (float(self.burst), moment))
        level = min(float(self.burst), level + (moment - last) * rate)
        if level < 1:
            self._buckets[key] = (level, moment)
            return (1 - level) / rate
        self._buckets[key] = (level - 1, moment)
        if len(self._buckets) > 100_000:  # bound the memory an address sweep can take
            self._buckets.clear()
        return 0.0
