"""Errors as the HTTP API answers them: a status code and one JSON shape,
``{"error": {"type", "message", "status"}}``, for every failure, whether a handler raised it,
FastAPI's validation refused the request, or keel's own code said no."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel.core import (
    KeelError,
    RunLeased,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    TaskConflict,
    TaskNotFound,
    UserError,
    redact_text,
)

_log = logging.getLogger("keel.server")

#: the longest message an error response carries (a message may quote what the caller sent)
_MESSAGE_CHARS = 600


class ApiError(Exception):
    """An answer other than 2xx, with a message that names the problem."""

    def __init__(self, status: int, kind: str, message: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    """The one answer for an unknown id and for another tenant's object alike."""
    return ApiError(404, "not_found", f"no {what} {_clip(ident, 80)!r} here")


def _clip(text: str, limit: int = _MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": _clip(redact_text(message)), "status": status}}


def error_response(status: int, kind: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, kind, message), status_code=status, headers=headers)


def keel_error_status(exc: KeelError) -> tuple[int, str]:
    """The status and type an error of keel's gets over HTTP."""
    from keel.server._keys import AuthError, KeyNotFound, KeyRevoked

    if isinstance(exc, RunNotFound | TaskNotFound | KeyNotFound):
        return 404, "not_found"
    if isinstance(exc, AuthError):
        return 401, "unauthorized"
    if isinstance(exc, TaskConflict | RunLeased | KeyRevoked):
        return 409, "conflict"
    if isinstance(exc, StoreUnavailable | StoreError):  # the store, not the request
        return 503, "store_unavailable"
    if isinstance(exc, UserError):
        return 400, "invalid"
    return 500, type(exc).__name__


def install_handlers(app: FastAPI) -> None:
    """Every failure leaves as the one JSON shape; a bug is logged and answered 500 without
    its details."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = err.get("loc", ())
            if err.get("type") == "json_invalid":  # loc is ("body", character)
                at = loc[-1] if loc and isinstance(loc[-1], int) else "?"
                problems.append(f"the body is not valid JSON (at character {at})")
                continue
            where = ".".join(str(p) for p in loc if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(exc.status_code, kind, detail,
                              getattr(exc, "headers", None))

    @app.exception_handler(KeelError)
    async def _keel(request: Request, exc: KeelError) -> JSONResponse:
        status, kind = keel_error_status(exc)
        if status >= 500 and status != 503:
            _log.error("%s %s failed: %s", request.method, request.url.path,
                       type(exc).__name__)
            return error_response(status, "internal", "the server failed; see its log")
        return error_response(status, kind, str(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal", "the server failed; see its log")
