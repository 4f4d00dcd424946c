"""plaza.dynsec and plaza.acl: the dynamic-security file Mosquitto starts with, and the roles in it.

Mosquitto 2.0.11's dynsec does not expand %u/%c, so isolation rests on every machine and player
role naming only its own literal topics. These tests read the roles as data; the broker-level
proof is tests/integration/test_broker_acl.py.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from plaza import acl
from plaza.dynsec import (
    DEFAULT_ACL_ACCESS,
    ITERATIONS,
    BrokerClient,
    batch,
    create_client,
    create_role,
    delete_client,
    delete_role,
    document,
    hash_password,
    role_json,
    set_client_id,
    set_client_password,
)
from plaza.topics import BRIDGE_SERVICE, TopicError, Topics

pytestmark = pytest.mark.unit

T = Topics()
WILDCARDS = ("+", "#")
valid_ids = st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,47}", fullmatch=True)


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching (spec 4.7), to read ACL entries the way the broker does."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def grants(role: acl.Role, acltype: str, topic: str) -> bool:
    return any(a.allow and a.acltype == acltype and matches(a.topic, topic) for a in role.acls)


def can_read(role: acl.Role, topic: str) -> bool:
    subscribable = grants(role, "subscribePattern", topic) or any(
        a.acltype == "subscribeLiteral" and a.topic == topic for a in role.acls
    )
    return subscribable and grants(role, "publishClientReceive", topic)


def can_write(role: acl.Role, topic: str) -> bool:
    return grants(role, "publishClientSend", topic)


def test_matches_follows_mqtt_wildcard_rules() -> None:
    assert matches("a/+/c", "a/b/c")
    assert matches("a/#", "a/b/c")
    assert matches("a/#", "a")
    assert not matches("a/+", "a/b/c")
    assert not matches("a/b", "a/b/c")
    assert not matches("a/b/c", "a/b")


# -- password hashing ------------------------------------------------------------------------
def test_hash_password_matches_a_vector_produced_by_mosquitto_ctrl_dynsec_init() -> None:
    salt = base64.b64decode("Hjun8PrO96IOwe++")
    assert hash_password("secretpw", salt) == {
        "password": (
            "A+FI8lIdSLhHX7y12Fi1MAOjdiZu+xW1pm61cHFKJiG7QKaGJIEUC9II5egM+NgKmfw62RjarKSCvj+lJm03lQ=="
        ),
        "salt": "Hjun8PrO96IOwe++",
        "iterations": 101,
    }


def test_hash_password_draws_a_fresh_12_byte_salt_each_time() -> None:
    one, two = hash_password("same"), hash_password("same")
    assert one["salt"] != two["salt"]
    assert one["password"] != two["password"]
    assert len(base64.b64decode(one["salt"])) == 12
    assert len(base64.b64decode(one["password"])) == 64  # SHA-512


def test_a_different_password_gives_a_different_hash_with_the_same_salt() -> None:
    salt = b"0123456789ab"
    assert (
        hash_password("secretpw", salt)["password"] != hash_password("secretpx", salt)["password"]
    )


# -- the whole document ----------------------------------------------------------------------
def test_the_document_denies_everything_by_default_except_unsubscribing() -> None:
    doc = document([], [])
    assert doc["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert doc["clients"] == []
    assert doc["groups"] == []
    assert doc["roles"] == []


def test_the_document_gets_a_copy_of_the_default_acl_access() -> None:
    doc = document([], [])
    doc["defaultACLAccess"]["subscribe"] = True
    assert DEFAULT_ACL_ACCESS["subscribe"] is False


def test_the_document_stores_clients_with_verifiable_hashes_and_never_the_plain_password() -> None:
    clients = [
        BrokerClient("pc-01", "pw-of-pc-01", ("device-pc-01",), "machine pc-01"),
        BrokerClient("player1", "pw-of-player1", ("player-player1",)),
    ]
    doc = document(clients, [acl.device_role(T, "pc-01"), acl.player_role(T, "player1")])

    by_name = {c["username"]: c for c in doc["clients"]}
    assert set(by_name) == {"pc-01", "player1"}
    assert by_name["pc-01"]["textName"] == "machine pc-01"
    assert by_name["player1"]["textName"] == "player1", "the username stands in for a text name"
    assert by_name["pc-01"]["roles"] == [{"rolename": "device-pc-01"}]
    for client in clients:
        stored = by_name[client.username]
        assert stored["iterations"] == ITERATIONS
        salt = base64.b64decode(stored["salt"])
        assert hash_password(client.password, salt)["password"] == stored["password"]
        assert client.password not in repr(stored)
    assert [r["rolename"] for r in doc["roles"]] == ["device-pc-01", "player-player1"]


def test_a_role_is_written_with_every_acl_field_the_plugin_reads() -> None:
    role = acl.device_role(T, "pc-01")
    assert role_json(role) == {
        "rolename": "device-pc-01",
        "acls": [
            {"acltype": a.acltype, "topic": a.topic, "allow": True, "priority": 0}
            for a in role.acls
        ],
    }


def test_control_commands_have_the_shapes_of_the_dynsec_v1_api() -> None:
    role = acl.player_role(T, "player1")
    client = BrokerClient("player1", "pw", ("player-player1",))
    assert create_role(role) == {"command": "createRole", **role_json(role)}
    assert delete_role("player-player1") == {"command": "deleteRole", "rolename": "player-player1"}
    assert create_client(client) == {
        "command": "createClient",
        "username": "player1",
        "password": "pw",
        "textname": "player1",
        "roles": [{"rolename": "player-player1"}],
    }
    assert delete_client("player1") == {"command": "deleteClient", "username": "player1"}
    assert set_client_password("player1", "new") == {
        "command": "setClientPassword",
        "username": "player1",
        "password": "new",
    }
    assert batch([delete_client("a"), delete_client("b")]) == {
        "commands": [delete_client("a"), delete_client("b")]
    }


def test_a_bound_account_carries_its_client_id_in_the_file_and_in_create_client() -> None:
    client = BrokerClient("pc-01", "pw", ("device-pc-01",), client_id="pc-01")
    (stored,) = document([client], [])["clients"]
    assert stored["clientid"] == "pc-01"
    assert create_client(client)["clientid"] == "pc-01"
    assert set_client_id("pc-01", "pc-01") == {
        "command": "setClientId",
        "username": "pc-01",
        "clientid": "pc-01",
    }
    unbound = BrokerClient("x", "pw", ())
    assert "clientid" not in document([unbound], [])["clients"][0]
    assert "clientid" not in create_client(unbound)


# -- machine roles ---------------------------------------------------------------------------
def test_a_machine_role_names_only_literal_topics_of_that_machine() -> None:
    role = acl.device_role(T, "pc-01")
    assert role.name == "device-pc-01"
    assert {(a.acltype, a.topic) for a in role.acls} == {
        ("publishClientSend", "plaza/devices/pc-01/presence"),
        ("publishClientSend", "plaza/devices/pc-01/state"),
        ("subscribeLiteral", "plaza/devices/pc-01/cmd"),
        ("publishClientReceive", "plaza/devices/pc-01/cmd"),
        ("subscribeLiteral", "plaza/devices/pc-01/presence"),
        ("publishClientReceive", "plaza/devices/pc-01/presence"),
    }
    assert not any(w in a.topic for a in role.acls for w in WILDCARDS)
    assert all(a.allow for a in role.acls)


@given(me=valid_ids, other=valid_ids)
def test_a_machine_role_grants_nothing_on_another_machines_topics(me: str, other: str) -> None:
    assume(me != other)
    role = acl.device_role(T, me)
    for topic in (T.presence(other), T.state(other), T.cmd(other), T.board(other)):
        assert not can_write(role, topic), topic
        assert not can_read(role, topic), topic
    assert not can_write(role, T.board(me)), "only the bridge writes the board"
    assert not can_write(role, T.cmd(me)), "a machine does not command itself"
    assert can_write(role, T.presence(me))
    assert can_write(role, T.state(me))
    assert can_read(role, T.cmd(me))


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "PC-01"])
def test_a_machine_role_refuses_an_id_that_would_widen_its_topics(bad: str) -> None:
    with pytest.raises(TopicError):
        acl.device_role(T, bad)


# -- player roles ----------------------------------------------------------------------------
def test_a_player_role_uses_wildcards_only_for_own_requests_and_shared_reads() -> None:
    role = acl.player_role(T, "player1")
    assert role.name == "player-player1"
    wild = {(a.acltype, a.topic) for a in role.acls if any(w in a.topic for w in WILDCARDS)}
    assert wild == {
        ("publishClientSend", "plaza/devices/+/requests/player1"),
        ("subscribePattern", "plaza/board/#"),
        ("publishClientReceive", "plaza/board/#"),
        ("subscribePattern", "plaza/events/#"),
        ("publishClientReceive", "plaza/events/#"),
        ("subscribePattern", "plaza/services/+/status"),
        ("publishClientReceive", "plaza/services/+/status"),
        ("subscribePattern", "plaza/users/player1/#"),
        ("publishClientReceive", "plaza/users/player1/#"),
    }
    literal = {(a.acltype, a.topic) for a in role.acls} - wild
    assert literal == {
        ("subscribePattern", "plaza/notices"),
        ("publishClientReceive", "plaza/notices"),
        ("publishClientSend", "plaza/venue/requests/player1"),
        ("publishClientSend", "plaza/users/player1/acks"),
    }
    assert [a.topic for a in role.acls if a.acltype == "publishClientSend"] == [
        "plaza/devices/+/requests/player1",
        "plaza/venue/requests/player1",
        "plaza/users/player1/acks",
    ]


@given(me=valid_ids, other=valid_ids, device=valid_ids)
def test_a_player_role_writes_only_in_its_own_name_and_reads_no_other_players_topics(
    me: str, other: str, device: str
) -> None:
    assume(me != other)
    role = acl.player_role(T, me)
    assert can_write(role, T.request(device, me))
    assert can_write(role, T.venue_request(me))
    assert can_read(role, T.replies(me))
    assert can_read(role, T.waitlist(me))
    assert can_read(role, T.waitlist_events)
    assert can_read(role, T.notifications(me))
    assert can_read(role, T.board(device))
    assert can_read(role, T.device_events)
    assert can_read(role, T.notices)

    assert not can_write(role, T.request(device, other))
    assert not can_write(role, T.venue_request(other))
    assert not can_write(role, T.waitlist(me))
    assert not can_read(role, T.waitlist(other))
    assert not can_read(role, T.venue_request(other))
    assert not can_read(role, T.replies(other))
    assert not can_read(role, T.notifications(other))
    assert not can_read(role, T.request(device, other))
    for topic in (T.presence(device), T.state(device), T.cmd(device), T.board(device)):
        assert not can_write(role, topic), topic
    assert not can_read(role, T.cmd(device))
    assert not can_read(role, T.admin_alerts)
    assert not can_write(role, acl.DYNSEC_COMMAND)


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "Player1"])
def test_a_player_role_refuses_a_name_that_would_widen_its_topics(bad: str) -> None:
    with pytest.raises(TopicError):
        acl.player_role(T, bad)


# -- service roles ---------------------------------------------------------------------------
def test_the_observer_role_reads_the_venue_and_sys_and_writes_nothing() -> None:
    role = acl.observer_role(T)
    assert not any(a.acltype == "publishClientSend" for a in role.acls)
    assert can_read(role, T.replies("player1"))
    assert can_read(role, T.cmd("pc-01"))
    assert can_read(role, "$SYS/broker/uptime")
    assert not can_read(role, acl.DYNSEC_RESPONSE)


def test_only_the_api_and_bridge_roles_may_send_dynamic_security_commands() -> None:
    roles = [
        acl.intake_role(T),
        acl.observer_role(T),
        acl.device_role(T, "pc-01"),
        acl.player_role(T, "player1"),
    ]
    assert not any(can_write(r, acl.DYNSEC_COMMAND) for r in roles)
    api = acl.api_role(T)
    assert can_write(api, acl.DYNSEC_COMMAND)
    assert can_read(api, acl.DYNSEC_RESPONSE)
    assert can_write(api, T.request("pc-01", "api"))
    assert not can_write(api, T.request("pc-01", "player1")), "the api asks in its own name"
    assert not can_write(api, T.board("pc-01"))
    bridge = acl.bridge_role(T)  # it disables a flooding player's accounts, and enables them
    assert can_write(bridge, acl.DYNSEC_COMMAND)
    assert can_read(bridge, acl.DYNSEC_RESPONSE)


def test_the_intake_role_reads_requests_receipts_and_admin_commands_and_writes_nothing() -> None:
    role = acl.intake_role(T)
    assert not any(a.acltype == "publishClientSend" for a in role.acls)
    assert can_read(role, T.request("pc-01", "player1"))
    assert can_read(role, T.acks("player1"))
    assert can_read(role, T.admin_requests)
    assert not can_read(role, T.presence("pc-01"))
    assert not can_read(role, T.replies("player1"))


def test_the_bridge_writes_its_status_and_the_api_staff_and_players_read_it() -> None:
    status = T.service_status(BRIDGE_SERVICE)
    assert status == "plaza/services/bridge/status"
    assert can_write(acl.bridge_role(T), status)
    for reader in (acl.api_role(T), acl.observer_role(T), acl.staff_role(T, "admin")):
        assert can_read(reader, status)
        assert not can_write(reader, status)
    player = acl.player_role(T, "player1")
    assert can_read(player, status)
    assert not can_write(player, status)
    assert not can_write(acl.device_role(T, "pc-01"), status)


def test_the_bridge_role_writes_and_reads_under_the_root_and_reads_the_broker_stats() -> None:
    role = acl.bridge_role(T)
    assert can_write(role, T.board("pc-01"))
    assert can_write(role, T.cmd("pc-01"))
    assert can_read(role, T.request("pc-01", "player1"))
    assert not can_write(role, "other-venue/board/pc-01")
    assert can_read(role, "$SYS/broker/uptime")  # plaza.broker_stats exports them
    assert not can_write(role, "$SYS/broker/uptime")
