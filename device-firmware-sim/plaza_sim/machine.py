"""One simulated game machine: its own MQTT connection, a persisted epoch, sessions, faults.

Connection sequence (each connection gets a new epoch E):
1. CONNECT with a retained will ``{online:false, epoch:E}`` (MQTT 5, optional will delay);
2. publish the retained birth ``{online:true, epoch:E}``, then subscribe to its own cmd and
   presence topics, then publish the retained state (seq restarts at 0 for each epoch);
3. if the presence topic ever says offline while connected (a late will of an older
   connection overwrote the retained birth), publish the birth again.

The venue floor (docs/protocol.md, "Commands to a machine"): the machine keeps every ``lock``
by its reason, and no walk-in starts while any is on (:meth:`Machine.walk_in`); a player who
arrives types their code (:meth:`Machine.start_session_with_code`; the simulator's players
do, plaza_sim/arrivals.py), which a locked machine takes. A warned walk-in
(``session_warning``) gets up with probability ``leave_on_warning`` or plays on into the
slot, where the bridge ends the session (``strict``) or tells staff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plaza.messages import (
    RESERVATION_LOCK,
    CommandName,
    DeviceCommand,
    DeviceState,
    MachineState,
    PayloadError,
    Presence,
    Session,
    decode,
    now,
)
from plaza.topics import Topics
from plaza_sim.epochs import EpochStore
from plaza_sim.reconnect import ClosedBeforeConnack, Reconnect, never_sent, refused
from plaza_sim.relay import Relay

log = logging.getLogger(__name__)
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
FIRMWARE = "plaza-sim/1.0"


@dataclass(frozen=True, slots=True)
class MachineConfig:
    device: str
    password: str
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive: int = 10
    will_delay: int = 0
    topic_root: str = "plaza"
    via_relay: bool = False
    #: MQTT over TLS: how the machine verifies the broker (shared by a whole fleet)
    tls: ssl.SSLContext | None = None


@dataclass
class MachineStats:
    connects: int = 0
    rebirths: int = 0
    sessions: int = 0
    commands: int = 0
    bad_commands: int = 0
    #: session_warning commands received, and sessions ended for a reservation (a walk-in
    #: that overran into a reserved slot)
    warnings: int = 0
    bumped: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class Machine:
    def __init__(
        self,
        config: MachineConfig,
        epochs: EpochStore,
        *,
        autoplay: bool = True,
        speed: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.device = config.device
        self.topics = Topics(config.topic_root)
        self.epochs = epochs
        self.autoplay = autoplay
        self.speed = speed
        self.rng = rng or random.Random()
        self.stats = MachineStats()
        self.connected = asyncio.Event()
        self.state = MachineState.IDLE
        self.session: Session | None = None
        self.fault: str | None = None
        #: the locks the bridge put on the machine, by reason ("maintenance", or
        #: "reservation:<id>" for each reservation it is kept for): while any is on, no walk-in
        #: may start (a reservation's code still may)
        self.locks: set[str] = set()
        #: the last session_warning: (minutes left, reason)
        self.warning: tuple[int, str] | None = None
        #: a warned walk-in leaves with this probability instead of overrunning into the slot
        self.leave_on_warning = 0.5
        #: the code of the last session the bridge started (``start_session``): a player at
        #: the machine sees their code taken (plaza_sim/arrivals.py)
        self.started_code: str | None = None
        self.epoch = epochs.current(config.device)
        self.seq = -1
        self.relay: Relay | None = None
        self._client: aiomqtt.Client | None = None
        self._down_until = 0.0
        self._stopping = False
        #: the last connection got as far as ``connected`` (the schedule starts again)
        self._was_up = False
        #: the epoch of the last attempt, and one a refused attempt left unused
        self._attempt_epoch = 0
        self._unused_epoch: int | None = None

    @property
    def locked(self) -> bool:
        return bool(self.locks)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Stay connected forever: reconnect on the schedule of :mod:`plaza_sim.reconnect`
        (jittered exponential backoff, kept short while nothing listens), a new epoch for
        every connection."""
        loop = asyncio.get_running_loop()
        if self.config.via_relay:
            self.relay = Relay(self.config.host, self.config.port)
            await self.relay.start()
        schedule = Reconnect(rng=self.rng)
        try:
            while not self._stopping:
                wait = self._down_until - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                was_refused = False
                try:
                    await self._connection()
                except aiomqtt.MqttError as exc:
                    log.debug("%s: connection ended: %s", self.device, exc)
                    was_refused = refused(exc)
                    if never_sent(exc):  # the broker never saw this epoch: use it next time
                        self._unused_epoch = self._attempt_epoch
                finally:
                    self.connected.clear()
                    self._client = None
                if self._stopping:
                    break
                if self._was_up:
                    schedule.connected()
                await asyncio.sleep(schedule.next_delay(refused=was_refused))
        finally:
            if self.relay is not None:
                await self.relay.close()

    async def stop(self) -> None:
        """A clean shutdown: DISCONNECT, so the broker does not send the will."""
        self._stopping = True
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2):  # a half-dead connection may never answer
                    await self._client.__aexit__(None, None, None)

    def _client_for(self, epoch: int) -> aiomqtt.Client:
        port = self.relay.port if self.relay is not None else self.config.port
        will_props = None
        if self.config.will_delay:
            will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            will_props.WillDelayInterval = self.config.will_delay
        return _Client(
            self.config.host,
            port,
            username=self.device,
            password=self.config.password,
            identifier=self.device,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(
                self.topics.presence(self.device),
                Presence(online=False, epoch=epoch).encode(),
                qos=1,
                retain=True,
                properties=will_props,
            ),
            keepalive=self.config.keepalive,
            socket_options=NODELAY,
            tls_context=self.config.tls,
            timeout=10,
        )

    async def _connection(self) -> None:
        # A refused TCP connect never sent its CONNECT (nor its will): its epoch is still
        # unused, and not bumping it spares a write of the epoch file per attempt while the
        # broker is down (0.5-1 ms each with 500-2,500 machines per process, on the loop).
        epoch = self._unused_epoch or self.epochs.bump(self.device)
        self._unused_epoch, self._attempt_epoch = None, epoch
        client = self._client_for(epoch)
        self._was_up = False
        async with client:
            self._client = client
            self.epoch, self.seq = epoch, -1
            self.stats.connects += 1
            try:
                async with asyncio.TaskGroup() as tg:
                    # Every wait below (a PUBACK, a SUBACK, a handler's publish) ends when the
                    # connection does: aiomqtt 2.5 waits out its whole timeout (10 s) for an
                    # acknowledgement that can no longer come.
                    tg.create_task(_until_lost(client))
                    await self._birth()
                    await client.subscribe(
                        [(self.topics.cmd(self.device), 1), (self.topics.presence(self.device), 1)]
                    )
                    await self._publish_state()
                    self.connected.set()
                    self._was_up = True
                    if self.autoplay:
                        tg.create_task(self._play())
                    await self._listen(client)
                    raise aiomqtt.MqttError("message stream ended")
            except* aiomqtt.MqttError as group:
                raise aiomqtt.MqttError(str(group.exceptions[0])) from group

    async def _birth(self) -> None:
        assert self._client is not None
        birth = Presence(online=True, epoch=self.epoch, ts=now(), fw=FIRMWARE)
        await self._client.publish(
            self.topics.presence(self.device), birth.encode(), qos=1, retain=True
        )

    async def _publish_state(self) -> None:
        if self._client is None:
            return
        self.seq += 1
        msg = DeviceState(
            state=self.state,
            epoch=self.epoch,
            seq=self.seq,
            session=self.session,
            fault=self.fault,
            ts=now(),
        )
        await self._client.publish(self.topics.state(self.device), msg.encode(), qos=1, retain=True)

    async def set_state(
        self, state: MachineState, session: Session | None = None, fault: str | None = None
    ) -> None:
        self.state, self.session, self.fault = state, session, fault
        await self._publish_state()

    # -- incoming ----------------------------------------------------------------------------
    async def _listen(self, client: aiomqtt.Client) -> None:
        cmd_topic = self.topics.cmd(self.device)
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.topic.matches(cmd_topic):
                await self._on_command(payload)
            elif payload:
                await self._on_presence(payload)

    async def _on_presence(self, payload: bytes) -> None:
        try:
            presence = decode(Presence, payload)
        except PayloadError:
            return
        if not presence.online:
            # A late will (or a stale retained birth) overwrote ours while we are connected.
            self.stats.rebirths += 1
            log.info(
                "%s: presence says offline (epoch %d) while connected; rebirth",
                self.device,
                presence.epoch,
            )
            await self._birth()

    async def _on_command(self, payload: bytes) -> None:
        try:
            cmd = decode(DeviceCommand, payload)
        except PayloadError as exc:
            self.stats.bad_commands += 1
            log.warning("%s: ignored bad command: %s", self.device, exc)
            return
        self.stats.commands += 1
        if cmd.cmd is CommandName.REBIRTH:
            await self._birth()
            await self._publish_state()
        elif cmd.cmd is CommandName.LOCK:
            self.locks.add(_lock_key(cmd))
        elif cmd.cmd is CommandName.UNLOCK:
            # a reservation's unlock lifts its own lock only (one of its reservation's, or
            # every reservation's when it names none); staff's lifts the rest
            if cmd.reason == RESERVATION_LOCK and cmd.reservation_id:
                self.locks.discard(_lock_key(cmd))
            elif cmd.reason == RESERVATION_LOCK:
                self.locks = {k for k in self.locks if not _is_reservation_lock(k)}
            else:
                self.locks = {k for k in self.locks if _is_reservation_lock(k)}
        elif cmd.cmd is CommandName.START_SESSION:
            self.started_code = cmd.session.reservation_code if cmd.session else None
            await self.set_state(MachineState.IN_USE, cmd.session or self._new_session(3600))
        elif cmd.cmd is CommandName.END_SESSION:
            if cmd.reason == RESERVATION_LOCK:
                self.stats.bumped += 1
            await self.set_state(MachineState.IDLE)
        elif cmd.cmd is CommandName.SESSION_WARNING:
            self.stats.warnings += 1
            self.warning = (cmd.minutes or 0, cmd.reason or "")
            walk_in = self.session is not None and not self.session.reservation_code
            if walk_in and self.autoplay and self.rng.random() < self.leave_on_warning:
                await self.set_state(MachineState.IDLE)  # the walk-in gets up in time
        elif cmd.cmd is CommandName.EXTEND_SESSION and self.session and cmd.session:
            # the reservation was extended: the session runs to its new end
            longer = self.session.model_copy(update={"ends_at": cmd.session.ends_at})
            await self.set_state(MachineState.IN_USE, longer)

    # -- behaviour ---------------------------------------------------------------------------
    def _new_session(self, seconds: float, code: str | None = None) -> Session:
        start = now()
        return Session(
            id=uuid.uuid4().hex[:12],
            started_at=start,
            ends_at=round(start + seconds, 3),
            reservation_code=code,
        )

    async def _play(self) -> None:
        """Walk-in play: idle for a while, a session of 20-90 minutes, idle again (scaled)."""
        while True:
            await asyncio.sleep(self.rng.uniform(60, 600) / self.speed)
            if self.locked or self.state is not MachineState.IDLE:
                continue
            minutes = self.rng.uniform(20, 90)
            # (a walk-in may overrun into a reserved slot: the bridge warns, then ends it)
            if not await self.walk_in(minutes):
                continue
            session = self.session
            await asyncio.sleep(minutes * 60 / self.speed)
            if self.session is session:  # nobody ended or replaced it meanwhile
                await self.set_state(MachineState.IDLE)

    async def start_session_with_code(self, code: str, minutes: float = 60) -> None:
        """A player typed a reservation's short code on the machine (a locked machine takes
        it: the lock keeps the seat for exactly this player)."""
        await self.set_state(MachineState.IN_USE, self._new_session(minutes * 60, code))

    async def walk_in(self, minutes: float = 60) -> bool:
        """A walk-in player sits down: a session without a code, unless the machine is
        locked (kept free for a reservation) or busy. True if it started."""
        if self.locked or self.state is not MachineState.IDLE:
            return False
        self.stats.sessions += 1
        await self.set_state(MachineState.IN_USE, self._new_session(minutes * 60))
        return True

    # -- faults ------------------------------------------------------------------------------
    def _count(self, kind: str) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1

    def crash(self, down_for: float = 0.0) -> None:
        """Close the socket without DISCONNECT (power cut, process crash); stay down a while."""
        self._count("crash")
        self._down_until = asyncio.get_running_loop().time() + down_for
        client = self._client
        if client is None:
            return
        sock = client._client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def silent_loss(self, down_for: float) -> None:
        """Stop all traffic without closing anything; the broker notices by keepalive only."""
        if self.relay is None:
            raise RuntimeError(f"{self.device} was not started with via_relay=True")
        self._count("silent")
        self.relay.blackhole()
        await asyncio.sleep(down_for)
        self.relay.restore()

    async def flap(self, times: int = 5, gap: float = 0.3) -> None:
        """Rapid reconnects: connect, drop, connect, drop..."""
        self._count("flap")
        for _ in range(times):
            await asyncio.wait_for(self.connected.wait(), timeout=30)
            self.crash()
            self.stats.faults["crash"] -= 1
            await asyncio.sleep(gap)

    async def report_fault(self, reason: str, down_for: float) -> None:
        """A hardware fault the machine itself reports (state ``fault``), repaired later."""
        self._count("fault")
        await self.set_state(MachineState.FAULT, fault=reason)
        await asyncio.sleep(down_for)
        await self.set_state(MachineState.IDLE)


class _Client(aiomqtt.Client):
    """aiomqtt's client, failing a connect at once when the connection closes before the
    broker's CONNACK: aiomqtt 2.5 ignores that close (its ``_on_disconnect`` returns early
    while not connected) and waits out its whole timeout for a CONNACK that cannot come."""

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any, **kwargs: Any) -> None:
        def fail() -> None:
            if not self._connected.done():
                self._connected.set_exception(ClosedBeforeConnack())

        # paho may call this from the executor thread that runs its blocking connect()
        self._loop.call_soon_threadsafe(fail)
        super()._on_disconnect(client, userdata, *args, **kwargs)


async def _until_lost(client: aiomqtt.Client) -> None:
    """Return never; raise MqttError as soon as ``client``'s connection is lost or closed.

    aiomqtt 2.5 keeps the connection's end on a private future (``_disconnected``), which only
    its message iterator watches; reading its exception here also keeps asyncio from
    reporting it as never retrieved."""
    gone = client._disconnected
    await asyncio.wait({gone})
    reason = None if gone.cancelled() else gone.exception()
    raise aiomqtt.MqttError(f"connection lost: {reason or 'disconnected'}")


def _lock_key(cmd: DeviceCommand) -> str:
    """A lock as the machine keeps it: its reason, and the reservation it is for."""
    reason = cmd.reason or "lock"
    return f"{reason}:{cmd.reservation_id}" if cmd.reservation_id else reason


def _is_reservation_lock(key: str) -> bool:
    return key == RESERVATION_LOCK or key.startswith(f"{RESERVATION_LOCK}:")
