"""Embedded policy engine: Rego evaluated in-process with ``regopy`` (rego-cpp).

regopy traits designed around (DESIGN.md "Policy contract"):

* compile once per revision per thread (``Interpreter.build`` → bundle, then
  ``query_bundle_entrypoint``); interpreters are never shared between threads (a shared one
  crashes), so evaluation runs on a small pool whose threads each hold their own;
* a bare ``false`` comes back undefined, so the decision is an object;
* an unsupported builtin evaluates silently to undefined, so loading checks every called
  function with ``is_builtin`` and refuses the bundle otherwise;
* ``not output.ok()`` → deny.

Evaluation has a timeout (``policy.timeout_ms``); timeout or engine error raises
PolicyUnavailable (fail closed).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from regopy import Interpreter

from gateway.context import Decision
from gateway.errors import PolicyUnavailable
from gateway.policy import ENTRYPOINT, PolicyBundle, parse_decision

__all__ = ["EmbeddedEngine", "Evaluator", "PolicyLoadError", "check_bundle"]

_REGO_KEYWORDS = frozenset({"if", "in", "not", "some", "every", "contains", "else", "with", "as", "default"})
_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\(")
# A function definition: `name(args) :=`, `name(args) = `, `name(args) if`, `name(args) {`.
_DEF = re.compile(r"^([A-Za-z_]\w*)\([^)\n]*\)\s*(?::=|=(?!=)|if\b|\{)", re.MULTILINE)
_STRINGS_AND_COMMENTS = re.compile(r'"(?:\\.|[^"\\])*"|`[^`]*`|#[^\n]*')


class PolicyLoadError(ValueError):
    """A bundle does not compile or calls a function the engine does not implement."""


def _called_functions(source: str) -> tuple[set[str], set[str]]:
    """(called names, names defined as functions in this module), strings/comments ignored."""
    code = _STRINGS_AND_COMMENTS.sub('""', source)
    called = {m.group(1) for m in _CALL.finditer(code)}
    defined = {m.group(1) for m in _DEF.finditer(code)}
    return called, defined


def check_bundle(bundle: PolicyBundle) -> Evaluator:
    """Check ``bundle``'s builtins and compile it; returns the compiled :class:`Evaluator`
    (for the calling thread). Raises PolicyLoadError with the reason.

    A policy that calls e.g. ``net.cidr_contains`` (not in rego-cpp) would otherwise load and
    silently evaluate to undefined for every request.
    """
    rego = Interpreter()
    defined: set[str] = set()
    called: set[str] = set()
    for source in bundle.modules.values():
        c, d = _called_functions(source)
        called |= c
        defined |= d
    missing = sorted(
        name
        for name in called
        if name not in defined
        # a function of another module called through an import alias (`lib.f` for data.lib.f)
        and not ("." in name and name.rsplit(".", 1)[1] in defined)
        and name not in _REGO_KEYWORDS
        and not name.startswith(("data.", "input."))
        and not rego.is_builtin(name)
    )
    if missing:
        raise PolicyLoadError(f"policy calls functions the embedded engine does not implement: {missing}")
    return Evaluator(bundle)


def _compile(bundle: PolicyBundle) -> tuple[Interpreter, Any]:
    rego = Interpreter()
    try:
        for name, source in bundle.modules.items():
            rego.add_module(name, source)
        if bundle.data:
            rego.add_data_json(json.dumps(bundle.data))
        compiled = rego.build(None, [ENTRYPOINT])
    except Exception as exc:  # regopy raises RegoError with the compiler's message
        raise PolicyLoadError(f"policy does not compile: {str(exc).strip()[:2000]}") from exc
    return rego, compiled


class Evaluator:
    """One compiled bundle on one thread (regopy interpreters must not be shared).

    Synchronous: used by each worker thread of :class:`EmbeddedEngine` and by offline tools
    (policy tests, explain, what-if). Raises PolicyLoadError if ``bundle`` does not compile.
    """

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self._rego, self._compiled = _compile(bundle)

    def evaluate(self, policy_input: dict[str, Any] | str) -> Any:
        """The decoded value of the entrypoint for ``policy_input`` (None when undefined).

        Raises RuntimeError when the engine reports an error (``not ok()``, e.g. a rule
        conflict) and ValueError when its output is not JSON.
        """
        text_input = policy_input if isinstance(policy_input, str) else json.dumps(policy_input)
        self._rego.set_input_term(text_input)
        output = self._rego.query_bundle_entrypoint(self._compiled, ENTRYPOINT)
        if not output.ok():
            raise RuntimeError(str(output).strip()[:500])
        text = str(output)
        if text.strip() == "undefined":
            return None
        result = json.loads(text)
        expressions = result.get("expressions") if isinstance(result, dict) else None
        if not expressions:
            return None
        return expressions[0]

    def decide(self, policy_input: dict[str, Any], *, engine: str = "embedded") -> Decision:
        """Evaluate and parse (fail closed) in one call; engine errors come back as a deny
        naming the cause instead of raising (offline tools report, they do not serve)."""
        started = time.perf_counter()
        try:
            raw = self.evaluate(policy_input)
        except (RuntimeError, ValueError) as exc:
            eval_ms = (time.perf_counter() - started) * 1000.0
            return parse_decision(
                {"allow": False, "reasons": [f"policy evaluation failed (denied): {exc}"]},
                offered=[],
                engine=engine,
                revision=self.bundle.revision,
                eval_ms=eval_ms,
            )
        eval_ms = (time.perf_counter() - started) * 1000.0
        offered = [str(d.get("id")) for d in policy_input.get("deployments", []) if isinstance(d, dict)]
        return parse_decision(raw, offered=offered, engine=engine, revision=self.bundle.revision, eval_ms=eval_ms)


class EmbeddedEngine:
    """regopy engine with one :class:`Evaluator` per worker thread.

    ``timeout_ms``: evaluation deadline; ``threads``: worker threads (each compiles the active
    bundle once, on first use after an activation). :meth:`activate` swaps the bundle without
    a restart, after :func:`check_bundle` accepted it (a refused bundle leaves the active one).
    """

    name = "embedded"

    def __init__(self, bundle: PolicyBundle, *, timeout_ms: float = 1000.0, threads: int = 2) -> None:
        check_bundle(bundle)
        self._bundle = bundle
        self._timeout_s = timeout_ms / 1000.0
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rego")

    @property
    def revision(self) -> str:
        """Active bundle revision (``sha256:...``)."""
        return self._bundle.revision

    @property
    def bundle(self) -> PolicyBundle:
        """The active bundle."""
        return self._bundle

    async def activate(self, bundle: PolicyBundle) -> None:
        """Make ``bundle`` the active revision. Raises PolicyLoadError (the active one stays)."""
        await asyncio.get_running_loop().run_in_executor(None, check_bundle, bundle)
        self._bundle = bundle

    def _evaluate_sync(self, input_json: str, bundle: PolicyBundle) -> Any:
        evaluator: Evaluator | None = getattr(self._local, "evaluator", None)
        if evaluator is None or evaluator.bundle.revision != bundle.revision:
            evaluator = Evaluator(bundle)
            self._local.evaluator = evaluator
        return evaluator.evaluate(input_json)

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        """Evaluate ``data.gateway.routing.decision`` for ``policy_input``.

        Raises PolicyUnavailable on engine error or timeout; returns a deny Decision for an
        undefined or malformed result.
        """
        started = time.perf_counter()
        bundle = self._bundle  # the revision this decision is made (and recorded) under
        loop = asyncio.get_running_loop()
        try:
            raw = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._evaluate_sync, json.dumps(policy_input), bundle),
                timeout=self._timeout_s,
            )
        except TimeoutError as exc:
            raise PolicyUnavailable(f"policy evaluation exceeded {self._timeout_s * 1000:g} ms (denied)") from exc
        except Exception as exc:
            raise PolicyUnavailable(f"policy evaluation failed (denied): {exc}") from exc
        eval_ms = (time.perf_counter() - started) * 1000.0
        offered = [d["id"] for d in policy_input.get("deployments", [])]
        return parse_decision(raw, offered=offered, engine=self.name, revision=bundle.revision, eval_ms=eval_ms)

    async def aclose(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
