"""Policy admin routes (role ``admin``): push, list, activate, roll back, kill switch, what-if;
and the auditors' explain (role ``auditor``, tenant-scoped).

Every POST leaves exactly one audit record (:func:`gateway.api.admin.run_admin`) saying who
did what, from which revision to which.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.admin import run_admin
from gateway.api.deps import GatewayDep
from gateway.api.openai import read_body
from gateway.auth import require_role
from gateway.context import Principal
from gateway.errors import InvalidRequest, NotFound, PermissionDenied, PolicyUnavailable
from gateway.policy import PolicyBundle, check_data
from gateway.policy.embedded import PolicyLoadError
from gateway.policy.manager import PolicyManager
from gateway.policy.replay import explain, whatif
from gateway.policy.testing import PolicyCase, cases_from_documents
from gateway.schemas import parse_body, parse_since
from gateway.service import Gateway

__all__ = ["router"]

router = APIRouter()


async def _json_object(request: Request, gateway: Gateway) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (every field optional). Raises
    InvalidRequest (param ``body``) or PayloadTooLarge."""
    raw = await read_body(request, gateway.config.server.max_body_bytes)
    return parse_body(raw) if raw.strip() else {}


def _bundle(body: dict[str, Any]) -> PolicyBundle:
    data = body.get("data") or {}
    try:
        check_data(data)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="data") from None
    try:
        return PolicyBundle.from_parts(body.get("modules"), data)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="modules") from None


def _tests(body: dict[str, Any]) -> list[PolicyCase] | None:
    """The push's own table tests, or None: then the tests beside ``policy.path`` run."""
    tests, base = body.get("tests"), body.get("test_input")
    if tests is None:
        return None
    if not isinstance(tests, dict) or not all(isinstance(v, str) for v in tests.values()):
        raise InvalidRequest("tests must be an object of file name → YAML text", param="tests")
    if not isinstance(base, dict):
        raise InvalidRequest(
            "test_input (the base policy input of the tests) is required with tests", param="test_input"
        )
    try:
        return cases_from_documents(tests, base)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="tests") from None


def _manager(gateway: Gateway) -> PolicyManager:
    if gateway.policies is None:
        raise PolicyUnavailable("policy versions are not available on this gateway")
    return gateway.policies


def _actor(principal: Principal) -> str:
    """``key:<id>`` of a policy admin. Policies apply to every tenant, so changing them takes
    an admin key that is not bound to one tenant (``all_tenants``). Raises PermissionDenied."""
    if not principal.all_tenants:
        raise PermissionDenied(
            "policies apply to every tenant: changing them needs an admin key with all_tenants "
            "(gateway keys create --role admin --all-tenants)"
        )
    return f"key:{principal.key_id}"


@router.get("/v1/admin/policies")
async def list_policies(request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Stored versions (newest first, ``active`` marked) and the activation history."""
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    require_role(principal, "admin")
    manager = _manager(gateway)
    return {
        "active": manager.engine.revision,
        "versions": await manager.store.versions(),
        "activations": await manager.store.activations(),
    }


@router.post("/v1/admin/policies")
async def push_policy(request: Request, gateway: GatewayDep) -> Response:
    """Push a version: ``{"modules": {name: rego}, "data": {...}, "tests": {name: yaml},
    "test_input": {...}, "description": str, "activate": bool}``. Validated (compiles, every
    builtin exists in the embedded engine, tests pass) before it is stored; 400 otherwise."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        by = _actor(principal)
        body = await _json_object(request, gateway)
        bundle = _bundle(body)
        description, activate = body.get("description", ""), body.get("activate", False)
        if not isinstance(description, str):
            raise InvalidRequest("description must be a string", param="description")
        if not isinstance(activate, bool):
            raise InvalidRequest("activate must be true or false", param="activate")
        result = await _manager(gateway).push(
            bundle, by=by, source="api", description=description, tests=_tests(body), activate=activate
        )
        return result, {k: v for k, v in result.items() if k in ("revision", "created", "activated", "from", "to")}

    return await run_admin(request, gateway, "admin.policies.push", action)


@router.post("/v1/admin/policies/rollback")
async def rollback_policy(request: Request, gateway: GatewayDep) -> Response:
    """Roll back to the revision the latest activation replaced, or to ``{"to": revision}``."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        by = _actor(principal)
        body = await _json_object(request, gateway)
        to = body.get("to")
        if to is not None and not isinstance(to, str):
            raise InvalidRequest("to must be a policy revision (sha256:...)", param="to")
        result = await _manager(gateway).rollback(by=by, to=to)
        return result, result

    return await run_admin(request, gateway, "admin.policies.rollback", action)


@router.post("/v1/admin/policies/killswitch")
async def killswitch(request: Request, gateway: GatewayDep) -> Response:
    """``{"blocked": true, "reason": "..."}``: activate a revision that blocks (or, with false,
    re-opens) all external egress."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        by = _actor(principal)
        body = await _json_object(request, gateway)
        blocked, reason = body.get("blocked"), body.get("reason", "")
        if not isinstance(blocked, bool):
            raise InvalidRequest("blocked must be true or false", param="blocked")
        if not isinstance(reason, str):
            raise InvalidRequest("reason must be a string", param="reason")
        result = await _manager(gateway).set_killswitch(blocked, by=by, reason=reason)
        detail = {"blocked": blocked, "reason": reason, "from": result.get("from"), "to": result.get("to")}
        return result, detail

    return await run_admin(request, gateway, "admin.policies.killswitch", action)


@router.post("/v1/admin/policies/whatif")
async def whatif_policy(request: Request, gateway: GatewayDep) -> Response:
    """Replay recorded decisions through a candidate: ``{"modules", "data", "since": "24h",
    "until"?, "tenant"?, "examples"?}`` (nothing is stored or activated)."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await _json_object(request, gateway)
        bundle = _bundle(body)
        since = parse_since(body.get("since", "24h"))
        until = parse_since(body["until"], param="until") if body.get("until") else None
        tenant = body.get("tenant")
        examples = body.get("examples", 5)
        if tenant is not None and not isinstance(tenant, str):
            raise InvalidRequest("tenant must be a string", param="tenant")
        if not principal.all_tenants:  # a tenant-bound admin replays its own tenant's records only
            if tenant not in (None, principal.tenant):
                raise PermissionDenied("this admin key may only replay its own tenant's records", param="tenant")
            tenant = principal.tenant
        if not isinstance(examples, int) or not 0 <= examples <= 100:
            raise InvalidRequest("examples must be an integer from 0 to 100", param="examples")
        try:
            report = await whatif(gateway.audit, bundle, since=since, until=until, tenant=tenant, examples=examples)
        except PolicyLoadError as exc:
            raise InvalidRequest(f"candidate refused: {exc}", param="modules", code="policy_invalid") from exc
        return report, {
            "candidate_revision": bundle.revision,
            "replayed": report["replayed"],
            "changed": report["changed"],
        }

    return await run_admin(request, gateway, "admin.policies.whatif", action)


@router.post("/v1/admin/policies/{revision}/activate")
async def activate_policy(revision: str, request: Request, gateway: GatewayDep) -> Response:
    """Activate a stored revision on every worker and replica."""

    async def action(principal: Principal) -> tuple[dict[str, Any], dict[str, Any]]:
        result = await _manager(gateway).activate(revision, by=_actor(principal))
        return result, result

    return await run_admin(request, gateway, "admin.policies.activate", action)


@router.get("/v1/audit/decisions/{request_id}/explain")
async def explain_decision(request_id: str, request: Request, gateway: GatewayDep) -> dict[str, Any]:
    """Re-evaluate a recorded decision under its recorded revision and input (role auditor;
    a tenant-bound auditor sees only its tenant's records)."""
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    require_role(principal, "auditor")
    record = await gateway.audit.get(request_id)
    if record is None or (not principal.all_tenants and record.get("tenant") != principal.tenant):
        # another tenant's record is answered as missing: its existence is not disclosed
        raise NotFound(f"no audit record for request {request_id!r}", param="request_id")
    return await explain(gateway.audit, _manager(gateway).store, request_id)
