"""OpenAI-compatible v1 routes: thin — read the request, call the Gateway, respond."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters import json_safe
from gateway.api.deps import GatewayDep
from gateway.api.errors import error_response
from gateway.api.server import MALFORMED_HTTP_MESSAGE, MALFORMED_SCOPE_KEY
from gateway.context import RequestContext
from gateway.disconnect import ClientWatch
from gateway.errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from gateway.service import Gateway, Outcome
from gateway.wire import Dialect
from gateway.wire.anthropic import MESSAGES
from gateway.wire.openai import CHAT, COMPLETIONS, EMBEDDINGS
from gateway.wire.responses import RESPONSES

__all__ = ["MODEL_ROUTES", "EventStream", "ModelRoutes", "fallback_router", "read_body", "router"]

log = logging.getLogger("gateway")

router = APIRouter()
"""The model endpoints: the app includes it before every other router (the hot path matches first)."""
fallback_router = APIRouter()
"""Any other path (404/405 in the OpenAI shape): included last."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes. Raises PayloadTooLarge (413), or
    ClientDisconnected when the client goes away mid-body (so the request is still recorded),
    or InvalidRequest (``malformed_http``) when the parser refused the body's framing."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", param="body")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", param="body")
            chunks.append(chunk)
    except ClientDisconnect:
        if request.scope.get(MALFORMED_SCOPE_KEY):  # the parser refused the framing and answered 400
            raise InvalidRequest(MALFORMED_HTTP_MESSAGE, param="body", code="malformed_http") from None
        raise ClientDisconnected(
            f"the client disconnected after {size} bytes of the request body", param="body"
        ) from None
    return b"".join(chunks)


class EventStream(StreamingResponse):
    """The SSE response of a pipeline stream, sent while ``watch`` watches the client.

    Starlette's StreamingResponse would notice a hang-up only when its own ``receive()``
    listener got a turn of the event loop (uvicorn's ``send`` returns at once, even to a gone
    client): streams were drained to the end and recorded ``ok``. Here the relay runs in the
    watch's region, so a hang-up cancels it at the relay's next wait for the upstream. Chunks
    the upstream already delivered are relayed without a pause between them: a turn of the
    loop there would let aiohttp see an upstream that closed after sending them and discard
    them unread (streaming.yaml stream-cut-mid-answer: the client gets what was delivered),
    and they are produced and paid for already. The stream (and through it the pipeline's
    relay, which records the outcome) is always closed, whatever happens."""

    def __init__(self, content: AsyncIterator[bytes], watch: ClientWatch, headers: Mapping[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._events = content
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream; a client that goes away ends it (recorded by the relay)."""
        try:
            with self._watch.relay("during the stream"):
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for chunk in self._events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (ClientDisconnected, OSError):  # OSError: send on ASGI spec 2.4 servers
            pass
        finally:
            self._watch.close()
            with anyio.CancelScope(shield=True):
                await self._events.aclose()  # type: ignore[attr-defined]  # an async generator


def render(outcome: Outcome, dialect: Dialect = CHAT, watch: ClientWatch | None = None) -> Response:
    """HTTP response for a pipeline outcome; every response carries ``x-request-id``. Errors
    are in the endpoint's dialect (OpenAI shape; Anthropic shape on /v1/messages). A stream
    is sent while ``watch`` watches the client (:class:`EventStream`)."""
    headers = {"x-request-id": outcome.ctx.request_id, **outcome.headers}
    if outcome.error is not None:
        if dialect is CHAT:
            return error_response(outcome.error, headers)
        error = outcome.error
        return JSONResponse(dialect.error_body(error), status_code=error.status, headers={**error.headers(), **headers})
    if outcome.stream is not None:
        return EventStream(
            outcome.stream,
            watch or ClientWatch(None),
            headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    try:
        return JSONResponse(outcome.response, headers=headers)
    except (ValueError, UnicodeEncodeError):  # NaN or an unpaired surrogate from an upstream
        return JSONResponse(json_safe(outcome.response), headers=headers)


async def _serve(request: Request, gateway: Gateway, dialect: Dialect) -> Response:
    """Read the body and run it through the pipeline in ``dialect``; one audit record.

    From then on the client is watched (:class:`~gateway.disconnect.ClientWatch` on the
    request's ``receive``): one that goes away while an upstream works for it — a non-stream
    answer, a stream's first chunk, or mid-stream — has the upstream call cancelled and is
    recorded ``client_disconnected`` (gateway/service.py). The watch ends with the response
    (a stream's: when :class:`EventStream` is done)."""
    ctx = RequestContext(endpoint=dialect.endpoint)
    try:
        raw = await read_body(request, gateway.config.server.max_body_bytes)
    except GatewayError as exc:
        return render(await gateway.fail(ctx, exc), dialect)
    watch = ClientWatch(request.receive)
    outcome: Outcome | None = None
    try:
        outcome = await gateway.handle(ctx, raw, _pipeline_headers(request), dialect, watch)
    except Exception as exc:  # a bug in the pipeline: answered and recorded like any failure
        log.error("unhandled error in %s", ctx.endpoint, exc_info=exc)
        outcome = await gateway.fail(ctx, GatewayError("internal error"))
    finally:
        if outcome is None or outcome.stream is None:
            watch.close()
    return render(outcome, dialect, watch)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, gateway: GatewayDep) -> Response:
    """Chat completions, non-stream or SSE (OpenAI wire format). The model is taken from
    the body only; a model named in the query string is ignored."""
    return await _serve(request, gateway, CHAT)


@router.post("/v1/completions")
async def completions(request: Request, gateway: GatewayDep) -> Response:
    """Legacy text completions (``prompt`` a string or an array), non-stream or SSE."""
    return await _serve(request, gateway, COMPLETIONS)


@router.post("/v1/embeddings")
async def embeddings(request: Request, gateway: GatewayDep) -> Response:
    """Embeddings (``input`` a string or an array); needs a deployment with the
    ``embeddings`` capability."""
    return await _serve(request, gateway, EMBEDDINGS)


@router.post("/v1/responses")
async def responses(request: Request, gateway: GatewayDep) -> Response:
    """OpenAI Responses API (text in and out, non-stream or its event stream), run as a chat
    completion. Stateless: ``previous_response_id`` is refused."""
    return await _serve(request, gateway, RESPONSES)


@router.post("/v1/messages")
async def messages(request: Request, gateway: GatewayDep) -> Response:
    """Anthropic Messages API (wire format, SSE events and error shape), run as a chat
    completion. The key may come as ``x-api-key`` (Anthropic SDK) or Bearer."""
    return await _serve(request, gateway, MESSAGES)


MODEL_ROUTES: dict[str, Dialect] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
}
"""POST path → wire dialect of the model endpoints (the routes above, in the same order)."""


class ModelRoutes:
    """Pure ASGI middleware that serves ``POST`` on the model endpoints (:data:`MODEL_ROUTES`)
    with the same :func:`_serve` as their FastAPI routes, ahead of FastAPI's routing,
    dependency injection and exception middleware, which cost ~15 % of the CPU per request at
    saturation (py-spy, benchmarks/README.md). Everything else — other paths and methods,
    redirects, 404/405 — goes on to the app. Installed inside Starlette's
    ServerErrorMiddleware, so an unexpected exception still gets the OpenAI-shaped 500 of
    :func:`gateway.api.errors.install_error_handlers`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a model endpoint POST, or pass the request on."""
        if scope["type"] == "http" and scope["method"] == "POST":
            dialect = MODEL_ROUTES.get(scope["path"])
            if dialect is not None:
                request = Request(scope, receive)
                response = await _serve(request, request.app.state.gateway, dialect)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _pipeline_headers(request: Request) -> dict[str, str]:
    """The headers the pipeline reads, each repeated header joined with ", " (RFC 9110 §5.3),
    so a second ``x-data-classification`` is never silently dropped."""
    out = {}
    for name in ("authorization", "x-api-key", "x-data-classification", "traceparent"):
        values = request.headers.getlist(name)
        if values:
            out[name] = ", ".join(values)
    return out


@router.get("/v1/models")
async def list_models(request: Request, gateway: GatewayDep) -> JSONResponse:
    """Model names the caller may request: aliases first, then deployment ids."""
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    names = list(gateway.config.aliases) + [d.id for d in gateway.config.deployments]
    if principal.allowed_models is not None:
        names = [n for n in names if n in principal.allowed_models]
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "sovereign-gateway"} for n in names]
    return JSONResponse({"object": "list", "data": data})


@fallback_router.api_route(
    "/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def unknown_route(path: str, request: Request, gateway: GatewayDep) -> Response:
    """Any other route: 404 (405 for a known path with another method) in the OpenAI shape.

    Writes are audited like every request — so a model named in a URL
    (``/openai/deployments/<model>/...``) is refused on the record and never reaches a deployment.
    """
    known = request.app.openapi().get("paths", {})  # built once, then cached by FastAPI
    error: GatewayError = (
        MethodNotAllowed(f"{request.method} is not allowed on /{path}")
        if f"/{path}" in known
        else NotFound(f"no such route: {request.method} /{path}")
    )
    if request.method in ("GET", "HEAD"):
        return error_response(error)
    ctx = RequestContext(endpoint=f"unknown:/{path}"[:64])
    try:
        await read_body(request, gateway.config.server.max_body_bytes)
    except GatewayError as too_large:
        error = too_large
    return render(await gateway.fail(ctx, error))
