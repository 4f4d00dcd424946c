"""The account side of the attack suite (issue 13): what a self-registered player can try
with real clients against the api and the broker, and what must hold.

- Client-id takeover: every broker account is bound to its own client id, so no account
  can connect under the bridge's, the api's, a machine's or another session's id.
"""

from __future__ import annotations

import aiomqtt
import pytest

from tests.api.conftest import Api, assert_problem, ws_client
from venue.fleet import OBSERVER_CLIENT_ID

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
