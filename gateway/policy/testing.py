"""Table-driven policy tests, evaluated through the embedded engine.

Each policy module has its tests beside it in ``<name>_test.yaml`` (regopy crashes on Rego
test rules that combine ``in`` with ``with input as``, so tests are data, not Rego)::

    cases:
      - name: internal data may go to an EU provider, not a US one
        input:                    # deep-merged over testdata/input.json (null deletes a key;
          data: {level: internal} #  "deployments" may map id -> overrides)
        expect:                   # only the keys given are checked
          allow: true
          eligible: [local-eu, ext-eu]
          rules: {ext-us: [jurisdiction_not_allowed]}   # exact: every excluded id and its rules
          excluded_contains: {ext-us: "jurisdiction US"} # a substring of one of its reasons
          obligations: {}
          reasons: [...]
      data: {killswitch: {external_egress_blocked: true}}  # optional: policy data overrides

Used by ``gateway policy test DIR``, by the policy push (a version whose tests fail is not
stored) and by the test suite.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.policy import PolicyBundle, decision_view
from gateway.policy.embedded import Evaluator

__all__ = ["CaseResult", "PolicyCase", "cases_from_documents", "load_tests", "run_tests"]

BASE_INPUT = Path("testdata") / "input.json"


@dataclass(frozen=True)
class PolicyCase:
    """One table row: ``input`` (the full policy input), ``expect``, optional ``data`` patch."""

    file: str
    name: str
    input: dict[str, Any]
    expect: dict[str, Any]
    data: dict[str, Any] | None = None


@dataclass
class CaseResult:
    """Outcome of one case: ``problems`` is empty when it passed."""

    case: PolicyCase
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.problems


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key == "deployments" and isinstance(value, dict) and isinstance(out.get(key), list):
                out[key] = [
                    _merge(d, value[d.get("id")]) if isinstance(d, dict) and d.get("id") in value else d
                    for d in out[key]
                ]
            else:
                out[key] = _merge(out.get(key), value)
        return out
    return copy.deepcopy(patch)


def cases_from_documents(documents: dict[str, str], base_input: dict[str, Any]) -> list[PolicyCase]:
    """Cases from YAML texts (file name → text). Raises ValueError naming the file and case."""
    cases: list[PolicyCase] = []
    for file, text in sorted(documents.items()):
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{file}: not valid YAML: {exc}") from exc
        rows = doc.get("cases") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"{file}: expected a top-level 'cases' list")
        for i, row in enumerate(rows):
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("name"), str)
                or not isinstance(row.get("expect"), dict)
            ):
                raise ValueError(f"{file}: cases[{i}] needs 'name' (string) and 'expect' (mapping)")
            patch = row.get("input") or {}
            data = row.get("data")
            if not isinstance(patch, dict) or (data is not None and not isinstance(data, dict)):
                raise ValueError(f"{file}: cases[{i}] 'input' and 'data' must be mappings")
            cases.append(PolicyCase(file, row["name"], _merge(base_input, patch), row["expect"], data))
    return cases


def load_tests(directory: Path) -> list[PolicyCase]:
    """Every ``*_test.yaml`` under ``directory`` with ``testdata/input.json`` as the base input.

    Raises OSError/ValueError when a file is unreadable or malformed.
    """
    files = sorted(directory.rglob("*_test.yaml"))
    if not files:
        return []
    base = json.loads((directory / BASE_INPUT).read_text(encoding="utf-8"))
    return cases_from_documents({str(f.relative_to(directory)): f.read_text(encoding="utf-8") for f in files}, base)


def _check(view: dict[str, Any], expect: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("allow", "eligible", "obligations", "reasons"):
        if key in expect and view[key] != expect[key]:
            problems.append(f"{key}: expected {expect[key]!r}, got {view[key]!r}")
    if "rules" in expect:
        wanted = {k: sorted(v) for k, v in (expect["rules"] or {}).items()}
        if view["rules"] != wanted:
            problems.append(f"rules: expected {wanted!r}, got {view['rules']!r}")
    for dep, fragment in (expect.get("excluded_contains") or {}).items():
        if not any(fragment in reason for reason in view["excluded"].get(dep, [])):
            problems.append(f"excluded[{dep}]: no reason contains {fragment!r} (got {view['excluded'].get(dep)!r})")
    return problems


def run_tests(bundle: PolicyBundle, cases: list[PolicyCase], *, evaluator: Evaluator | None = None) -> list[CaseResult]:
    """Evaluate every case through the embedded engine (``evaluator``: ``bundle`` already
    compiled, reused). Raises PolicyLoadError if ``bundle`` (or a case's data patch of it)
    does not compile."""
    evaluators: dict[str, Evaluator] = {bundle.revision: evaluator} if evaluator is not None else {}
    results = []
    for case in cases:
        target = PolicyBundle(bundle.modules, _merge(bundle.data, case.data)) if case.data else bundle
        compiled = evaluators.get(target.revision)
        if compiled is None:
            compiled = evaluators[target.revision] = Evaluator(target)
        view = decision_view(compiled.decide(case.input))
        results.append(CaseResult(case, _check(view, case.expect)))
    return results
