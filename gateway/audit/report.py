"""Evidence report for auditors: where the data of each level went in a period, and the count
of sensitive requests that left the places their tenant allowed (expected 0) — computed from
the audit records alone, then signed with the ledger's Ed25519 key.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.audit.ledger import Signer, canonical
from gateway.config import TenantConfig
from gateway.context import DataLevel

__all__ = ["build_report", "sign_report"]

SENSITIVE = (DataLevel.CONFIDENTIAL, DataLevel.RESTRICTED)


def _allowed(tenant: TenantConfig | None, level: str, jurisdiction: str | None, locality: str | None) -> bool:
    """Whether the tenant's residency rule for ``level`` admits this destination."""
    if tenant is None:
        return False
    rule = tenant.allowed.get(level)
    if rule is None:
        return False
    if rule.any:
        return True
    if rule.locality and locality not in rule.locality:
        return False
    return not (rule.jurisdictions and jurisdiction not in rule.jurisdictions)


def build_report(
    records: Iterable[Mapping[str, Any]],
    *,
    tenants: Mapping[str, TenantConfig],
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, Any]:
    """The evidence report over ``records`` (as returned by AuditStore.list).

    ``by_destination``: ``{jurisdiction or "not-sent": {level: count}}``;
    ``sensitive_left_allowed``: confidential/restricted requests served by a deployment whose
    jurisdiction or locality the tenant's current rule for that level does not allow;
    ``served_outside_eligible``: requests served by a deployment the policy had not listed as
    eligible. Both are expected to be 0; ``violations`` lists the request ids if not.
    """
    by_destination: dict[str, Counter[str]] = {}
    violations: list[dict[str, Any]] = []
    sensitive_left = outside_eligible = total = 0
    for rec in records:
        total += 1
        level = rec.get("data_level") or "unclassified"
        chosen = rec.get("chosen_deployment")
        destination = (rec.get("chosen_jurisdiction") or "unknown") if chosen else "not-sent"
        by_destination.setdefault(destination, Counter())[level] += 1
        if not chosen:
            continue
        if chosen not in (rec.get("eligible") or []):
            outside_eligible += 1
            violations.append({"request_id": rec.get("request_id"), "violation": "served outside eligible"})
        sensitive = level in {lv.label for lv in SENSITIVE}
        tenant = tenants.get(str(rec.get("tenant")))
        if sensitive and not _allowed(tenant, level, rec.get("chosen_jurisdiction"), rec.get("chosen_locality")):
            sensitive_left += 1
            violations.append({"request_id": rec.get("request_id"), "violation": f"{level} data left allowed places"})
    return {
        "type": "sovereign-gateway.evidence-report",
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "requests": total,
        "by_destination": {k: dict(sorted(v.items())) for k, v in sorted(by_destination.items())},
        "sensitive_left_allowed": sensitive_left,
        "served_outside_eligible": outside_eligible,
        "violations": violations,
    }


def sign_report(report: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """``{"report", "key_id", "signature"}``: base64 Ed25519 over the report's RFC 8785 bytes."""
    body = canonical(report)
    return {
        "report": report,
        "key_id": signer.key_id,
        "signature": signer.sign(body.encode("utf-8")),
        "signed_bytes": "RFC 8785 canonical JSON of 'report'",
    }
