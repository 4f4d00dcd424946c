"""Security headers on every response: the web client's pages, its files and the REST API.

- ``Content-Security-Policy``: scripts, styles, images and connections from this origin only,
  plus the venue's MQTT WebSocket origin for ``connect-src``; no framing
  (``frame-ancestors 'none'``), no plugins, no ``<base>``. The JWT lives in the tab's
  ``sessionStorage``, readable only by scripts of this origin, and this policy is what keeps
  any other script from running in the page. The interactive docs (``/docs``, ``/redoc``)
  load FastAPI's Swagger UI and ReDoc from their CDN with an inline start script, so they get
  a policy of their own that allows exactly that and still forbids framing.
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.
- ``Strict-Transport-Security`` when browsers reach the venue over https
  (``PLAZA_PUBLIC_TLS``; `plaza up --tls` sets it).

Pure ASGI middleware, so static files and errors get the headers too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plaza.settings import Settings

DOCS_PATHS = ("/docs", "/redoc")
_DOCS_CDN = "https://cdn.jsdelivr.net"
HSTS = "max-age=31536000"


def ws_origin(url: str) -> str:
    """``wss://host:port`` of a WebSocket URL (CSP sources are origins, not paths)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def policy(settings: Settings) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            f"connect-src 'self' {ws_origin(settings.ws_url())}",
            "img-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


DOCS_POLICY = "; ".join(
    [
        "default-src 'self'",
        f"script-src 'self' 'unsafe-inline' {_DOCS_CDN}",
        f"style-src 'self' {_DOCS_CDN}",
        "img-src 'self' data: https://fastapi.tiangolo.com",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if settings.public_tls:
            common.append((b"strict-transport-security", HSTS.encode()))
        self.page = [(b"content-security-policy", policy(settings).encode()), *common]
        self.docs = [(b"content-security-policy", DOCS_POLICY.encode()), *common]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = self.docs if path.startswith(DOCS_PATHS) else self.page

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
