"""Savings: actual spend next to what the same tokens would have cost on a reference external
model — the "open models saved X%" figure — computed from audit records alone.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config import Price

__all__ = ["compute_savings"]

_SERVED = {"ok", "partial", "client_disconnected"}


def compute_savings(
    records: Iterable[Mapping[str, Any]],
    *,
    reference: Price,
    reference_name: str,
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, Any]:
    """Per tenant: requests served, tokens, actual cost and reference cost (USD), saved USD and
    percent, and the split by deployment. Records without token counts are skipped.

    ``saved_pct`` = 100 x (reference - actual) / reference (0 when the reference cost is 0).
    """
    tenants: dict[str, dict[str, Any]] = {}
    by_deployment: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for rec in records:
        if rec.get("status") not in _SERVED or rec.get("prompt_tokens") is None:
            continue
        tenant = str(rec.get("tenant"))
        row = tenants.setdefault(
            tenant,
            {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "actual_usd": 0.0, "reference_usd": 0.0},
        )
        prompt, completion = int(rec.get("prompt_tokens") or 0), int(rec.get("completion_tokens") or 0)
        actual = float(rec.get("cost_usd") or 0.0)
        ref = (prompt * reference.input_per_mtok + completion * reference.output_per_mtok) / 1_000_000
        row["requests"] += 1
        row["prompt_tokens"] += prompt
        row["completion_tokens"] += completion
        row["actual_usd"] += actual
        row["reference_usd"] += ref
        dep = by_deployment[tenant].setdefault(
            str(rec.get("chosen_deployment")), {"requests": 0, "actual_usd": 0.0, "reference_usd": 0.0}
        )
        dep["requests"] += 1
        dep["actual_usd"] += actual
        dep["reference_usd"] += ref
    for tenant, row in tenants.items():
        saved = row["reference_usd"] - row["actual_usd"]
        row["saved_usd"] = round(saved, 8)
        row["saved_pct"] = round(100 * saved / row["reference_usd"], 2) if row["reference_usd"] else 0.0
        row["actual_usd"] = round(row["actual_usd"], 8)
        row["reference_usd"] = round(row["reference_usd"], 8)
        row["by_deployment"] = by_deployment[tenant]
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "reference": {"name": reference_name, **reference.model_dump()},
        "tenants": tenants,
    }
