"""plaza.topics: every topic is built and parsed in one place, and ids cannot widen a topic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plaza.topics import (
    BRIDGE_SERVICE,
    BoardTopic,
    BrokerSysTopic,
    DeviceChannel,
    DeviceTopic,
    RequestTopic,
    ServiceStatusTopic,
    TopicError,
    Topics,
    UserTopic,
    valid_id,
)

pytestmark = pytest.mark.unit

T = Topics()

#: Any id the contract accepts: 1-48 of a-z 0-9 _ . -, starting with a letter or digit.
valid_ids = st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,47}", fullmatch=True)

INVALID_IDS = [
    pytest.param("+", id="single-level-wildcard"),
    pytest.param("#", id="multi-level-wildcard"),
    pytest.param("pc+01", id="embedded-plus"),
    pytest.param("pc#", id="embedded-hash"),
    pytest.param("pc/01", id="slash"),
    pytest.param("", id="empty"),
    pytest.param("PC-01", id="uppercase"),
    pytest.param("x" * 49, id="49-chars"),
    pytest.param("-pc", id="leading-dash"),
    pytest.param(".pc", id="leading-dot"),
    pytest.param("pc 01", id="space"),
    pytest.param("pc-01\n", id="trailing-newline"),
    pytest.param("$sys", id="dollar"),
    pytest.param("pc\x0001", id="nul"),
]


def test_every_builder_produces_the_documented_topic_string() -> None:
    assert T.presence("pc-01") == "plaza/devices/pc-01/presence"
    assert T.state("pc-01") == "plaza/devices/pc-01/state"
    assert T.cmd("pc-01") == "plaza/devices/pc-01/cmd"
    assert T.request("pc-01", "player1") == "plaza/devices/pc-01/requests/player1"
    assert T.replies("player1") == "plaza/users/player1/replies"
    assert T.notifications("player1") == "plaza/users/player1/notifications"
    assert T.board("pc-01") == "plaza/board/pc-01"
    assert T.reservation_events == "plaza/events/reservations"
    assert T.device_events == "plaza/events/devices"
    assert T.admin_alerts == "plaza/admin/alerts"
    assert T.notices == "plaza/notices"


def test_subscription_filters_use_wildcards_only_where_documented() -> None:
    assert T.all_presence == "plaza/devices/+/presence"
    assert T.all_state == "plaza/devices/+/state"
    assert T.all_requests == "plaza/devices/+/requests/+"
    assert T.all_board == "plaza/board/+"
    assert T.everything == "plaza/#"
    assert T.board_tree == "plaza/board/#"
    assert T.events_tree == "plaza/events/#"
    assert T.user_tree("player1") == "plaza/users/player1/#"
    assert T.requests_by("player1") == "plaza/devices/+/requests/player1"
    assert T.bench_echo == "plaza/bench/echo"


@given(device=valid_ids, user=valid_ids)
def test_every_per_device_and_per_user_topic_parses_back_to_the_ids_it_was_built_from(
    device: str, user: str
) -> None:
    assert T.parse(T.presence(device)) == DeviceTopic(device, DeviceChannel.PRESENCE)
    assert T.parse(T.state(device)) == DeviceTopic(device, DeviceChannel.STATE)
    assert T.parse(T.cmd(device)) == DeviceTopic(device, DeviceChannel.CMD)
    assert T.parse(T.request(device, user)) == RequestTopic(device, user)
    assert T.parse(T.board(device)) == BoardTopic(device)
    assert T.parse(T.replies(user)) == UserTopic(user, "replies")
    assert T.parse(T.notifications(user)) == UserTopic(user, "notifications")


@pytest.mark.parametrize("bad", INVALID_IDS)
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda bad: T.presence(bad), id="presence"),
        pytest.param(lambda bad: T.state(bad), id="state"),
        pytest.param(lambda bad: T.cmd(bad), id="cmd"),
        pytest.param(lambda bad: T.request(bad, "player1"), id="request-device"),
        pytest.param(lambda bad: T.request("pc-01", bad), id="request-user"),
        pytest.param(lambda bad: T.replies(bad), id="replies"),
        pytest.param(lambda bad: T.notifications(bad), id="notifications"),
        pytest.param(lambda bad: T.board(bad), id="board"),
        pytest.param(lambda bad: T.user_tree(bad), id="user-tree"),
        pytest.param(lambda bad: T.requests_by(bad), id="requests-by"),
    ],
)
def test_a_builder_refuses_an_id_that_is_not_a_single_safe_topic_level(
    build: Callable[[str], str], bad: str
) -> None:
    with pytest.raises(TopicError, match="invalid"):
        build(bad)


@pytest.mark.parametrize("bad", INVALID_IDS)
def test_valid_id_names_what_was_invalid_in_its_error(bad: str) -> None:
    with pytest.raises(TopicError, match=r"invalid device id"):
        valid_id(bad, "device id")


@given(ident=valid_ids)
def test_valid_id_returns_every_accepted_id_unchanged(ident: str) -> None:
    assert valid_id(ident) == ident


def test_an_id_of_exactly_48_characters_is_accepted() -> None:
    assert T.board("x" * 48) == "plaza/board/" + "x" * 48


@pytest.mark.parametrize(
    "topic",
    [
        "plaza",
        "plaza/",
        "plaza/board",
        "plaza/board/",
        "plaza/board/pc-01/extra",
        "plaza/board/+",
        "plaza/board/#",
        "plaza/devices/pc-01",
        "plaza/devices/pc-01/firmware",
        "plaza/devices/pc-01/presence/extra",
        "plaza/devices/+/presence",
        "plaza/devices/PC 01/presence",
        "plaza/devices/pc-01/requests",
        "plaza/devices/pc-01/requests/",
        "plaza/devices/pc-01/requests/+",
        "plaza/devices/pc-01/replies/player1",
        "plaza/users/player1",
        "plaza/users/player1/secrets",
        "plaza/users/Player1/replies",
        "plaza/events/devices",
        "plaza/admin/alerts",
        "plaza/notices",
        "plaza/services/bridge",
        "plaza/services/+/status",
        "plaza/services/bridge/status/extra",
        "plaza/services/bridge/heartbeat",
        "plaza/unknown/x/y",
        "elsewhere/devices/pc-01/presence",
        "/plaza/devices/pc-01/presence",
        "Plaza/devices/pc-01/presence",
        "$SYS/broker",
        "$SYS/broker/",
        "$SYS/other/uptime",
        "",
    ],
)
def test_parse_refuses_a_topic_outside_the_incoming_contract(topic: str) -> None:
    with pytest.raises(TopicError, match="unknown topic"):
        T.parse(topic)


def test_the_brokers_own_figures_parse_to_their_sys_path_whatever_the_root() -> None:
    assert T.parse("$SYS/broker/uptime") == BrokerSysTopic("uptime")
    assert Topics("arcade-2").parse("$SYS/broker/clients/connected") == BrokerSysTopic(
        "clients/connected"
    )


def test_a_custom_root_is_used_by_every_builder_and_by_parse() -> None:
    venue = Topics("arcade-2")
    assert venue.presence("pc-01") == "arcade-2/devices/pc-01/presence"
    assert venue.request("pc-01", "player1") == "arcade-2/devices/pc-01/requests/player1"
    assert venue.replies("player1") == "arcade-2/users/player1/replies"
    assert venue.board("pc-01") == "arcade-2/board/pc-01"
    assert venue.device_events == "arcade-2/events/devices"
    assert venue.notices == "arcade-2/notices"
    assert venue.everything == "arcade-2/#"
    assert venue.all_requests == "arcade-2/devices/+/requests/+"
    assert venue.parse("arcade-2/board/pc-01") == BoardTopic("pc-01")
    assert venue.parse("arcade-2/devices/pc-01/requests/p1") == RequestTopic("pc-01", "p1")


def test_a_venue_does_not_parse_the_topics_of_another_root() -> None:
    with pytest.raises(TopicError, match="unknown topic"):
        Topics("arcade-2").parse("plaza/board/pc-01")
    with pytest.raises(TopicError, match="unknown topic"):
        T.parse("arcade-2/board/pc-01")


@pytest.mark.parametrize("root", ["", "+", "#", "a/b", "Plaza", "$SYS"])
def test_a_root_that_is_not_a_single_safe_level_is_refused(root: str) -> None:
    with pytest.raises(TopicError, match="invalid topic root"):
        Topics(root)


def test_a_topic_error_is_a_value_error_so_generic_handlers_catch_it() -> None:
    assert issubclass(TopicError, ValueError)


def test_parsed_topics_are_frozen_values() -> None:
    parsed = T.parse("plaza/board/pc-01")
    assert isinstance(parsed, BoardTopic)
    with pytest.raises(FrozenInstanceError):
        parsed.device = "pc-02"  # type: ignore[misc]


def test_a_services_status_topic_is_built_and_parsed_back() -> None:
    topic = T.service_status(BRIDGE_SERVICE)
    assert topic == "plaza/services/bridge/status"
    assert T.parse(topic) == ServiceStatusTopic("bridge")
    assert T.all_service_status == "plaza/services/+/status"
    with pytest.raises(TopicError):
        T.service_status("bridge/#")
