"""CoolingOff: a player who keeps flooding is disabled in the broker, and enabled again later.

The flood budget (:class:`~bridge.flood.FloodGate`) flags a sender once it has dropped
``PLAZA_FLOOD_DISABLE_AFTER`` of its messages in a row. Then, in this order:

1. a ``cool_off`` row (SQL) records the player, ``until`` (now + ``PLAZA_COOL_OFF``) and
   every broker account of theirs: their own name and each browser session's
   (``broker_session``). From now on the api refuses them new broker credentials
   (429 ``cooling_off``);
2. dynamic-security ``disableClient`` for each of those accounts, sent on the bridge's main
   connection (never behind the flood): the broker disconnects them and refuses them at
   CONNECT;
3. an admin alert ``player_disabled``, and ``plaza_bridge_senders_disabled_total``.

At ``until`` the accounts are enabled again (``enableClient``) and the row deleted. The
rows, not memory, say what is due: a bridge started after a crash (or another bridge on the
same database) enables what is due too. Every few seconds the due rows are read again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select

from bridge.alerts import make_alert
from bridge.context import BridgeContext
from bridge.flood import FloodGate
from bridge.link import Link
from plaza import dynsec
from plaza.acl import DYNSEC_COMMAND
from plaza.messages import AdminAlert, AlertSeverity
from plaza.tables import BrokerSession, CoolOff

log = logging.getLogger(__name__)
#: due rows are read again at least this often (seconds)
SWEEP_EVERY = 5.0


class DynsecUnavailable(RuntimeError):
    """The broker did not take or answer a dynamic-security command."""


class Dynsec:
    """Dynamic-security commands on the bridge's main connection: each carries
    ``correlationData``, and :meth:`answer` gets every response the plugin publishes (the
    main loop hands it what arrives on the response topic)."""

    def __init__(self, link: Link, timeout: float) -> None:
        self._link = link
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def answer(self, payload: bytes) -> None:
        try:
            found = dynsec.responses(payload)
        except ValueError as exc:
            log.warning("%s", exc)
            return
        for cid, response in found:
            waiter = self._waiting.pop(cid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    def send(self, commands: Sequence[dict[str, Any]]) -> asyncio.Task[list[dict[str, Any]]]:
        """Send ``commands`` as one list now, without waiting (the packet is queued on the
        client at once, so a packet reader may call this); a task that ends with the
        plugin's response to each, in order (or DynsecUnavailable)."""
        client = self._link.client
        if client is None:
            raise DynsecUnavailable("not connected to the broker")
        loop = asyncio.get_running_loop()
        ids = [uuid.uuid4().hex for _ in commands]
        futures = [loop.create_future() for _ in commands]
        self._waiting.update(zip(ids, futures, strict=True))
        if not client.publish_now(DYNSEC_COMMAND, dynsec.tagged(commands, ids), qos=1):
            for i in ids:
                self._waiting.pop(i, None)
            raise DynsecUnavailable("the client is not connected")
        return loop.create_task(self._answers(ids, futures))

    async def run(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` as one list; the plugin's response to each, in order."""
        return await self.send(commands)

    async def _answers(
        self, ids: list[str], futures: list[asyncio.Future[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(self._timeout):
                return list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            raise DynsecUnavailable("no answer to the dynamic-security command") from exc
        finally:
            for i in ids:
                self._waiting.pop(i, None)


def _errors(responses: list[dict[str, Any]]) -> list[str]:
    """The errors of ``responses`` that matter (an account gone meanwhile does not)."""
    return [
        f"{r.get('command')}: {r['error']}"
        for r in responses
        if r.get("error") and "not found" not in str(r["error"]).lower()
    ]


class CoolingOff:
    def __init__(
        self,
        ctx: BridgeContext,
        *,
        gate: FloodGate,
        dynsec: Dynsec,
        raise_alert: Callable[[AdminAlert], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._gate = gate
        self._dynsec = dynsec
        self._raise = raise_alert
        self._clock = clock
        self._length = ctx.settings.cool_off
        #: flagged players, each with the disabling of its own account already under way
        self._flagged: asyncio.Queue[tuple[str, asyncio.Task[list[dict[str, Any]]] | None]] = (
            asyncio.Queue()
        )
        #: when the earliest cooling-off this bridge knows of ends (Unix time)
        self._next_due: float | None = None
        #: players disabled by this bridge so far
        self.disabled = 0

    def flooding(self, user: str) -> None:
        """The gate's ``on_flood``, called inside the intake's packet reader: the account
        named in the topic is disabled right here (the command is queued on the main
        connection before the reader reads on), the rest is queued for :meth:`run`."""
        try:
            own: asyncio.Task[list[dict[str, Any]]] | None = self._dynsec.send(
                [dynsec.disable_client(user)]
            )
        except DynsecUnavailable:
            own = None
        self._flagged.put_nowait((user, own))

    async def run(self) -> None:
        loaded = False
        while True:
            wait = SWEEP_EVERY if loaded else 0.0
            if self._next_due is not None:
                wait = max(0.0, min(wait, self._next_due - self._clock()))
            try:
                user, own = await asyncio.wait_for(self._flagged.get(), wait)
            except TimeoutError:
                try:  # the database may be away: the next sweep tries again
                    if not loaded:
                        await self._load()
                        loaded = True
                    await self._enable_due()
                except Exception:
                    self._ctx.metrics.db_errors += 1
                    log.exception("cooling-offs not read; trying again in %.0f s", SWEEP_EVERY)
                self._gate.prune(time.monotonic())
                continue
            try:
                await self.disable(user, own)
            except Exception:  # the drops go on; a later flood flags the player again
                log.exception("could not disable %s", user, extra={"sender": user})
                self._gate.release(user)

    async def _load(self) -> None:
        """The cooling-offs in SQL (a restart, or another bridge's): drop their messages."""
        async with self._ctx.reads() as session:
            rows = list((await session.exec(select(CoolOff))).all())
        self._gate.cooling(r.user for r in rows)
        for row in rows:
            self._due(row.until.timestamp())

    def _due(self, at: float) -> None:
        self._next_due = at if self._next_due is None else min(self._next_due, at)

    async def disable(
        self, user: str, own: asyncio.Task[list[dict[str, Any]]] | None = None
    ) -> None:
        """Disable every account of ``user`` and record the cooling-off; raise the alert.

        The account named in the flood's topic is disabled at once, while the row is
        written (a commit batch may hold the write gate for some milliseconds, and every one
        of them lets more of the flood through the broker); the browser sessions' accounts,
        which the row's transaction reads, right after."""
        if self._gate.is_cooling(user):
            if own is not None:
                await self._quietly(own)
            return
        now = self._clock()
        until = now + self._length
        self._gate.cooling([user])
        started = time.perf_counter()
        if own is None:
            own = asyncio.ensure_future(self._dynsec.run([dynsec.disable_client(user)]))
        try:
            accounts = await self._record(user, until)
        except BaseException:  # no row to lift it later: lift it now
            await self._quietly(own)
            await self._dynsec_quietly([dynsec.enable_client(user)])
            raise
        problems = await self._quietly(own)
        took = (time.perf_counter() - started) * 1000  # (at most: the row may come later)
        problems += await self._disable([a for a in accounts if a != user])
        self._due(until)
        if problems:  # its messages are still dropped here until the cooling-off ends
            log.error("disabling %s in the broker failed: %s", user, "; ".join(problems))
        else:
            log.warning(
                "%s flooded: %d broker accounts disabled (the first within %.0f ms) until %s",
                user,
                len(accounts),
                took,
                datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds"),
                extra={"sender": user},
            )
        self.disabled += 1
        self._ctx.metrics.senders_disabled += 1
        await self._raise(
            make_alert(
                "player_disabled",
                AlertSeverity.MEDIUM,
                now,
                None,
                user=user,
                accounts=len(accounts),
                minutes=f"{self._length / 60:g}",
                streak=self._gate.disable_after,
            )
        )

    async def _disable(self, accounts: list[str]) -> list[str]:
        """Disable ``accounts`` in the broker; what went wrong (nothing: an empty list)."""
        if not accounts:
            return []
        return await self._dynsec_quietly([dynsec.disable_client(a) for a in accounts])

    async def _dynsec_quietly(self, commands: list[dict[str, Any]]) -> list[str]:
        try:
            return await self._quietly(self._dynsec.send(commands))
        except DynsecUnavailable as exc:
            return [str(exc)]

    @staticmethod
    async def _quietly(answers: Awaitable[list[dict[str, Any]]]) -> list[str]:
        """What went wrong with the commands ``answers`` awaits (nothing: an empty list)."""
        try:
            return _errors(await answers)
        except DynsecUnavailable as exc:
            return [str(exc)]

    async def _record(self, user: str, until: float) -> list[str]:
        """Write (or extend) the player's ``cool_off`` row; their broker accounts. The
        sessions are read outside the write gate, which is held only for the row (every
        millisecond it is held, reservations wait)."""
        ends = datetime.fromtimestamp(until, UTC)
        async with self._ctx.reads() as session:
            query = select(BrokerSession.client).where(BrokerSession.owner == user)
            accounts = sorted({user, *(await session.exec(query)).all()})
        async with self._ctx.gate, self._ctx.sessions() as session:
            row = await session.get(CoolOff, user)
            if row is None:
                row = CoolOff(user=user, until=ends, accounts_json=json.dumps(accounts))
            else:
                known = set(json.loads(row.accounts_json))
                row.accounts_json = json.dumps(sorted(known | set(accounts)))
                row.until = max(row.until, ends)
            session.add(row)
            await session.commit()
        return accounts

    async def _enable_due(self) -> None:
        """Enable every account whose cooling-off has ended; delete those rows."""
        now = datetime.now(UTC)
        async with self._ctx.reads() as session:
            rows = list((await session.exec(select(CoolOff))).all())
        self._next_due = None
        for row in rows:
            if row.until > now:
                self._due(row.until.timestamp())
                continue
            accounts = list(json.loads(row.accounts_json))
            try:
                problems = _errors(
                    await self._dynsec.run([dynsec.enable_client(a) for a in accounts])
                )
            except DynsecUnavailable as exc:  # the broker is away: try again soon
                log.warning("enabling %s again failed (%s); retrying", row.user, exc)
                self._due(self._clock() + 1.0)
                continue
            if problems:
                log.error("enabling %s again: %s", row.user, "; ".join(problems))
            async with self._ctx.gate, self._ctx.sessions() as session:
                await session.exec(
                    delete(CoolOff).where(col(CoolOff.user) == row.user, col(CoolOff.until) <= now)
                )
                await session.commit()
            self._gate.release(row.user)
            log.info("%s's cooling-off is over: %d accounts enabled", row.user, len(accounts))
