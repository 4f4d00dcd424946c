"""Simulated staff at the desk: they approve the simulated players' pending bookings.

A machine that does not auto-approve leaves a booking ``pending`` until staff approve it
(docs/protocol.md). In the demo nobody sits at the admin view, so the simulator plays the
desk too, through the REST API as a person in the admin view does: it logs in as an admin
(``POST /auth/login``), and every ``every`` seconds lists the pending reservations
(``GET /reservations?status=pending``, the first :data:`PAGE` of them) and approves those of
the simulated players it was given (``POST /reservations/{id}/approve``). Anybody else's
booking (a person trying the demo) is left for a person to approve.

HTTP runs in a worker thread (urllib), never on the simulator's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: pending reservations looked at per round (the api's page limit)
PAGE = 200
#: seconds between rounds: at least this, at most that
MIN_EVERY = 1.0
MAX_EVERY = 3600.0
HTTP_TIMEOUT = 10.0


class DeskError(RuntimeError):
    """The desk could not log in (wrong account, or the api refused it)."""


@dataclass
class DeskStats:
    rounds: int = 0
    approved: int = 0
    refused: int = 0
    failed_rounds: int = 0


@dataclass
class Desk:
    api: str
    username: str
    password: str
    #: whose bookings the desk approves (the simulated players)
    players: frozenset[str]
    every: float = 5.0
    ca: Path | None = None
    stats: DeskStats = field(default_factory=DeskStats)
    _token: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not MIN_EVERY <= self.every <= MAX_EVERY:
            raise ValueError(f"desk-every must be within {MIN_EVERY:g}..{MAX_EVERY:g} s")
        self.api = self.api.rstrip("/")
        self._context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.round)
            except (OSError, DeskError, ValueError) as exc:  # the api restarting, say
                self.stats.failed_rounds += 1
                log.info("desk: round failed: %s", exc)
                self._token = None
            except Exception:  # http.client's IncompleteRead, say: never end the simulator
                self.stats.failed_rounds += 1
                log.exception("desk: round failed")
                self._token = None
            await asyncio.sleep(self.every)

    def round(self) -> int:
        """One look at the pending list; how many bookings it approved."""
        self.stats.rounds += 1
        query = urllib.parse.urlencode({"status": "pending", "limit": PAGE})
        page = self._call("GET", f"/reservations?{query}")
        approved = 0
        for item in page.get("items", []):
            if item.get("user") not in self.players:
                continue
            try:
                self._call("POST", f"/reservations/{urllib.parse.quote(item['id'])}/approve")
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    raise
                self.stats.refused += 1  # an overlapping booking was approved first, say
                continue
            approved += 1
        self.stats.approved += approved
        return approved

    def _login(self) -> str:
        try:
            answer = self._http(
                "POST", "/auth/login", {"username": self.username, "password": self.password}
            )
        except urllib.error.HTTPError as exc:
            raise DeskError(f"the api refused the desk's login ({exc.code})") from exc
        token = answer.get("access_token")
        if not isinstance(token, str):
            raise DeskError("the api's login answer carries no token")
        return token

    def _call(self, method: str, path: str) -> dict[str, Any]:
        if self._token is None:
            self._token = self._login()
        try:
            return self._http(method, path, token=self._token)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            self._token = self._login()  # the token expired: log in again, once
            return self._http(method, path, token=self._token)

    def _http(
        self, method: str, path: str, body: object = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(  # noqa: S310 - the venue's own api, http(s) only
            f"{self.api}{path}", data=data, headers=headers, method=method
        )
        context = self._context if self.api.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=context) as r:  # noqa: S310
            raw = r.read()
        answer = json.loads(raw) if raw else {}
        return answer if isinstance(answer, dict) else {}

    def line(self) -> str:
        s = self.stats
        return f"desk: {s.approved} approved ({s.refused} refused) in {s.rounds} rounds"
