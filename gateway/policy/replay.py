"""Replay recorded decisions: explain one (same revision, same input → same decision, DESIGN.md
invariant 5) and what-if (recorded inputs through a candidate policy → which decisions change).

Both evaluate with the embedded engine (regopy) offline: nothing is sent anywhere, and the
recorded policy input is used as it was recorded (including ``healthy`` flags and prices at
the time). Records without a policy input (refused before the decide stage: unauthorized,
invalid) or without a decision (the engine failed: 503) are not replayable and are counted
as skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import Counter, defaultdict
from typing import Any

import yaml

from gateway.audit.store import AuditStore
from gateway.errors import NotFound
from gateway.policy import PolicyBundle, decision_view
from gateway.policy.embedded import Evaluator
from gateway.policy.store import PolicyStore

__all__ = ["explain", "recorded_view", "rule_catalog", "whatif"]

_CLASSIFIER_NOTE = "classifier error (treated as restricted): "
_METADATA = re.compile(r"^# METADATA\n((?:#[^\n]*\n)+)", re.MULTILINE)


def rule_catalog(bundle: PolicyBundle) -> dict[str, dict[str, str]]:
    """Rule short name → ``{"title", "description", "message", "module"}`` from the METADATA
    annotations (``custom.short_name``) of the bundle's modules. Malformed blocks are skipped."""
    catalog: dict[str, dict[str, str]] = {}
    for module, source in bundle.modules.items():
        for match in _METADATA.finditer(source):
            text = "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in match.group(1).splitlines())
            try:
                meta = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            custom = meta.get("custom") if isinstance(meta, dict) else None
            if isinstance(custom, dict) and isinstance(custom.get("short_name"), str):
                catalog[custom["short_name"]] = {
                    "title": str(meta.get("title", "")),
                    "description": str(meta.get("description", "")).strip(),
                    "message": str(custom.get("message", "")),
                    "module": module,
                }
    return catalog


def recorded_view(record: dict[str, Any]) -> dict[str, Any]:
    """The decision as recorded, in :func:`~gateway.policy.decision_view`'s shape."""
    return {
        "allow": record.get("decision") == "allow",
        "eligible": list(record.get("eligible") or []),
        "excluded": {k: list(v) for k, v in sorted((record.get("excluded") or {}).items())},
        "rules": {k: list(v) for k, v in sorted((record.get("excluded_rules") or {}).items())},
        "obligations": record.get("obligations") or {},
        "reasons": [r for r in record.get("reasons") or [] if not r.startswith(_CLASSIFIER_NOTE)],
    }


def _replayable(record: dict[str, Any]) -> bool:
    return isinstance(record.get("policy_input"), dict) and record.get("decision") in ("allow", "deny")


async def explain(
    audit: AuditStore, policies: PolicyStore, request_id: str, *, compiled: dict[str, Evaluator] | None = None
) -> dict[str, Any]:
    """Re-evaluate a recorded request under its recorded revision and input.

    ``compiled``: a revision → Evaluator cache to reuse across calls (explaining many records).

    Returns ``{"request_id", "revision", "engine", "reproduced", "recorded", "replayed",
    "differences", "deployments": [{"id", "eligible", "reasons", "rules": [{"name", "title"}]}]}``.
    Raises NotFound when the request has no record, no replayable decision, or its revision
    is not stored.
    """
    record = await audit.get(request_id)
    if record is None:
        raise NotFound(f"no audit record for request {request_id!r}", param="request_id")
    if not _replayable(record):
        raise NotFound(
            f"request {request_id!r} has no replayable decision (status {record.get('status')}: "
            "it ended before the policy decided, or the engine did not answer)",
            param="request_id",
            code="not_replayable",
        )
    revision = str(record.get("policy_revision"))
    compiled = {} if compiled is None else compiled
    evaluator = compiled.get(revision)
    if evaluator is None:
        bundle = await policies.get(revision)
        if bundle is None:
            raise NotFound(f"policy revision {revision} is not stored", param="request_id", code="policy_not_found")
        evaluator = compiled[revision] = await asyncio.to_thread(Evaluator, bundle)
    bundle = evaluator.bundle
    replayed = decision_view(evaluator.decide(record["policy_input"]))
    recorded = recorded_view(record)
    catalog = rule_catalog(bundle)
    deployments = []
    for dep in record["policy_input"].get("deployments", []):
        dep_id = dep.get("id") if isinstance(dep, dict) else None
        deployments.append(
            {
                "id": dep_id,
                "eligible": dep_id in replayed["eligible"],
                "reasons": replayed["excluded"].get(dep_id, []),
                "rules": [
                    {"name": name, "title": catalog.get(name, {}).get("title", "")}
                    for name in replayed["rules"].get(dep_id, [])
                ],
            }
        )
    differences = [key for key in recorded if recorded[key] != replayed[key]]
    return {
        "request_id": request_id,
        "revision": revision,
        "engine": record.get("policy_engine"),
        "tenant": record.get("tenant"),
        "data_level": record.get("data_level"),
        "reproduced": not differences,
        "differences": differences,
        "recorded": recorded,
        "replayed": replayed,
        "deployments": deployments,
    }


def _compare(records: list[dict[str, Any]], bundle: PolicyBundle, examples: int) -> dict[str, Any]:
    evaluator = Evaluator(bundle)
    changed = 0
    by_tenant: Counter[str] = Counter()
    by_level: Counter[str] = Counter()
    by_change: Counter[str] = Counter()
    by_destination: dict[str, Counter[str]] = defaultdict(Counter)
    samples: list[dict[str, Any]] = []
    for record in records:
        before = recorded_view(record)
        after = decision_view(evaluator.decide(record["policy_input"]))
        if (before["allow"], before["eligible"], before["obligations"]) == (
            after["allow"],
            after["eligible"],
            after["obligations"],
        ):
            continue
        changed += 1
        by_tenant[str(record.get("tenant"))] += 1
        by_level[str(record.get("data_level"))] += 1
        if before["allow"] != after["allow"]:
            by_change["allow->deny" if before["allow"] else "deny->allow"] += 1
        elif before["eligible"] != after["eligible"]:
            by_change["eligible changed"] += 1
        else:
            by_change["obligations changed"] += 1
        gained = sorted(set(after["eligible"]) - set(before["eligible"]))
        lost = sorted(set(before["eligible"]) - set(after["eligible"]))
        for dep in gained:
            by_destination[dep]["newly_eligible"] += 1
        for dep in lost:
            by_destination[dep]["newly_excluded"] += 1
        if len(samples) < examples:
            samples.append(
                {
                    "request_id": record.get("request_id"),
                    "created_at": record.get("created_at"),
                    "tenant": record.get("tenant"),
                    "data_level": record.get("data_level"),
                    "before": {"allow": before["allow"], "eligible": before["eligible"]},
                    "after": {
                        "allow": after["allow"],
                        "eligible": after["eligible"],
                        "excluded": {d: after["excluded"].get(d, []) for d in lost},
                    },
                }
            )
    return {
        "changed": changed,
        "by_tenant": dict(sorted(by_tenant.items())),
        "by_level": dict(sorted(by_level.items())),
        "by_change": dict(sorted(by_change.items())),
        "by_destination": {k: dict(v) for k, v in sorted(by_destination.items())},
        "examples": samples,
    }


async def whatif(
    audit: AuditStore,
    candidate: PolicyBundle,
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    tenant: str | None = None,
    examples: int = 5,
) -> dict[str, Any]:
    """Replay the decisions recorded in ``[since, until)`` (optionally one tenant's) through
    ``candidate`` and report those that would change (allow, eligible list or obligations).

    Returns ``{"candidate_revision", "since", "until", "records", "replayed", "skipped",
    "changed", "by_tenant", "by_level", "by_change", "by_destination": {deployment:
    {"newly_eligible", "newly_excluded"}}, "examples": [...]}``. Raises PolicyLoadError if the
    candidate does not compile, AuditUnavailable if the records cannot be read.
    """
    records = []
    total = 0
    async for record in audit.iter_records(since=since, until=until, tenant=tenant):
        total += 1
        if _replayable(record):
            records.append(record)
    report = await asyncio.to_thread(_compare, records, candidate, examples)
    return {
        "candidate_revision": candidate.revision,
        "since": since.isoformat(),
        "until": until.isoformat() if until else None,
        "records": total,
        "replayed": len(records),
        "skipped": total - len(records),
        **report,
    }
