"""Request bodies are capped before anything parses them (issue 13, finding 9): a declared
Content-Length over ``PLAZA_MAX_BODY_BYTES`` is refused unread, a chunked stream is refused as
soon as it passes the cap, both as 413 problem+json; the largest legitimate body passes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvicorn

from tests.api.conftest import Api, assert_problem
from venue.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
MiB = 1024 * 1024


class Stream:
    """A chunked body that counts what the server pulled from it."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"x" * self.chunk


async def test_a_declared_body_over_the_cap_is_413_before_login_reads_it(api: Api) -> None:
    cap = api.settings.max_body_bytes
    body = json.dumps({"username": "player1", "password": "p" * (cap + 1)})
    reply = await api.client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(reply, 413, "body_too_large")
    assert str(cap) in str(problem["detail"])


async def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_cap(api: Api) -> None:
    stream = Stream(128 * MiB)
    reply = await api.client.post(
        "/auth/register", content=stream, headers={"Content-Type": "application/json"}
    )
    assert_problem(reply, 413, "body_too_large")
    assert stream.sent <= api.settings.max_body_bytes + stream.chunk, "read no further"


async def test_the_largest_legitimate_body_passes_the_cap(api: Api) -> None:
    """A notice at every field's maximum, in Korean escaped as JSON's \\uXXXX (six bytes a
    character, the most a client's encoder makes of it)."""
    notice = {
        "title": "점" * 120,
        "message": "검" * 2000,
        "title_en": "T" * 120,
        "message_en": "한" * 2000,
        "priority": "medium",
    }
    body = json.dumps(notice, ensure_ascii=True)
    assert len(body) > 16 * 1024
    assert len(body) <= api.settings.max_body_bytes
    reply = await api.client.post(
        "/notices",
        content=body,
        headers={**await api.headers("admin"), "Content-Type": "application/json"},
    )
    assert reply.status_code == 201, reply.text


async def test_over_real_http_a_huge_upload_gets_413_without_the_server_taking_it(
    api: Api,
) -> None:
    """uvicorn, a raw socket and a Content-Length of 128 MiB: the answer comes at once, while
    nearly all of the body is still unsent."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.get_running_loop().create_task(server.serve())
    writer = None
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /auth/login HTTP/1.1\r\nHost: plaza\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (128 * MiB)
        )
        writer.write(b'{"username": "player1", "password": "')
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"application/problem+json" in head
    finally:
        if writer is not None:
            writer.close()
        server.should_exit = server.force_exit = True
        await serving
