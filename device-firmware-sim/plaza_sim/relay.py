"""A TCP relay between a machine and the broker, to inject *silent* network loss.

``blackhole()`` keeps both TCP connections open but forwards nothing, in either direction,
and ignores the machine side closing: the broker hears nothing at all and can only notice
through its keepalive timer (~1.5 x keepalive), as with a pulled cable or a dead Wi-Fi link.
``drop_to_broker`` loses only what the machine sends (a one-way link: its PUBACKs never
come), and ``cut()`` closes every connection, as a broker that stops does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.blackholed = False
        #: lose what the machine sends, still deliver what the broker sends
        self.drop_to_broker = False
        self._generation = 0  # connections older than the last blackhole stay dead
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        self._writers.clear()

    def blackhole(self) -> None:
        self.blackholed = True
        self._generation += 1

    def restore(self) -> None:
        self.blackholed = False
        self.drop_to_broker = False

    def cut(self) -> None:
        """Close both sides of every connection now (the machine reads EOF at once); the
        relay still accepts new ones."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            # The broker refused (it is down): close, but only once the machine's CONNECT has
            # arrived. Closed sooner, paho (whose connect() runs in an executor thread) may
            # still register the closed socket with the event loop ("Bad file descriptor").
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await down_r.read(1)
            down_w.close()
            return
        for w in (down_w, up_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.add(w)
        gen = self._generation
        for src, dst, up in ((down_r, up_w, True), (up_r, down_w, False)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst, gen, up))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _alive(self, gen: int) -> bool:
        return not self.blackholed and gen == self._generation

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gen: int, up: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if not self._alive(gen) or (up and self.drop_to_broker):
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if self._alive(gen):  # a silent loss never tells the other side
            with contextlib.suppress(OSError):
                dst.close()
