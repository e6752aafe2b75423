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

__all__ = ["EmbeddedEngine", "PolicyLoadError", "check_bundle"]

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


def check_bundle(bundle: PolicyBundle) -> None:
    """Compile ``bundle`` and check its builtins; raises PolicyLoadError with the reason.

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
    _compile(bundle)


def _compile(bundle: PolicyBundle) -> tuple[Interpreter, Any]:
    rego = Interpreter()
    try:
        for name, source in bundle.modules.items():
            rego.add_module(name, source)
        compiled = rego.build(None, [ENTRYPOINT])
    except Exception as exc:  # regopy raises RegoError with the compiler's message
        raise PolicyLoadError(f"policy does not compile: {str(exc).strip()[:2000]}") from exc
    return rego, compiled


class EmbeddedEngine:
    """regopy engine with one interpreter and compiled bundle per worker thread.

    ``timeout_ms``: evaluation deadline; ``threads``: worker threads (each compiles the
    bundle once, on first use).
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

    def _evaluate_sync(self, input_json: str) -> Any:
        state = getattr(self._local, "state", None)
        if state is None or state[0] != self._bundle.revision:
            rego, compiled = _compile(self._bundle)
            state = (self._bundle.revision, rego, compiled)
            self._local.state = state
        _, rego, compiled = state
        rego.set_input_term(input_json)
        output = rego.query_bundle_entrypoint(compiled, ENTRYPOINT)
        if not output.ok():
            raise RuntimeError(str(output).strip()[:500])
        text = str(output)
        if text.strip() == "undefined":
            return None
        result = json.loads(text)  # a ValueError here is an engine error: PolicyUnavailable
        expressions = result.get("expressions") if isinstance(result, dict) else None
        if not expressions:
            return None
        return expressions[0]

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        """Evaluate ``data.gateway.routing.decision`` for ``policy_input``.

        Raises PolicyUnavailable on engine error or timeout; returns a deny Decision for an
        undefined or malformed result.
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            raw = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._evaluate_sync, json.dumps(policy_input)),
                timeout=self._timeout_s,
            )
        except TimeoutError as exc:
            raise PolicyUnavailable(f"policy evaluation exceeded {self._timeout_s * 1000:g} ms (denied)") from exc
        except Exception as exc:
            raise PolicyUnavailable(f"policy evaluation failed (denied): {exc}") from exc
        eval_ms = (time.perf_counter() - started) * 1000.0
        offered = [d["id"] for d in policy_input.get("deployments", [])]
        return parse_decision(raw, offered=offered, engine=self.name, revision=self.revision, eval_ms=eval_ms)

    async def aclose(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
