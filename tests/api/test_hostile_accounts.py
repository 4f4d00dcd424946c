"""The account side of the attack suite (issue 13): what a self-registered player can try
with real clients against the api and the broker, and what must hold.

- Client-id takeover: every broker account is bound to its own client id, so no account
  can connect under the bridge's, the api's, a machine's or another session's id.
- Login lock-out of someone else: failures count per known device (a device cookie) or,
  for unknown devices, per name and address budget; a locked-out login is refused before its
  password is checked (no oracle).
- Unbounded broker accounts: a user holds at most ``PLAZA_MAX_BROWSER_SESSIONS`` live
  browser sessions (a new one retires the least recently used), ``POST /auth/mqtt`` has a
  per-user budget, and expiry deletes accounts in batches, one command list per batch.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiomqtt
import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.app import expire_credentials
from plaza.acl import DYNSEC_RESPONSE
from plaza.db import make_engine
from plaza.settings import Settings
from plaza.tables import BrokerSession
from tests.api.conftest import Api, assert_problem, ws_client
from tests.conftest import Watch
from venue.accounts import OBSERVER_CLIENT_ID
from venue.broker import DYNSEC_FILE


def api_client(api: Api) -> httpx.AsyncClient:
    """A client of its own (its own cookie jar: a device), from the same address as all."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://plaza")


SESSION_CAP = 3
CREDENTIALS_BURST = 8
EXPIRY_BATCH = 3


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    """Small caps, so the tests reach them."""
    return api_settings.model_copy(
        update={
            "max_browser_sessions": SESSION_CAP,
            "mqtt_credentials_burst": CREDENTIALS_BURST,
            "mqtt_credentials_per_minute": 6,
            "mqtt_expiry_batch": EXPIRY_BATCH,
            "login_per_minute": 0.1,  # no refill while a test runs, however slow the machine
        }
    )


pytestmark = [pytest.mark.integration, pytest.mark.anyio]
NOT_AUTHORIZED = 0x87


def reason(exc: aiomqtt.MqttCodeError) -> int:
    value = getattr(exc.rc, "value", exc.rc)
    assert isinstance(value, int), exc
    return value


async def test_no_account_can_connect_under_another_connections_client_id(api: Api) -> None:
    state = api.app.state.plaza
    broker = api.broker
    mine = (await api.client.post("/auth/mqtt", headers=await api.headers("player1"))).json()
    theirs = (await api.client.post("/auth/mqtt", headers=await api.headers("player2"))).json()
    targets = [
        api.settings.bridge_id,
        api.settings.api_id,
        "pc-01",
        theirs["client_id"],
        OBSERVER_CLIENT_ID,
        "player2",
    ]
    attackers = [
        (mine["username"], mine["password"]),  # a browser session's account
        ("player1", broker.secrets.players["player1"]),  # a demo player's own account
    ]
    connections = state.link.connections
    machine = broker.client("pc-01", broker.device_password("pc-01"), identifier="pc-01")
    async with ws_client(api, theirs) as session, machine:
        for username, password in attackers:
            for target in targets:
                with pytest.raises(aiomqtt.MqttCodeError) as refused:
                    async with broker.client(username, password, identifier=target):
                        pass
                assert reason(refused.value) == NOT_AUTHORIZED, (username, target)
        # every rightful connection is still the one it was
        await session.subscribe(broker.topics.user_tree("player2"), qos=1)
        await machine.subscribe(broker.topics.cmd("pc-01"), qos=1)
    assert api.bridge.service.metrics.reconnects == 0
    assert state.link.connected.is_set()
    assert state.link.connections == connections
    # and the account's own id still works
    async with ws_client(api, mine):
        pass


@pytest.mark.parametrize("device_id", ["plaza-bridge", "plaza-api", "web-player2-abcd1234"])
async def test_a_machine_cannot_be_named_after_a_service_or_a_browser_client_id(
    api: Api, device_id: str
) -> None:
    admin = await api.headers("admin")
    reply = await api.client.post("/devices", headers=admin, json={"id": device_id, "name": "x"})
    body = assert_problem(reply, 422, "validation_error")
    assert "reserved" in str(body["detail"])


# -- unbounded broker accounts -----------------------------------------------------------------
def broker_accounts(api: Api, owner: str) -> set[str]:
    """The browser-session accounts of ``owner`` in the broker's own dynamic-security file."""
    doc = json.loads((api.broker.broker.data_dir / DYNSEC_FILE).read_text())
    return {c["username"] for c in doc["clients"] if c["username"].startswith(f"{owner}~")}


async def session_rows(api: Api, owner: str) -> set[str]:
    engine = make_engine(api.settings.db_url)
    try:
        async with AsyncSession(engine) as session:
            query = select(BrokerSession.client).where(BrokerSession.owner == owner)
            return set((await session.exec(query)).all())
    finally:
        await engine.dispose()


async def test_new_browser_sessions_past_the_cap_retire_the_least_recently_used(
    api: Api,
) -> None:
    headers = await api.headers("player1")
    made = []
    for _ in range(SESSION_CAP + 2):
        reply = await api.client.post("/auth/mqtt", headers=headers)
        assert reply.status_code == 200, reply.text
        made.append(reply.json())
    live = {m["username"] for m in made[-SESSION_CAP:]}
    assert await session_rows(api, "player1") == live
    assert broker_accounts(api, "player1") == live
    for retired in made[:2]:  # their accounts are gone
        with pytest.raises(aiomqtt.MqttError):
            async with ws_client(api, retired):
                pass
    # re-keying a live session is not a new one: nothing is retired
    await api.client.post("/auth/mqtt", headers=headers, json={"session": made[2]["session"]})
    assert await session_rows(api, "player1") == live
    # the retired tab asks again with its key: it is the newest, the least recently used goes
    again = await api.client.post(
        "/auth/mqtt", headers=headers, json={"session": made[0]["session"]}
    )
    assert again.status_code == 200
    assert await session_rows(api, "player1") == {
        made[0]["username"],
        made[2]["username"],
        made[4]["username"],
    }
    assert broker_accounts(api, "player1") == await session_rows(api, "player1")
    async with ws_client(api, again.json()):
        pass


async def test_asking_for_broker_credentials_too_often_is_429_for_that_user_only(
    api: Api,
) -> None:
    headers = await api.headers("player2")
    for _ in range(CREDENTIALS_BURST):
        ok = await api.client.post("/auth/mqtt", headers=headers, json={"session": "tab1"})
        assert ok.status_code == 200, ok.text
    refused = await api.client.post("/auth/mqtt", headers=headers, json={"session": "tab1"})
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    other = await api.client.post("/auth/mqtt", headers=await api.headers("player3"))
    assert other.status_code == 200


async def test_expiry_deletes_expired_accounts_in_batches_of_one_command_list(api: Api) -> None:
    clients = []
    for user in ("player1", "player2", "player3"):
        headers = await api.headers(user)
        for _ in range(SESSION_CAP):
            reply = await api.client.post("/auth/mqtt", headers=headers)
            clients.append(reply.json()["username"])
    keep = clients.pop()  # one session stays valid
    engine = make_engine(api.settings.db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(BrokerSession)
                .where(col(BrokerSession.client).in_(clients))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()
    async with Watch(api.broker.stand_in_api(), [DYNSEC_RESPONSE]) as control:
        assert await expire_credentials(api.app.state.plaza) == len(clients)
        await asyncio.sleep(0.3)  # every response has arrived
    deletes = [json.loads(s.payload)["responses"] for s in control.seen]
    assert len(deletes) == -(-len(clients) // EXPIRY_BATCH), "one command list per batch"
    assert all(r["command"] == "deleteClient" for batch in deletes for r in batch)
    left = set().union(*(broker_accounts(api, u) for u in ("player1", "player2", "player3")))
    assert left == {keep}


# -- login lock-out of someone else --------------------------------------------------------------
async def fail_logins(api: Api, client: httpx.AsyncClient, username: str, times: int) -> list[int]:
    codes = []
    for _ in range(times):
        reply = await client.post("/auth/login", json={"username": username, "password": "wrong!"})
        codes.append(reply.status_code)
    return codes


async def test_an_attacker_on_the_same_address_cannot_lock_out_a_user_on_a_known_device(
    api: Api,
) -> None:
    """OWASP's device cookies: everyone behind a venue's NAT shares one address, so failures
    count against the attacker's own (untrusted) side, not the user's known device."""
    password = api.broker.secrets.players["player1"]
    async with api_client(api) as phone, api_client(api) as attacker:
        first = await phone.post("/auth/login", json={"username": "player1", "password": password})
        assert first.status_code == 200
        assert phone.cookies.get("plaza_device")
        codes = await fail_logins(api, attacker, "player1", api.settings.login_burst + 3)
        assert codes[-1] == 429, codes
        again = await phone.post("/auth/login", json={"username": "player1", "password": password})
        assert again.status_code == 200, again.text


async def test_while_locked_out_the_right_password_gets_the_same_refusal_as_a_wrong_one(
    api: Api,
) -> None:
    """No oracle: a locked-out login is refused before its password is checked."""
    password = api.broker.secrets.players["player2"]
    async with api_client(api) as attacker:
        await fail_logins(api, attacker, "player2", api.settings.login_burst)
        wrong = await attacker.post("/auth/login", json={"username": "player2", "password": "x"})
        right = await attacker.post(
            "/auth/login", json={"username": "player2", "password": password}
        )
    a, b = (
        assert_problem(wrong, 429, "login_rate_limited"),
        assert_problem(right, 429, "login_rate_limited"),
    )
    assert (a["code"], a["status"]) == (b["code"], b["status"])
    assert "plaza_device" not in right.cookies


async def test_a_device_that_keeps_failing_is_locked_itself_and_others_are_not(api: Api) -> None:
    password = api.broker.secrets.players["player3"]
    async with api_client(api) as tablet, api_client(api) as phone:
        for device in (tablet, phone):
            ok = await device.post(
                "/auth/login", json={"username": "player3", "password": password}
            )
            assert ok.status_code == 200
        codes = await fail_logins(api, tablet, "player3", api.settings.login_burst + 1)
        assert codes[-1] == 429, codes
        locked = await tablet.post(
            "/auth/login", json={"username": "player3", "password": password}
        )
        assert_problem(locked, 429, "login_rate_limited")
        fine = await phone.post("/auth/login", json={"username": "player3", "password": password})
        assert fine.status_code == 200
        # a new device (no cookie) is not locked by the tablet's failures either
        async with api_client(api) as laptop:
            new = await laptop.post(
                "/auth/login", json={"username": "player3", "password": password}
            )
            assert new.status_code == 200


async def test_a_device_cookie_of_another_account_or_a_forged_one_is_no_device(api: Api) -> None:
    password = api.broker.secrets.players["player1"]
    async with api_client(api) as attacker:
        ok = await attacker.post(
            "/auth/login",
            json={"username": "player2", "password": api.broker.secrets.players["player2"]},
        )
        assert ok.status_code == 200  # a device of player2, not of player1
        codes = await fail_logins(api, attacker, "player1", api.settings.login_burst)
        assert codes[-1] == 401
        attacker.cookies.set("plaza_device", "forged.token.value")
        after = await attacker.post(
            "/auth/login", json={"username": "player1", "password": password}
        )
        assert_problem(after, 429, "login_rate_limited")
