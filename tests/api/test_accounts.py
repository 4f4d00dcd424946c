"""Accounts over REST: register, login (with its budget), tokens (missing, forged, expired,
refreshed), roles, and broker credentials that really work on the broker's WebSocket listener
with exactly the player's rights."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest
from sqlalchemy import update
from sqlmodel import col

from api.app import expire_credentials
from api.security import Tokens
from plaza.db import make_engine
from plaza.tables import BrokerSession
from tests.api.conftest import Api, assert_problem, until_dropped, ws_client
from tests.conftest import JWT_SECRET, close_dead_client
from venue.accounts import OBSERVER_USER

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_player_registers_logs_in_and_reads_their_account(api: Api) -> None:
    reply = await api.client.post(
        "/auth/register", json={"username": "newbie", "password": "long-enough-pw", "locale": "en"}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["username"] == "newbie"
    assert reply.json()["role"] == "player"
    token = await api.token("newbie", "long-enough-pw")
    me = await api.client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert (me.json()["username"], me.json()["locale"]) == ("newbie", "en")


async def test_a_taken_or_reserved_username_is_409(api: Api) -> None:
    # sim-player-NNN: the simulator's players, whose bookings its staff desk approves
    for name in ("player1", "bridge", "sim-player-009", "sim-player-x"):
        reply = await api.client.post(
            "/auth/register", json={"username": name, "password": "long-enough-pw"}
        )
        assert_problem(reply, 409, "username_taken")


@pytest.mark.parametrize(
    "body",
    [
        {"username": "x", "password": "long-enough-pw"},  # too short a name
        {"username": "Has Space", "password": "long-enough-pw"},
        {"username": "okname", "password": "short"},
        {"username": "okname", "password": "long-enough-pw", "role": "admin"},  # no smuggling
        {"username": "okname"},
    ],
)
async def test_an_invalid_registration_is_422_with_the_field_named(
    api: Api, body: dict[str, str]
) -> None:
    reply = await api.client.post("/auth/register", json=body)
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"]


async def test_a_wrong_password_and_an_unknown_user_get_the_same_401(api: Api) -> None:
    wrong = await api.client.post("/auth/login", json={"username": "player1", "password": "nope"})
    unknown = await api.client.post("/auth/login", json={"username": "ghost", "password": "nope"})
    a = assert_problem(wrong, 401, "invalid_credentials")
    b = assert_problem(unknown, 401, "invalid_credentials")
    assert a["detail"] == b["detail"]


async def test_logins_are_rate_limited_per_user_and_address(api: Api) -> None:
    burst = api.settings.login_burst
    for _ in range(burst):
        reply = await api.client.post("/auth/login", json={"username": "player2", "password": "x"})
        assert reply.status_code == 401
    limited = await api.client.post(
        "/auth/login",
        json={"username": "player2", "password": api.broker.secrets.players["player2"]},
    )
    assert_problem(limited, 429, "login_rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    # another account from the same address is not held back
    await api.token("player3", api.broker.secrets.players["player3"])


async def test_no_token_a_forged_token_and_an_expired_token_get_exact_codes(api: Api) -> None:
    assert_problem(await api.client.get("/me"), 401, "not_authenticated")
    forged, _ = Tokens("another-key-that-is-long-enough-for-hs256!", 60, 3600).issue(
        "admin", "admin"
    )
    reply = await api.client.get("/me", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(reply, 401, "token_invalid")
    garbage = await api.client.get("/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert_problem(garbage, 401, "token_invalid")
    past = datetime.now(UTC) - timedelta(hours=2)
    expired, _ = Tokens(JWT_SECRET, 60, 3600).issue("player1", "player", now=past.timestamp())
    reply = await api.client.get("/me", headers={"Authorization": f"Bearer {expired}"})
    assert_problem(reply, 401, "token_expired")
    assert "invalid_token" in reply.headers["WWW-Authenticate"]


async def test_a_valid_token_is_refreshed_into_a_new_one(api: Api) -> None:
    headers = await api.headers("player1")
    reply = await api.client.post("/auth/refresh", headers=headers)
    assert reply.status_code == 200
    fresh = reply.json()["access_token"]
    assert fresh != headers["Authorization"].split()[1]
    me = await api.client.get("/me", headers={"Authorization": f"Bearer {fresh}"})
    assert me.json()["username"] == "player1"


async def test_a_player_on_an_admin_endpoint_is_403(api: Api) -> None:
    headers = await api.headers("player1")
    assert_problem(await api.client.get("/users", headers=headers), 403, "forbidden")
    assert_problem(await api.client.get("/alerts", headers=headers), 403, "forbidden")
    reply = await api.client.post(
        "/devices", headers=headers, json={"id": "pc-77", "name": "PC 77"}
    )
    assert_problem(reply, 403, "forbidden")


async def test_a_player_changes_their_language(api: Api) -> None:
    headers = await api.headers("player1")
    reply = await api.client.patch("/me", headers=headers, json={"locale": "en"})
    assert reply.status_code == 200
    assert (await api.client.get("/me", headers=headers)).json()["locale"] == "en"
    bad = await api.client.patch("/me", headers=headers, json={"locale": "fr"})
    assert_problem(bad, 422, "validation_error")


async def test_broker_credentials_work_over_websocket_with_the_players_rights_only(
    api: Api,
) -> None:
    admin = await api.headers("admin")
    await api.client.patch("/devices/pc-02", headers=admin, json={"maintenance": True})
    headers = await api.headers("player1")
    reply = await api.client.post("/auth/mqtt", headers=headers)
    assert reply.status_code == 200, reply.text
    creds = reply.json()
    assert creds["user"] == "player1"
    assert creds["username"] == f"player1~{creds['session']}"
    assert creds["ws_url"] == f"ws://127.0.0.1:{api.broker.ws_port}/"
    topics = api.broker.topics
    async with ws_client(api, creds) as client:
        granted = await client.subscribe(
            [
                (topics.board_tree, 1),
                (topics.user_tree("player1"), 1),
                (topics.user_tree("player2"), 1),  # another player's tree: refused
            ]
        )
        codes = [getattr(c, "value", c) for c in granted or []]
        assert codes[0] < 0x80
        assert codes[1] < 0x80
        assert codes[2] >= 0x80
        # the retained board entry of the machine under maintenance arrives
        async with asyncio.timeout(5):
            async for message in client.messages:
                if message.topic.value == topics.board("pc-02"):
                    assert json.loads(message.payload)["status"] == "maintenance"
                    break
        # a request in their own name reaches the bridge and is answered
        await client.publish(
            topics.request("pc-01", "player1"),
            json.dumps({"request_id": "ws-1", "op": "cancel", "reservation_id": "none"}),
            qos=1,
        )
        async with asyncio.timeout(5):
            async for message in client.messages:
                if message.topic.value == topics.replies("player1"):
                    assert json.loads(message.payload)["error"]["code"] == "not_found"
                    break


async def test_each_browser_session_has_its_own_account_and_rekeying_one_spares_the_others(
    api: Api,
) -> None:
    headers = await api.headers("player2")
    tab1 = (await api.client.post("/auth/mqtt", headers=headers)).json()
    tab2 = (await api.client.post("/auth/mqtt", headers=headers)).json()
    assert tab1["session"] != tab2["session"]
    assert tab1["username"] == f"player2~{tab1['session']}"
    async with ws_client(api, tab1) as first:
        # tab 2 connects and later re-keys its own session: tab 1 stays connected
        again = await api.client.post(
            "/auth/mqtt", headers=headers, json={"session": tab2["session"]}
        )
        rekeyed = again.json()
        assert (rekeyed["username"], rekeyed["client_id"]) == (tab2["username"], tab2["client_id"])
        with pytest.raises(aiomqtt.MqttError):
            async with ws_client(api, tab2):  # its old password is gone
                pass
        async with ws_client(api, rekeyed):
            pass
        await first.publish(api.broker.topics.acks("player2"), b'{"up_to": 0}', qos=1)


async def test_an_expired_session_account_is_deleted_and_its_connection_dropped(api: Api) -> None:
    headers = await api.headers("player2")
    creds = (await api.client.post("/auth/mqtt", headers=headers)).json()
    async with ws_client(api, creds) as live:
        engine = make_engine(api.settings.db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    update(BrokerSession)
                    .where(col(BrokerSession.client) == creds["username"])
                    .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )
        finally:
            await engine.dispose()
        assert await expire_credentials(api.app.state.plaza) == 1
        with pytest.raises(aiomqtt.MqttError):
            await until_dropped(live)
    await close_dead_client(live)
    with pytest.raises(aiomqtt.MqttError):
        async with ws_client(api, creds):
            pass
    # the browser asks again for the same session and goes on
    fresh = await api.client.post("/auth/mqtt", headers=headers, json={"session": creds["session"]})
    async with ws_client(api, fresh.json()):
        pass


async def test_names_are_not_shared_between_people_machines_and_services(api: Api) -> None:
    reply = await api.client.post(
        "/auth/register", json={"username": "pc-01", "password": "long-enough-pw"}
    )
    assert_problem(reply, 409, "username_taken")
    admin = await api.headers("admin")
    reply = await api.client.post("/devices", headers=admin, json={"id": "player1", "name": "x"})
    assert_problem(reply, 409, "device_exists")
    # a broker account of another kind (the observer service) is never taken over
    reply = await api.client.post("/devices", headers=admin, json={"id": "observer", "name": "x"})
    assert_problem(reply, 409, "broker_account_conflict")
    listed = [d["id"] for d in (await api.client.get("/devices", headers=admin)).json()]
    assert "observer" not in listed
    async with api.broker.client(OBSERVER_USER, api.broker.secrets.observer):  # still its own
        pass


async def test_an_admins_browser_credentials_read_the_alerts_feed(api: Api) -> None:
    headers = await api.headers("admin")
    creds = (await api.client.post("/auth/mqtt", headers=headers)).json()
    topics = api.broker.topics
    async with ws_client(api, creds) as client:
        granted = await client.subscribe(
            [(topics.admin_alerts, 1), (topics.requests_by("admin"), 1)]
        )
        codes = [getattr(c, "value", c) for c in granted or []]
        assert codes[0] < 0x80  # alerts: yes
        assert codes[1] >= 0x80  # other people's requests: no


async def test_a_removed_account_loses_its_token_and_its_broker_access(api: Api) -> None:
    await api.client.post("/auth/register", json={"username": "leaver", "password": "pw-leaver-1"})
    token = await api.token("leaver", "pw-leaver-1")
    player = {"Authorization": f"Bearer {token}"}
    creds = (await api.client.post("/auth/mqtt", headers=player)).json()
    async with ws_client(api, creds):
        pass
    admin = await api.headers("admin")
    reply = await api.client.delete("/users/leaver", headers=admin)
    assert reply.status_code == 204
    assert_problem(await api.client.get("/me", headers=player), 401, "token_invalid")
    with pytest.raises(aiomqtt.MqttError):
        async with ws_client(api, creds):
            pass
    assert_problem(await api.client.delete("/users/leaver", headers=admin), 404, "not_found")
    assert_problem(
        await api.client.delete("/users/admin", headers=admin), 409, "cannot_remove_self"
    )


async def test_an_admin_lists_every_account_with_its_role(api: Api) -> None:
    reply = await api.client.get("/users", headers=await api.headers("admin"))
    assert reply.status_code == 200
    roles = {u["username"]: u["role"] for u in reply.json()}
    assert roles == {
        "admin": "admin",
        "player1": "player",
        "player2": "player",
        "player3": "player",
    }
    assert all("password" not in json.dumps(u) for u in reply.json())
