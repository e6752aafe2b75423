"""Admin routes' shared machinery: every admin mutation is authenticated, role-checked and
leaves exactly one audit record (who, when, what, from, to) in the same hash chain as the
request records.

A route calls :func:`run_admin` with the endpoint name (``admin.policies.activate``) and an
action coroutine; the action receives the admin :class:`~gateway.context.Principal` and
returns ``(response_body, audit_detail)``. ``audit_detail`` lands in the record's ``admin``
field (never a secret: an API key or a prompt must not be put there). A GatewayError raised
by the action is answered in the OpenAI error shape and recorded with its cause.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway.api.deps import GatewayDep
from gateway.api.errors import error_response
from gateway.api.openai import read_body
from gateway.auth import require_role
from gateway.context import Principal, RequestContext
from gateway.errors import GatewayError, NotFound
from gateway.keystore import KeyAdmin
from gateway.schemas import parse_body
from gateway.service import Gateway

log = logging.getLogger("gateway.admin")

__all__ = ["AdminAction", "router", "run_admin"]

AdminAction = Callable[[Principal], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]
"""``async (principal) -> (response body, audit detail)``."""


async def run_admin(
    request: Request, gateway: Gateway, endpoint: str, action: AdminAction, *, status_code: int = 200
) -> Response:
    """Authenticate (role ``admin``), run ``action``, record the outcome; never raises.

    The record has ``endpoint``, the admin's tenant and key id, ``status`` and ``admin`` (the
    action's detail, or ``{"action": endpoint}`` when it failed before producing one).
    """
    ctx = RequestContext(endpoint=endpoint)
    gateway.telemetry.start_request(ctx, request.headers)
    try:
        ctx.principal = gateway.keyring.authenticate(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        require_role(ctx.principal, "admin")
        body, detail = await action(ctx.principal)
    except Exception as exc:  # every admin request is recorded, an unexpected failure too
        if not isinstance(exc, GatewayError):
            log.exception("admin action %s failed", endpoint, exc_info=exc)
        error = exc if isinstance(exc, GatewayError) else GatewayError("internal error")
        ctx.admin = ctx.admin or {"action": endpoint}
        outcome = await gateway.fail(ctx, error)
        assert outcome.error is not None
        return error_response(outcome.error, {"x-request-id": ctx.request_id, **outcome.headers})
    ctx.admin = {"action": endpoint, **detail}
    ctx.status = "ok"
    ctx.http_status = status_code
    try:
        await gateway.audit.record_outcome(ctx)
    except GatewayError as exc:  # the change happened but could not be recorded: say so
        return error_response(exc, {"x-request-id": ctx.request_id})
    finally:
        gateway.telemetry.finish(ctx)
    return JSONResponse(body, status_code=status_code, headers={"x-request-id": ctx.request_id})


# --- API keys (gateway/keystore.py) ----------------------------------------------------------

router = APIRouter()


def _key_admin(gateway: Gateway) -> KeyAdmin:
    if gateway.key_admin is None:  # build_gateway always wires one; a hand-built Gateway may not
        raise NotFound("API key management is not enabled on this gateway")
    return gateway.key_admin


async def _json_body(request: Request, gateway: Gateway, *, optional: bool = False) -> dict[str, Any]:
    raw = await read_body(request, gateway.config.server.max_body_bytes)
    if optional and not raw.strip():
        return {}
    return parse_body(raw)


@router.post("/v1/admin/keys")
async def create_key(request: Request, gateway: GatewayDep) -> Response:
    """Create an API key (body: :class:`~gateway.keystore.KeyCreate`); 201 with the key in
    ``key``, shown this once. 400 naming the field, 401, 403 (not admin, another tenant),
    409 (id taken)."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await _json_body(request, gateway)
        return await _key_admin(gateway).create(body, actor=principal, by=principal.key_id)

    return await run_admin(request, gateway, "admin.keys.create", action, status_code=201)


@router.get("/v1/admin/keys")
async def list_keys(
    request: Request, gateway: GatewayDep, tenant: Annotated[str | None, Query(max_length=128)] = None
) -> dict[str, Any]:
    """Every API key the admin may see: static ones (``source: config``) and run-time ones
    (``source: database``, with ``status`` active / revoked / expired); never a key or hash.
    A read, so no audit record. 401, 403 (not admin, another tenant)."""
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    require_role(principal, "admin")
    return {"object": "list", "data": await _key_admin(gateway).list(actor=principal, tenant=tenant)}


@router.post("/v1/admin/keys/{key_id}/rotate")
async def rotate_key(key_id: str, request: Request, gateway: GatewayDep) -> Response:
    """New secret for the key (returned once in ``key``); the old one stops working at once,
    or after ``grace_s`` seconds (optional body ``{"grace_s": 300}``). 404, 409 (static or
    revoked key)."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await _json_body(request, gateway, optional=True)
        return await _key_admin(gateway).rotate(key_id, body, actor=principal, by=principal.key_id)

    return await run_admin(request, gateway, "admin.keys.rotate", action)


@router.delete("/v1/admin/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, gateway: GatewayDep) -> Response:
    """Revoke the key: every replica refuses it within about a second. 404, 409 (static or
    already revoked key)."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        return await _key_admin(gateway).revoke(key_id, actor=principal, by=principal.key_id)

    return await run_admin(request, gateway, "admin.keys.revoke", action)
