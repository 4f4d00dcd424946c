"""MetricsEndpoint: ``GET /metrics`` in Prometheus text format, from the bridge's own loop.

A minimal HTTP/1.1 server on :func:`asyncio.start_server`: one request per connection
(``Connection: close``), ``GET``/``HEAD /metrics`` answered from the registry, 404 for any
other path, 405 for any other method. Nothing here can stop the bridge: a port that is
already taken is logged as an error and the bridge runs without its endpoint (Prometheus then
reports the target down), and a broken or slow scraper only loses its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)
#: a scraper has this long to send its request head
READ_TIMEOUT = 5.0
MAX_HEAD = 16 * 1024


class MetricsEndpoint:
    """Serves ``registry``; made by :func:`metrics_endpoint`, which binds and closes it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def serve(self) -> None:
        """Keep serving until cancelled (a task of the bridge's TaskGroup; the endpoint
        answers from the moment it is bound)."""
        assert self._server is not None
        await self._server.serve_forever()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, content_type = self._respond(head)
            headers = (
                f"HTTP/1.1 {status}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(headers.encode("latin-1"))
            if not head.startswith(b"HEAD "):
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a scraper that sent no complete head in time: nothing to answer
        except ConnectionError:
            pass
        except Exception:  # a collector's bug must not leave the scraper hanging
            log.exception("metrics scrape failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", b"bad request\n", text
        method, target = parts[0], parts[1]
        if target.split(b"?", 1)[0] != b"/metrics":
            return "404 Not Found", b"not found; try /metrics\n", text
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", text
        return "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST


@contextlib.asynccontextmanager
async def metrics_endpoint(
    registry: CollectorRegistry, host: str, port: int | None
) -> AsyncIterator[MetricsEndpoint | None]:
    """Bind ``host:port`` (0: any free port; None: no endpoint), answer scrapes, and close it
    on exit. Yields None when there is no endpoint: turned off, or the port is taken (logged)."""
    if port is None:
        yield None
        return
    endpoint = MetricsEndpoint(registry)
    try:
        server = await asyncio.start_server(endpoint._answer, host, port, limit=MAX_HEAD)
    except OSError as exc:
        log.error("metrics endpoint not served: cannot listen on %s:%d (%s)", host, port, exc)
        yield None
        return
    endpoint._server = server
    log.info("metrics on http://%s:%d/metrics", host, endpoint.port)
    try:
        yield endpoint
    finally:
        server.close()
        await server.wait_closed()
