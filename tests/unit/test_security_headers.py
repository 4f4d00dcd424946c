"""The web client and the REST API send a strict CSP and the other security headers
(issue 14); HSTS only when browsers reach the venue over https."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.app import create_app
from plaza.settings import Settings

pytestmark = pytest.mark.unit
SECRET = "a-test-signing-key-that-is-long-enough-0123456789"


async def get(settings: Settings, path: str) -> httpx.Response:
    app = create_app(settings)  # no lifespan: these routes need neither broker nor database
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://venue") as client:
        return await client.get(path)


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, jwt_secret=SECRET, ws_port=19001, **kw)  # type: ignore[arg-type]


def csp(response: httpx.Response) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["content-security-policy"].split(";")]
    return {d[0]: d[1:] for d in directives}


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/js/app.js", "/me", "/healthz", "/no-such-page"])
async def test_pages_files_and_api_routes_carry_the_policy_and_the_headers(
    tmp_path: Path, path: str
) -> None:
    response = await get(settings(tmp_path), path)
    policy = csp(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", "ws://127.0.0.1:19001"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "script-src" not in policy, "scripts fall back to default-src 'self'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in response.headers, "not without TLS"


@pytest.mark.anyio
async def test_under_tls_hsts_is_sent_and_the_socket_origin_is_wss(tmp_path: Path) -> None:
    response = await get(settings(tmp_path, public_tls=True), "/")
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert csp(response)["connect-src"] == ["'self'", "wss://127.0.0.1:19001"]


@pytest.mark.anyio
async def test_a_public_websocket_url_is_the_allowed_socket_origin(tmp_path: Path) -> None:
    s = settings(tmp_path, public_ws_url="wss://venue.example:443/mqtt")
    assert csp(await get(s, "/me"))["connect-src"] == ["'self'", "wss://venue.example:443"]


@pytest.mark.anyio
async def test_the_interactive_docs_may_load_their_cdn_but_never_be_framed(tmp_path: Path) -> None:
    response = await get(settings(tmp_path), "/docs")
    policy = csp(response)
    assert "https://cdn.jsdelivr.net" in policy["script-src"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
