"""Rendering of errors in the OpenAI error shape, and the app's exception handlers.

Every error response is ``{"error": {"message", "type", "param", "code"}}``; nothing else
(no stack trace, no internal class name) reaches the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("gateway")


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON response for ``error`` (its status, OpenAI error body, extra headers)."""
    return JSONResponse(error.body(), status_code=error.status, headers={**error.headers(), **(headers or {})})


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception that escapes a route to the OpenAI error shape."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
        param = ".".join(loc) or None
        return error_response(InvalidRequest(f"{param}: {err.get('msg')}", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound("no such route"))
        if exc.status_code == 405:  # a method no route or fallback takes (e.g. OPTIONS)
            headers = {"allow": exc.headers["allow"]} if exc.headers and "allow" in exc.headers else None
            return error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"), headers)
        error = GatewayError(str(exc.detail), code="http_error")
        error.status = exc.status_code
        error.error_type = "invalid_request_error" if exc.status_code < 500 else "api_error"
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(GatewayError("internal error"))
