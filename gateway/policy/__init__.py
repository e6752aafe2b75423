"""Policy stage: build the policy input, ask a Rego engine, accept only a well-formed decision.

Contract (DESIGN.md, "Policy contract"): package ``gateway.routing``, entrypoint
``data.gateway.routing.decision``, an object ``{"allow", "eligible", "excluded",
"obligations", "reasons"}``. Anything else — false, undefined, a missing or mistyped key, an
eligible id that was not offered — is a deny (:func:`parse_decision`). An engine that errors or
times out raises :class:`~gateway.errors.PolicyUnavailable` (also a deny, 503).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.context import Classification, Decision, Principal

__all__ = [
    "ENTRYPOINT",
    "PolicyBundle",
    "PolicyEngine",
    "build_input",
    "check_data",
    "decision_view",
    "load_bundle",
    "parse_decision",
]

ENTRYPOINT = "gateway/routing/decision"


class PolicyBundle:
    """One policy revision: Rego ``modules`` (file name → source) and policy ``data``.

    ``data`` is the base document the modules read as ``data.*`` (OPA bundle semantics: a
    ``data.json`` at the bundle root is the root document, one in ``a/b/`` sits at ``data.a.b``).
    ``revision`` is ``sha256:<hex>`` over every module's name and bytes in name order and the
    canonical JSON of ``data``, so the same content always gives the same revision (recorded in
    each audit record for replay; the policy store is addressed by it).
    """

    def __init__(self, modules: dict[str, str], data: dict[str, Any] | None = None) -> None:
        self.modules = dict(sorted(modules.items()))
        self.data: dict[str, Any] = data or {}
        digest = hashlib.sha256()
        for name, source in self.modules.items():
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        if self.data:
            digest.update(b"data.json\0" + _canonical(self.data) + b"\0")
        self.revision = f"sha256:{digest.hexdigest()}"

    def to_json(self) -> str:
        """``{"modules": {...}, "data": {...}}`` as JSON (the policy store's column)."""
        return json.dumps({"modules": self.modules, "data": self.data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PolicyBundle:
        """Inverse of :meth:`to_json`. Raises ValueError for anything else."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("modules"), dict):
            raise ValueError("a policy bundle is an object with 'modules' (name → Rego source)")
        return cls.from_parts(raw["modules"], raw.get("data") or {})

    @classmethod
    def from_parts(cls, modules: Any, data: Any) -> PolicyBundle:
        """A bundle from untrusted parts (admin API, CLI). Raises ValueError naming the problem."""
        if not isinstance(modules, dict) or not modules:
            raise ValueError("modules must be a non-empty object of file name → Rego source")
        for name, source in modules.items():
            if not isinstance(name, str) or not _MODULE_NAME.match(name) or ".." in name.split("/"):
                raise ValueError(
                    f"module {name!r}: a module name is a relative path of [A-Za-z0-9_.-] parts ending in .rego"
                )
            if not isinstance(source, str):
                raise ValueError(f"module {name!r}: its source must be a string")
        check_data(data)
        return cls(modules, data)

    def with_data(self, path: Sequence[str], value: Any) -> PolicyBundle:
        """A copy with ``data.<path>`` set to ``value`` (a new revision)."""
        data = json.loads(json.dumps(self.data))
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"data.{'.'.join(path)}: {part} is not an object")
        node[path[-1]] = value
        return PolicyBundle(self.modules, data)


_MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*\.rego$")


def check_data(data: Any) -> None:
    """Policy data is an object whose top-level values are objects (each is written to OPA as
    one document, ``PUT /v1/data/<key>``). Raises ValueError naming the key."""
    if not isinstance(data, dict):
        raise ValueError("data must be a JSON object")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(f"data.{key} must be a JSON object (policy data is grouped under top-level keys)")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _merge_data(target: dict[str, Any], path: Sequence[str], value: Any, origin: str) -> None:
    node = target
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{origin}: data.{'.'.join(path)} collides with a non-object value")
    if not isinstance(value, dict):
        raise ValueError(f"{origin}: a data.json file must hold a JSON object")
    for key, item in value.items():
        if key in node:
            raise ValueError(f"{origin}: data.{'.'.join([*path, key])} is defined twice")
        node[key] = item


def load_bundle(path: Path) -> PolicyBundle:
    """Read every ``*.rego`` file under ``path`` (tests ``*_test.rego`` excluded) and every
    ``data.json`` (merged at its directory's path, as OPA bundles do).

    Raises OSError if the directory is unreadable and ValueError if it holds no policy or a
    data file is not a JSON object or collides with another.
    """
    files = sorted(p for p in path.rglob("*.rego") if not p.name.endswith("_test.rego"))
    if not files:
        raise ValueError(f"no .rego files under {path}")
    data: dict[str, Any] = {}
    for data_file in sorted(path.rglob("data.json")):
        rel = data_file.relative_to(path)
        try:
            value = json.loads(data_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{rel}: not valid JSON: {exc}") from exc
        _merge_data(data, rel.parent.parts, value, str(rel))
    check_data(data)
    modules = {str(p.relative_to(path)): p.read_text(encoding="utf-8") for p in files}
    return PolicyBundle(modules, data)


class PolicyEngine(Protocol):
    """A Rego engine holding one active policy revision."""

    name: str

    @property
    def revision(self) -> str:
        """The active bundle revision (``sha256:...``)."""
        ...

    @property
    def bundle(self) -> PolicyBundle:
        """The active bundle."""
        ...

    async def activate(self, bundle: PolicyBundle) -> None:
        """Make ``bundle`` active without a restart. Raises PolicyLoadError when it does not
        compile or calls a builtin the engine lacks; the active bundle then stays."""
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
    rules = raw.get("rules", {})
    if not isinstance(rules, dict) or not all(_str_list(v) for v in rules.values()):
        return deny("policy decision 'rules' is not an object of rule-name lists (treated as deny)")
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
        rules={k: list(v) for k, v in rules.items()},
    )


def decision_view(decision: Decision) -> dict[str, Any]:
    """The replayable part of a decision (what explain and what-if compare), JSON-safe."""
    return {
        "allow": decision.allow,
        "eligible": list(decision.eligible),
        "excluded": {k: list(v) for k, v in sorted(decision.excluded.items())},
        "rules": {k: list(v) for k, v in sorted(decision.rules.items())},
        "obligations": decision.obligations,
        "reasons": list(decision.reasons),
    }
