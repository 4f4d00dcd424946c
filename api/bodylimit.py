"""``BodyLimit``: an ASGI middleware that caps HTTP request bodies before anything parses them.

A request whose ``Content-Length`` is over the cap is answered 413 without reading a byte of
its body. Any other body (chunked, or a Content-Length that lies) is read and counted as it
arrives and answered 413 the moment it passes the cap; nothing beyond the cap is read.
A body within the cap is buffered (the application buffers it anyway: FastAPI reads a JSON
body whole before it validates it) and handed on unchanged, so the memory a request can take
is the cap, whatever a client sends. The 413 is problem+json like every other error.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem


class BodyLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, refused: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refused = refused or (lambda: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refused()
        response = problem(
            413,
            "body_too_large",
            f"the request body is larger than {self.max_bytes} bytes",
            scope.get("path"),
            headers={"Connection": "close"},  # the rest of the body is never read
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one itself
    return None
