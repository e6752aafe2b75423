"""Auditor routes: read decision records (role ``auditor``, scoped to the key's tenant)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from gateway.api.deps import GatewayDep
from gateway.audit.savings import compute_savings
from gateway.auth import require_role
from gateway.context import Principal
from gateway.errors import InvalidRequest, PermissionDenied

__all__ = ["router"]

router = APIRouter()

RecordStatus = Literal[
    "pending", "ok", "partial", "denied", "invalid", "unauthorized", "forbidden", "upstream_error",
    "client_disconnected", "error", "audit_unavailable", "rate_limited", "limits_unavailable",
]  # fmt: skip
"""Statuses a record can have (GatewayError.outcome values, plus ok/partial/pending)."""


@router.get("/v1/audit/decisions")
async def list_decisions(
    request: Request,
    gateway: GatewayDep,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[RecordStatus | None, Query()] = None,
    level: Annotated[Literal["public", "internal", "confidential", "restricted"] | None, Query()] = None,
    label: Annotated[str | None, Query(max_length=128, pattern=r"^[a-z0-9_.]+$")] = None,
    deployment: Annotated[str | None, Query(max_length=128)] = None,
    jurisdiction: Annotated[str | None, Query(max_length=32)] = None,
    decision: Annotated[Literal["allow", "deny"] | None, Query()] = None,
    since: Annotated[dt.datetime | None, Query()] = None,
    until: Annotated[dt.datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """Decision records, newest first, filtered; an auditor bound to a tenant sees only it.

    ``since``/``until``: ISO 8601 times (until exclusive). ``label``: a label or prefix
    (``pii``). ``before_id`` is the cursor: pass the response's ``next_before_id``.
    Raises 401 without a key, 403 without the auditor role or for another tenant.
    """
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    require_role(principal, "auditor")
    tenant = _tenant_scope(principal, tenant)
    rows = await gateway.audit.list(
        tenant=tenant,
        status=status,
        level=level,
        label=label,
        deployment=deployment,
        jurisdiction=jurisdiction,
        decision=decision,
        since=_utc(since),
        until=_utc(until),
        limit=limit,
        before_id=before_id,
    )
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    return {"object": "list", "data": rows, "next_before_id": next_cursor}


def _tenant_scope(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a read is limited to: the key's own unless it is an all-tenants key.
    Raises PermissionDenied (param ``tenant``) when a bound key asks for another tenant."""
    if principal.all_tenants:
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise PermissionDenied(f"this key is bound to tenant {principal.tenant!r}", param="tenant")
    return principal.tenant


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Naive times are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


@router.get("/v1/savings")
async def savings(
    request: Request,
    gateway: GatewayDep,
    since: Annotated[dt.datetime, Query()],
    until: Annotated[dt.datetime, Query()],
    tenant: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """Actual spend next to the configured reference model's cost for the same tokens, per
    tenant, for ``since`` ≤ created_at < ``until``. Roles auditor or admin; a key bound to its
    tenant sees only it. Raises 400 when no ``savings.reference_price`` is configured."""
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if not {"auditor", "admin"} & set(principal.roles):
        raise PermissionDenied("savings need the auditor or admin role")
    tenant = _tenant_scope(principal, tenant)
    reference = gateway.config.savings.reference_price
    if reference is None:
        raise InvalidRequest("no savings.reference_price is configured", param="savings.reference_price")
    start, end = _utc(since), _utc(until)
    assert start is not None and end is not None
    if end <= start:
        raise InvalidRequest("until must be after since", param="until")
    records = [r async for r in gateway.audit.iter_records(tenant=tenant, since=start, until=end)]
    return compute_savings(
        records, reference=reference, reference_name=gateway.config.savings.reference_name, since=start, until=end
    )
