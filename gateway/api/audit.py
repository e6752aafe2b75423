"""Auditor routes: read decision records (role ``auditor``, scoped to the key's tenant)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from gateway.api.deps import GatewayDep
from gateway.auth import require_role

__all__ = ["router"]

router = APIRouter()

RecordStatus = Literal[
    "pending", "ok", "partial", "denied", "invalid", "unauthorized", "forbidden", "upstream_error",
    "client_disconnected", "error", "audit_unavailable",
]  # fmt: skip
"""Statuses a record can have (GatewayError.outcome values, plus ok/partial/pending)."""


@router.get("/v1/audit/decisions")
async def list_decisions(
    request: Request,
    gateway: GatewayDep,
    status: Annotated[RecordStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """Decision records of the caller's tenant, newest first.

    ``before_id`` is the cursor: pass the response's ``next_before_id`` for the next page.
    Raises 401 without a key, 403 without the auditor role.
    """
    principal = gateway.keyring.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    require_role(principal, "auditor")
    rows = await gateway.audit.list(tenant=principal.tenant, status=status, limit=limit, before_id=before_id)
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    return {"object": "list", "data": rows, "next_before_id": next_cursor}
