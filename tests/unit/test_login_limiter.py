"""The login guard (pure): OWASP's device cookies. Failures count per known device, or for
unknown clients per name and per address; a right password costs nothing."""

from __future__ import annotations

import pytest

from api.problems import ApiError
from api.security import LoginGuard, Tokens

pytestmark = pytest.mark.unit
NAT = "10.0.0.1"  # everyone in the venue


def fail(
    guard: LoginGuard, name: str, device: str | None, times: int, now: float = 0
) -> list[bool]:
    """``times`` failed attempts; which of them were let through to the password check."""
    return [guard.admit(name, NAT, device, now=now) == 0 for _ in range(times)]


def test_an_unknown_client_gets_its_burst_of_failures_then_waits_for_the_refill() -> None:
    guard = LoginGuard(per_minute=6, burst=3)
    assert fail(guard, "alice", None, 4) == [True, True, True, False]
    assert guard.admit("alice", NAT, None, now=0) == pytest.approx(10.0)
    assert guard.admit("alice", NAT, None, now=10) == 0


def test_failures_from_unknown_clients_never_lock_out_a_known_device() -> None:
    guard = LoginGuard(per_minute=6, burst=3)
    assert fail(guard, "alice", None, 20)[-1] is False  # an attacker behind the same NAT
    assert guard.admit("alice", NAT, "alices-phone", now=0) == 0


def test_a_known_device_that_keeps_failing_locks_only_itself() -> None:
    guard = LoginGuard(per_minute=6, burst=3)
    assert fail(guard, "alice", "tablet", 4) == [True, True, True, False]
    assert guard.admit("alice", NAT, "phone", now=0) == 0
    assert guard.admit("alice", NAT, None, now=0) == 0


def test_a_right_password_gives_its_attempt_back() -> None:
    guard = LoginGuard(per_minute=6, burst=2)
    for _ in range(10):
        assert guard.admit("alice", NAT, None, now=0) == 0
        guard.succeeded("alice", NAT, None, now=0)


def test_rotating_names_from_one_address_runs_into_the_address_budget() -> None:
    guard = LoginGuard(per_minute=6, burst=3)
    allowed = [guard.admit(f"user{i}", NAT, None, now=0) == 0 for i in range(40)]
    assert allowed.count(True) == 30  # ten names' worth
    assert guard.admit("fresh", "10.0.0.2", None, now=0) == 0
    assert guard.admit("user0", NAT, "known-device", now=0) == 0, "known devices are exempt"


def test_a_device_cookie_names_one_account_and_is_no_access_token() -> None:
    tokens = Tokens("a-signing-key-that-is-long-enough-for-hs256", 60, 3600)
    cookie = tokens.issue_device("alice", ttl=3600)
    device = tokens.device_of(cookie, "alice")
    assert device is not None
    assert tokens.device_of(cookie, "bob") is None
    assert tokens.device_of("forged.cookie.value", "alice") is None
    assert tokens.device_of(tokens.issue_device("alice", ttl=3600, now=0), "alice") is None
    other = Tokens("another-signing-key-that-is-long-enough-xx", 60, 3600)
    assert other.device_of(cookie, "alice") is None
    access, _ = tokens.issue("alice", "player")
    assert tokens.device_of(access, "alice") is None
    with pytest.raises(ApiError, match="access token is not valid"):
        tokens.verify(cookie)
