"""The bridge's reply codes as HTTP statuses (pure)."""

from __future__ import annotations

import pytest

from api.commands import STATUS_FOR, raise_for
from api.problems import ApiError
from plaza.messages import ConflictSlot, ErrorBody, Reply
from plaza.rules import Code

pytestmark = pytest.mark.unit


def test_every_rule_code_has_an_http_status() -> None:
    assert {c.value for c in Code} <= set(STATUS_FOR)


@pytest.mark.parametrize(("code", "status"), sorted(STATUS_FOR.items()))
def test_every_bridge_code_maps_to_its_http_status(code: str, status: int) -> None:
    conflict = ConflictSlot(reservation_id="r1", starts_at=1.0, ends_at=2.0, status="approved")
    reply = Reply(
        request_id="x", ok=False, error=ErrorBody(code=code, message="m", conflict=conflict)
    )
    with pytest.raises(ApiError) as caught:
        raise_for(reply)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.conflict is not None
    if code == "rate_limited":
        assert caught.value.headers == {"Retry-After": "1"}
