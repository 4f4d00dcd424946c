"""RFC 9457 problem details: every error of the api is ``application/problem+json`` with a
stable machine-readable ``code`` (asserted exactly in tests, listed in docs/protocol.md).

Errors::

    ApiError (Exception)      raised by routes and dependencies; rendered by the handler below
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "/problems/"  # relative URIs: the api documents each code under docs/protocol.md


class ConflictOut(BaseModel):
    """The slot a refused reservation conflicts with (ISO 8601 times, like all of REST)."""

    reservation_id: str
    starts_at: datetime
    ends_at: datetime
    status: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    conflict: ConflictOut | None = None
    #: a party booking: the machine (seat) that could not be booked
    seat: str | None = None
    #: when a refusal for a time ends, ISO 8601 (``cooling_off``; ``suspended``: self-service
    #: booking is suspended until then)
    until: datetime | None = None


TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        conflict: ConflictOut | None = None,
        seat: str | None = None,
        until: datetime | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.conflict = conflict
        self.seat = seat
        self.until = until


def too_many(code: str, what: str, wait: float) -> ApiError:
    """429 ``code`` for a budget that refills in ``wait`` seconds (``Retry-After``)."""
    seconds = max(1, math.ceil(wait))
    return ApiError(
        429, code, f"{what}; try again in {seconds} s", headers={"Retry-After": str(seconds)}
    )


def problem(
    status: int,
    code: str,
    detail: str,
    instance: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = Problem(
        type=TYPE_BASE + code,
        title=TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        instance=instance,
        **extra,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses of an endpoint, all problem+json."""
    return {
        s: {
            "model": Problem,
            "description": TITLES.get(s, "Error"),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(
            exc.status,
            exc.code,
            exc.detail,
            request.url.path,
            headers=exc.headers,
            conflict=exc.conflict,
            seat=exc.seat,
            until=exc.until,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}"
        return problem(422, "validation_error", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(
            exc.status_code,
            code,
            str(exc.detail),
            request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "unexpected error; it is logged", request.url.path)
