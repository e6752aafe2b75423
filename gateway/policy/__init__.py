"""Policy stage: build the policy input, ask a Rego engine, accept only a well-formed decision.

Contract (DESIGN.md, "Policy contract"): package ``gateway.routing``, entrypoint
``data.gateway.routing.decision``, an object ``{"allow", "eligible", "excluded",
"obligations", "reasons"}``. Anything else — false, undefined, a missing or mistyped key, an
eligible id that was not offered — is a deny (:func:`parse_decision`). An engine that errors or
times out raises :class:`~gateway.errors.PolicyUnavailable` (also a deny, 503).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.context import Classification, Decision, Principal

__all__ = [
    "ENTRYPOINT",
    "PolicyBundle",
    "PolicyEngine",
    "build_input",
    "load_bundle",
    "parse_decision",
]

ENTRYPOINT = "gateway/routing/decision"


class PolicyBundle:
    """Rego modules of one policy revision: ``modules`` maps file name → source.

    ``revision`` is ``sha256:<hex>`` over every module's name and bytes in name order, so the
    same files always give the same revision (recorded in each audit record for replay).
    """

    def __init__(self, modules: dict[str, str]) -> None:
        self.modules = dict(sorted(modules.items()))
        digest = hashlib.sha256()
        for name, source in self.modules.items():
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        self.revision = f"sha256:{digest.hexdigest()}"


def load_bundle(path: Path) -> PolicyBundle:
    """Read every ``*.rego`` file under ``path`` (tests ``*_test.rego`` excluded).

    Raises OSError if the directory is unreadable and ValueError if it holds no policy.
    """
    files = sorted(p for p in path.rglob("*.rego") if not p.name.endswith("_test.rego"))
    if not files:
        raise ValueError(f"no .rego files under {path}")
    return PolicyBundle({str(p.relative_to(path)): p.read_text(encoding="utf-8") for p in files})


class PolicyEngine(Protocol):
    """A Rego engine holding one active policy revision."""

    name: str

    @property
    def revision(self) -> str:
        """The active bundle revision (``sha256:...``)."""
        ...

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        """Evaluate the decision for one input.

        Returns a Decision (a deny when the result is not a well-formed decision).
        Raises PolicyUnavailable when the engine errors or exceeds its timeout.
        """
        ...

    async def aclose(self) -> None:
        """Release threads or connections."""
        ...


def build_input(
    *,
    principal: Principal,
    tenant: dict[str, Any],
    request: dict[str, Any],
    classification: Classification,
    deployments: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The policy input document (DESIGN.md "Policy contract").

    ``request``: id, endpoint, model, needs, est_input_tokens, max_output_tokens (tokens).
    ``deployments``: the candidates behind the requested model, in alias order.
    """
    return {
        "principal": principal.policy_view(),
        "request": request,
        "data": {
            "level": classification.level.label,
            "labels": list(classification.labels),
            "declared": classification.declared.label if classification.declared is not None else None,
            "detected": classification.detected.label,
        },
        "tenant": tenant,
        "deployments": list(deployments),
    }


def _deny(cause: str, *, engine: str, revision: str, eval_ms: float) -> Decision:
    return Decision(
        allow=False,
        eligible=(),
        excluded={},
        obligations={},
        reasons=(cause,),
        engine=engine,
        revision=revision,
        eval_ms=eval_ms,
    )


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def parse_decision(raw: Any, *, offered: Sequence[str], engine: str, revision: str, eval_ms: float) -> Decision:
    """Turn an engine result into a Decision, failing closed.

    ``raw`` is the decoded value of the entrypoint (None when undefined). Every shape other
    than the contract's object becomes a deny whose single reason names what was wrong.
    """

    def deny(cause: str) -> Decision:
        return _deny(cause, engine=engine, revision=revision, eval_ms=eval_ms)

    if raw is None:
        return deny("policy decision is undefined (treated as deny)")
    if not isinstance(raw, dict):
        return deny(f"policy decision is a {type(raw).__name__}, not an object (treated as deny)")
    allow = raw.get("allow")
    if not isinstance(allow, bool):
        return deny("policy decision has no boolean 'allow' (treated as deny)")
    eligible = raw.get("eligible", [])
    excluded = raw.get("excluded", {})
    reasons = raw.get("reasons", [])
    obligations = raw.get("obligations", {})
    if not _str_list(eligible):
        return deny("policy decision 'eligible' is not a list of deployment ids (treated as deny)")
    if not isinstance(excluded, dict) or not all(_str_list(v) for v in excluded.values()):
        return deny("policy decision 'excluded' is not an object of reason lists (treated as deny)")
    if not _str_list(reasons) or not isinstance(obligations, dict):
        return deny("policy decision 'reasons' or 'obligations' is malformed (treated as deny)")
    unknown = [d for d in eligible if d not in offered]
    if unknown:
        return deny(f"policy decision names deployments that were not offered: {unknown} (treated as deny)")
    if allow and not eligible:
        return deny("policy allowed the request but listed no eligible deployment (treated as deny)")
    return Decision(
        allow=allow,
        eligible=tuple(eligible) if allow else (),
        excluded={k: list(v) for k, v in excluded.items()},
        obligations=obligations,
        reasons=tuple(reasons),
        engine=engine,
        revision=revision,
        eval_ms=eval_ms,
    )
