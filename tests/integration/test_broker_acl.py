"""The broker's access control, proven on a real Mosquitto running broker-config/ with the
venue's dynamic-security roles (no bridge, no database).

How a denial is proven without sleeping
---------------------------------------
Mosquitto handles one connection's packets in order and queues messages to a subscriber in the
order it routed them. So an actor publishes the forbidden message at QoS 1, then a marker it is
allowed to publish; a watcher subscribed to both topics that has received the marker would have
received the forbidden message first, had the broker let it through. Where the actor may publish
nothing (the observer), the marker comes from the bridge account after the actor's PUBACK: the
broker routes a message before it acknowledges it. Subscriptions are proven the same way: the
bridge publishes on the forbidden topic, then on a topic the subscriber may read.

Each test prints a table of what it tried (run with ``-s`` to see it) and fails with that table.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from plaza.acl import DYNSEC_COMMAND, DYNSEC_RESPONSE
from tests.conftest import BrokerHandle, Seen, Watch, close_dead_client
from venue.accounts import API_USER, BRIDGE_USER, OBSERVER_USER

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FAILURE = 0x80  # MQTT 5: every reason code from 0x80 on is a failure
NOT_AUTHORIZED = 0x87


# -- accounts --------------------------------------------------------------------------------
def password(broker: BrokerHandle, user: str) -> str:
    s = broker.secrets
    services = {
        BRIDGE_USER: s.bridge,
        f"{BRIDGE_USER}-intake": s.bridge,  # the bridge's intake connection's account
        API_USER: s.api,
        OBSERVER_USER: s.observer,
    }
    if user in services:
        return services[user]
    return s.devices.get(user) or s.players[user]


def connect(broker: BrokerHandle, user: str, **kw: Any) -> aiomqtt.Client:
    return broker.client(user, password(broker, user), **kw)


def code_of(reason: object) -> int:
    """The numeric value of a paho ReasonCode (MQTT 5) or a plain int code."""
    value = getattr(reason, "value", reason)
    assert isinstance(value, int), reason
    return value


class Acked:
    """One client whose QoS 1 publishes return the PUBACK reason code (aiomqtt waits for the
    PUBACK but drops its code, so the paho callback is wrapped)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.codes: list[int] = []
        paho = client._client
        forward: Callable[..., None] = paho.on_publish  # type: ignore[assignment]

        def record(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            self.codes.append(code_of(reason))
            forward(c, userdata, mid, reason, props)

        paho.on_publish = record

    async def publish(self, topic: str, payload: bytes) -> int:
        before = len(self.codes)
        await self.client.publish(topic, payload, qos=1)
        assert len(self.codes) == before + 1, "one PUBACK per QoS 1 publish"
        return self.codes[-1]


# -- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    actor: str
    action: str
    topic: str
    expected: bool
    observed: bool
    code: int | None = None

    @property
    def ok(self) -> bool:
        return self.expected == self.observed


def yes_no(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def table(rows: Sequence[Row]) -> str:
    width = max(len(r.topic) for r in rows)
    lines = [f"{'actor':<10} {'action':<10} {'topic':<{width}} {'want':<5} {'got':<5} code"]
    for r in rows:
        code = "" if r.code is None else f"0x{r.code:02x}"
        mark = "" if r.ok else "  <-- MISMATCH"
        lines.append(
            f"{r.actor:<10} {r.action:<10} {r.topic:<{width}} {yes_no(r.expected):<5} "
            f"{yes_no(r.observed):<5} {code}{mark}"
        )
    return "\n".join(lines)


def report(rows: Sequence[Row]) -> None:
    text = table(rows)
    print("\n" + text)
    assert all(r.ok for r in rows), "\n" + text


def tagged(kind: str) -> bytes:
    return f"{kind}-{uuid.uuid4().hex}".encode()


def payload_is(payload: bytes) -> Callable[[Seen], bool]:
    return lambda seen: seen.payload == payload


def verdict(allowed: bool, *signals: bool) -> bool:
    """What the broker did, when every signal (PUBACK/SUBACK code, delivery) agrees; when they
    contradict each other, the opposite of ``allowed``, so that the row fails."""
    return signals[0] if len(set(signals)) == 1 else not allowed


# -- probes ----------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def watching_everything(broker: BrokerHandle) -> AsyncIterator[Watch]:
    async with Watch(broker.observer(), [broker.topics.everything]) as watch:
        yield watch


async def probe_publishes(
    broker: BrokerHandle,
    actor: str,
    cases: Sequence[tuple[str, bool]],
    marker_topic: str | None,
) -> list[Row]:
    """For each (topic, allowed): the actor publishes there at QoS 1, then a marker goes out
    (from the actor on ``marker_topic``, else from the bridge after the actor's PUBACK)."""
    rows: list[Row] = []
    async with (
        watching_everything(broker) as watch,
        connect(broker, actor) as client,
        connect(broker, BRIDGE_USER) as bridge,
    ):
        acked = Acked(client)
        for topic, allowed in cases:
            probe, marker = tagged("probe"), tagged("marker")
            code = await acked.publish(topic, probe)
            if marker_topic is not None:
                assert await acked.publish(marker_topic, marker) < FAILURE
            else:
                await bridge.publish(broker.topics.notices, marker, qos=1)
            await watch.wait_for(payload_is(marker))
            delivered = [s for s in watch.seen if s.payload == probe]
            assert all(s.topic == topic for s in delivered)
            observed = verdict(allowed, bool(delivered), code < FAILURE)
            rows.append(Row(actor, "publish", topic, allowed, observed, code))
    return rows


async def probe_subscriptions(
    broker: BrokerHandle,
    actor: str,
    own_topic: str,
    cases: Sequence[tuple[str, str, bool]],
) -> list[Row]:
    """For each (filter, topic, allowed): the actor subscribes to the filter; the bridge then
    publishes on ``topic`` and a marker on ``own_topic`` (which the actor may read)."""
    rows: list[Row] = []
    async with (
        Watch(connect(broker, actor), [own_topic]) as mine,
        connect(broker, BRIDGE_USER) as bridge,
    ):
        for topic_filter, topic, allowed in cases:
            (reason,) = await mine.client.subscribe(topic_filter, qos=1)
            code = code_of(reason)
            probe, marker = tagged("probe"), tagged("marker")
            await bridge.publish(topic, probe, qos=1)
            await bridge.publish(own_topic, marker, qos=1)
            await mine.wait_for(payload_is(marker))
            received = any(s.payload == probe for s in mine.seen)
            observed = verdict(allowed, received, code < FAILURE)
            rows.append(Row(actor, "subscribe", topic_filter, allowed, observed, code))
            await mine.client.unsubscribe(topic_filter)
    return rows


# -- authentication --------------------------------------------------------------------------
async def test_an_anonymous_client_is_refused(broker: BrokerHandle) -> None:
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with broker.client(None, None):
            pass
    assert code_of(info.value.rc) == NOT_AUTHORIZED


@pytest.mark.parametrize(
    ("user", "wrong"),
    [
        pytest.param("pc-01", "not-the-password", id="machine"),
        pytest.param("player1", "not-the-password", id="player"),
        pytest.param(BRIDGE_USER, "not-the-password", id="bridge"),
        pytest.param(OBSERVER_USER, "", id="observer-empty-password"),
        pytest.param("pc-01", "<password of pc-02>", id="machine-with-another-machines-password"),
        pytest.param("player1", "<password of player2>", id="player-with-another-players-password"),
        pytest.param("nobody", "whatever", id="unknown-user"),
    ],
)
async def test_a_wrong_password_is_refused(broker: BrokerHandle, user: str, wrong: str) -> None:
    others = {"<password of pc-02>": "pc-02", "<password of player2>": "player2"}
    if wrong in others:
        wrong = password(broker, others[wrong])
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with broker.client(user, wrong):
            pass
    assert code_of(info.value.rc) >= FAILURE


async def test_every_provisioned_account_connects_with_its_own_password(
    broker: BrokerHandle,
) -> None:
    intake = f"{BRIDGE_USER}-intake"
    services = [BRIDGE_USER, intake, API_USER, OBSERVER_USER]
    for user in [*services, *broker.secrets.devices, *broker.secrets.players]:
        async with connect(broker, user):
            pass


async def test_every_account_is_refused_under_any_client_id_but_its_own(
    broker: BrokerHandle,
) -> None:
    """Identity binding: nobody takes over the bridge's, the api's, a machine's or another
    person's session by connecting under its client id."""
    intake = f"{BRIDGE_USER}-intake"  # the bridge's second connection
    users = [BRIDGE_USER, intake, API_USER, OBSERVER_USER, "pc-01", "player1", "player2"]
    for user in users:
        for other in users:
            if other == user:
                continue
            with pytest.raises(aiomqtt.MqttCodeError) as info:
                async with connect(broker, user, identifier=broker.client_ids[other]):
                    pass
            assert code_of(info.value.rc) == NOT_AUTHORIZED, (user, other)
        async with connect(broker, user):  # under its own id
            pass


# -- machines --------------------------------------------------------------------------------
async def test_a_machine_cannot_publish_another_machines_presence_or_state(
    broker: BrokerHandle,
) -> None:
    t = broker.topics
    rows = await probe_publishes(
        broker,
        "pc-01",
        [
            (t.presence("pc-02"), False),
            (t.state("pc-02"), False),
            (t.presence("console-01"), False),
            (t.presence("pc-01"), True),
            (t.state("pc-01"), True),
        ],
        marker_topic=t.state("pc-01"),
    )
    report(rows)
    assert all(r.code == NOT_AUTHORIZED for r in rows if not r.expected)


async def test_a_machine_publishes_nothing_but_its_own_presence_and_state(
    broker: BrokerHandle,
) -> None:
    t = broker.topics
    forbidden = [
        t.board("pc-01"),
        t.cmd("pc-01"),
        t.cmd("pc-02"),
        t.request("pc-01", "player1"),
        t.replies("player1"),
        t.notifications("player1"),
        t.device_events,
        t.reservation_events,
        t.admin_alerts,
        t.notices,
    ]
    rows = await probe_publishes(
        broker, "pc-01", [(topic, False) for topic in forbidden], marker_topic=t.state("pc-01")
    )
    report(rows)


async def test_a_machine_cannot_subscribe_to_another_machines_cmd_topic(
    broker: BrokerHandle,
) -> None:
    t = broker.topics
    rows = await probe_subscriptions(
        broker,
        "pc-01",
        own_topic=t.cmd("pc-01"),
        cases=[
            (t.cmd("pc-02"), t.cmd("pc-02"), False),
            (f"{t.root}/devices/+/cmd", t.cmd("pc-02"), False),
            (t.everything, t.cmd("pc-02"), False),
            ("#", t.cmd("pc-02"), False),
            (t.state("pc-02"), t.state("pc-02"), False),
            (t.board("pc-01"), t.board("pc-01"), False),
            (t.presence("pc-01"), t.presence("pc-01"), True),
        ],
    )
    report(rows)
    assert all(r.code == NOT_AUTHORIZED for r in rows if not r.expected)

    # The command for pc-02 that pc-01 could not see does reach pc-02.
    async with (
        Watch(connect(broker, "pc-02"), [t.cmd("pc-02")]) as pc02,
        connect(broker, BRIDGE_USER) as bridge,
    ):
        command = tagged("cmd")
        await bridge.publish(t.cmd("pc-02"), command, qos=1)
        seen = await pc02.wait_for(payload_is(command))
        assert seen.topic == t.cmd("pc-02")


async def test_a_machine_cannot_plant_a_will_on_another_machines_presence(
    broker: BrokerHandle,
) -> None:
    """A will is checked when the broker publishes it. Taking the session over (same client id)
    makes the broker publish the old connection's will before it accepts the new one."""
    t = broker.topics
    rows: list[Row] = []
    for topic, allowed in [(t.presence("pc-02"), False), (t.presence("pc-01"), True)]:
        async with watching_everything(broker) as watch:
            will = tagged("will")
            old = connect(broker, "pc-01", will=aiomqtt.Will(topic, will, qos=1))
            await old.__aenter__()
            marker = tagged("marker")
            async with connect(broker, "pc-01") as new:  # its own id: the only one it may use
                await new.publish(t.state("pc-01"), marker, qos=1)
            await watch.wait_for(payload_is(marker))
            await close_dead_client(old)  # taken over: already disconnected
            delivered = any(s.payload == will for s in watch.seen)
            rows.append(Row("pc-01", "will", topic, allowed, delivered))
    report(rows)


# -- observer --------------------------------------------------------------------------------
async def test_the_observer_reads_every_topic_under_the_root(broker: BrokerHandle) -> None:
    t = broker.topics
    topics = [
        t.presence("pc-01"),
        t.state("pc-01"),
        t.cmd("pc-01"),
        t.request("pc-01", "player1"),
        t.replies("player2"),
        t.notifications("player3"),
        t.board("vr-01"),
        t.device_events,
        t.reservation_events,
        t.admin_alerts,
        t.notices,
    ]
    rows: list[Row] = []
    async with watching_everything(broker) as watch, connect(broker, BRIDGE_USER) as bridge:
        for topic in topics:
            probe = tagged("probe")
            await bridge.publish(topic, probe, qos=1)
            with contextlib.suppress(TimeoutError):
                await watch.wait_for(payload_is(probe), timeout=2)
            received = any(s.payload == probe and s.topic == topic for s in watch.seen)
            rows.append(Row(OBSERVER_USER, "read", topic, True, received))
    report(rows)


async def test_the_observers_publishes_are_dropped(broker: BrokerHandle) -> None:
    t = broker.topics
    forbidden = [
        t.presence("pc-01"),
        t.state("pc-01"),
        t.cmd("pc-01"),
        t.request("pc-01", "player1"),
        t.request("pc-01", OBSERVER_USER),
        t.replies("player1"),
        t.board("pc-01"),
        t.device_events,
        t.admin_alerts,
        t.notices,
    ]
    rows = await probe_publishes(
        broker, OBSERVER_USER, [(topic, False) for topic in forbidden], marker_topic=None
    )
    report(rows)
    assert all(r.code == NOT_AUTHORIZED for r in rows)


# -- players ---------------------------------------------------------------------------------
async def test_a_player_can_publish_only_requests_in_their_own_name(
    broker: BrokerHandle,
) -> None:
    t = broker.topics
    assert {"player1", "player2"} <= set(broker.secrets.players)
    rows = await probe_publishes(
        broker,
        "player1",
        [
            (t.request("pc-01", "player1"), True),
            (t.request("vr-01", "player1"), True),
            (t.request("not-a-machine", "player1"), True),  # the bridge answers unknown devices
            (t.request("pc-01", "player2"), False),
            (t.request("pc-01", API_USER), False),
            (t.request("pc-01", BRIDGE_USER), False),
            (t.venue_request("player1"), True),
            (t.venue_request("player2"), False),
            (t.venue_request(API_USER), False),
            (t.waitlist("player1"), False),
            (t.waitlist_events, False),
            (t.presence("pc-01"), False),
            (t.state("pc-01"), False),
            (t.cmd("pc-01"), False),
            (t.board("pc-01"), False),
            (t.replies("player1"), False),
            (t.notifications("player2"), False),
            (t.device_events, False),
            (t.reservation_events, False),
            (t.admin_alerts, False),
            (t.notices, False),
        ],
        marker_topic=t.request("pc-01", "player1"),
    )
    report(rows)


async def test_a_player_cannot_subscribe_to_another_players_replies(broker: BrokerHandle) -> None:
    t = broker.topics
    other = t.replies("player2")
    rows = await probe_subscriptions(
        broker,
        "player1",
        own_topic=t.replies("player1"),
        cases=[
            (other, other, False),
            (f"{t.root}/users/player2/#", other, False),
            (f"{t.root}/users/+/replies", other, False),
            (f"{t.root}/users/#", other, False),
            (t.everything, other, False),
            ("#", other, False),
            (t.notifications("player2"), t.notifications("player2"), False),
            (t.request("pc-01", "player2"), t.request("pc-01", "player2"), False),
            (t.all_requests, t.request("pc-01", "player2"), False),
            (t.cmd("pc-01"), t.cmd("pc-01"), False),
            (t.presence("pc-01"), t.presence("pc-01"), False),
            (t.admin_alerts, t.admin_alerts, False),
            (t.waitlist("player2"), t.waitlist("player2"), False),
            (t.venue_request("player2"), t.venue_request("player2"), False),
            (t.notifications("player1"), t.notifications("player1"), True),
            (t.waitlist("player1"), t.waitlist("player1"), True),
            (t.waitlist_events, t.waitlist_events, True),
            (t.all_board, t.board("pc-01"), True),
            (t.device_events, t.device_events, True),
            (t.reservation_events, t.reservation_events, True),
            (t.notices, t.notices, True),
        ],
    )
    report(rows)
    assert all(r.code == NOT_AUTHORIZED for r in rows if not r.expected)

    # The reply player1 could not see does reach player2.
    async with (
        Watch(connect(broker, "player2"), [other]) as player2,
        connect(broker, BRIDGE_USER) as bridge,
    ):
        reply = tagged("reply")
        await bridge.publish(other, reply, qos=1)
        assert (await player2.wait_for(payload_is(reply))).topic == other


# -- broker identities -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("actor", "allowed"),
    [
        ("pc-01", False),
        ("player1", False),
        (OBSERVER_USER, False),
        (f"{BRIDGE_USER}-intake", False),
        # the bridge disables a flooding player's accounts (dynamic security has no finer
        # right than the whole control topic)
        (BRIDGE_USER, True),
        (API_USER, True),
    ],
)
async def test_only_the_api_and_bridge_accounts_can_create_broker_accounts(
    broker: BrokerHandle, actor: str, allowed: bool
) -> None:
    newcomer, secret = f"new-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12)
    command = {"commands": [{"command": "createClient", "username": newcomer, "password": secret}]}
    # Every actor tries to read the answers; only the services may, and only they get one.
    async with Watch(connect(broker, actor), [DYNSEC_RESPONSE]) as control:
        code = await Acked(control.client).publish(DYNSEC_COMMAND, json.dumps(command).encode())
        if code < FAILURE:
            answer = await control.wait_for(lambda s: s.topic == DYNSEC_RESPONSE)
            assert json.loads(answer.payload) == {"responses": [{"command": "createClient"}]}
    refusal: int | None = None
    try:
        async with broker.client(newcomer, secret):
            pass
    except aiomqtt.MqttCodeError as exc:
        refusal = code_of(exc.rc)
    assert refusal in (None, NOT_AUTHORIZED)
    created = refusal is None
    observed = verdict(allowed, created, code < FAILURE)
    report([Row(actor, "dynsec", "createClient " + newcomer, allowed, observed, code)])


def test_a_port_taken_before_mosquitto_binds_it_is_replaced_by_a_free_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """free_port() only finds a port free at that moment: a parallel test run may bind it
    first. The brokers the tests start then move to other ports instead of failing."""
    import socket

    from venue import broker as broker_module

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    picks = iter([port])
    real = broker_module.free_port
    monkeypatch.setattr(
        broker_module, "free_port", lambda host="127.0.0.1": next(picks, 0) or real()
    )
    try:
        started = broker_module.start_on_free_ports(tmp_path / "b", [], [])
        try:
            assert port not in (started.port, started.ws_port)
            assert started.proc is not None
            assert started.proc.poll() is None
        finally:
            started.stop()
    finally:
        taken.close()
