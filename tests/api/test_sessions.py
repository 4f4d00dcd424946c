"""Login sessions have an end (issue 13, finding 12): refreshing never carries a session past
``PLAZA_SESSION_MAX_AGE`` from its login, and logging out revokes the session's tokens (and,
if named, its browser's broker account)."""

from __future__ import annotations

import asyncio
import time

import aiomqtt
import pytest

from api.routes.accounts import prune_revoked
from api.security import Tokens
from plaza.settings import Settings
from tests.api.conftest import Api, assert_problem, ws_client
from tests.conftest import JWT_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
MAX_AGE = 3


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(update={"session_max_age": MAX_AGE, "jwt_ttl": 60})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_refreshing_never_carries_a_session_past_its_maximum_age(api: Api) -> None:
    logged_in = time.time()
    token = await api.token("player1", api.broker.secrets.players["player1"])
    fresh = await api.client.post("/auth/refresh", headers=bearer(token))
    assert fresh.status_code == 200
    assert fresh.json()["expires_at"] <= logged_in + MAX_AGE + 1, "capped at the session's end"
    await asyncio.sleep(MAX_AGE + 1.1)
    late = await api.client.post("/auth/refresh", headers=bearer(fresh.json()["access_token"]))
    assert_problem(late, 401, "token_expired")  # its session's end was its token's end
    # a new login starts a new session
    again = await api.token("player1", api.broker.secrets.players["player1"])
    assert (await api.client.get("/me", headers=bearer(again))).status_code == 200


async def test_a_session_older_than_a_lowered_maximum_age_is_not_refreshed(api: Api) -> None:
    """A token issued while the maximum age was longer is still valid, but its session is
    over by today's setting."""
    before = Tokens(JWT_SECRET, 60, max_age=3600)
    old, _ = before.issue("player1", "player", auth_time=time.time() - MAX_AGE - 1)
    assert (await api.client.get("/me", headers=bearer(old))).status_code == 200
    reply = await api.client.post("/auth/refresh", headers=bearer(old))
    assert_problem(reply, 401, "session_expired")


async def test_logging_out_revokes_the_token_and_every_refresh_of_it(api: Api) -> None:
    token = await api.token("player2", api.broker.secrets.players["player2"])
    refreshed = (await api.client.post("/auth/refresh", headers=bearer(token))).json()
    other = await api.token("player2", api.broker.secrets.players["player2"])  # another login
    out = await api.client.post("/auth/logout", headers=bearer(token))
    assert out.status_code == 204, out.text
    for revoked in (token, refreshed["access_token"]):
        assert_problem(await api.client.get("/me", headers=bearer(revoked)), 401, "token_revoked")
        reply = await api.client.post("/auth/refresh", headers=bearer(revoked))
        assert_problem(reply, 401, "token_revoked")
    assert (await api.client.get("/me", headers=bearer(other))).status_code == 200


async def test_logging_out_with_the_browser_session_retires_its_broker_account(
    api: Api,
) -> None:
    token = await api.token("player3", api.broker.secrets.players["player3"])
    creds = (await api.client.post("/auth/mqtt", headers=bearer(token))).json()
    async with ws_client(api, creds):
        pass
    out = await api.client.post(
        "/auth/logout", headers=bearer(token), json={"session": creds["session"]}
    )
    assert out.status_code == 204, out.text
    with pytest.raises(aiomqtt.MqttError):
        async with ws_client(api, creds):
            pass


async def test_a_logged_out_session_is_forgotten_once_it_would_have_ended(api: Api) -> None:
    token = await api.token("player1", api.broker.secrets.players["player1"])
    assert (await api.client.post("/auth/logout", headers=bearer(token))).status_code == 204
    state = api.app.state.plaza
    assert await prune_revoked(state) == 0
    await asyncio.sleep(MAX_AGE + 1)
    assert await prune_revoked(state) == 1
