"""OPA-server policy engine: the decision asked of an Open Policy Agent over its Data API.

One call per decision: ``POST {url}/v1/data/gateway/routing/decision`` with body
``{"input": <policy input>}`` (DESIGN.md "Policy contract"), through ``opa-python-client``'s
:class:`opa_client.AsyncOpaClient` (``query_rule``). Its answer maps to a Decision, failing closed:

* HTTP 200 ``{"result": <value>}`` → :func:`~gateway.policy.parse_decision` (a ``false``, a
  non-object or a malformed object is a deny naming the cause);
* HTTP 200 without a ``result`` key (OPA's answer for an undefined decision) → deny, via
  ``parse_decision(None, ...)``;
* any other HTTP status (OPA answers 400 for a bad request, 500 for an evaluation error such
  as a rule conflict), a body that is not a JSON object, a connection error or a timeout →
  :class:`~gateway.errors.PolicyUnavailable` (503, denied).

How the client is used, and why (opa-python-client 3.0.0):

* its timeout is per session (``aiohttp.ClientTimeout(total=...)``), not per call, so the
  engine sets it to ``policy.timeout_ms`` *and* bounds every call with ``asyncio.wait_for`` at
  the same deadline — a slow OPA costs at most ``timeout_ms`` per request;
* its default retries (2, with 0.3 s / 0.6 s back-off on connection errors and 500/502/504)
  would stretch that deadline and re-ask after an evaluation error, so ``retries=0``;
* it addresses OPA by host and port (``http``/``https``), so ``policy.url`` carries no path
  prefix (checked in :class:`~gateway.config.PolicyConfig`);
* ``query_rule`` raises ``aiohttp.ClientResponseError`` for a 4xx/5xx and drops OPA's error
  body, so a 503's cause names the HTTP status and reason phrase, not OPA's message;
* its aiohttp session is opened on first use (inside the serving event loop) and closed by
  :meth:`OpaEngine.aclose`.

``revision`` is the sha256 of the gateway's active bundle (as for the embedded engine). So
that the revision recorded is the policy OPA evaluated, the engine owns OPA's policies
(``policy.opa_push``, default on): :meth:`OpaEngine.activate` first runs the embedded engine's
load check (syntax and builtins — explain and what-if replay with the embedded engine, so a
policy only OPA could run would not be replayable), then pushes every module through OPA's
Policy API as ``sovereign-gateway/<file>`` and every top-level key of the bundle's data through
``PUT /v1/data/<key>``. OPA compiles each pushed module against those it holds, so modules that
use rules of modules not pushed yet are retried in further rounds (the shipped library is
acyclic); a round without progress means OPA refuses the policy (a compile error): the previous
modules are pushed back, PolicyLoadError is raised, and the active revision stays. Decisions
wait while a push is in flight. If OPA could not be reached when the gateway started, the first
decision pushes (and answers 503 while OPA stays unreachable). With ``opa_push: false`` OPA
loads its policy from bundles the operator publishes, and the engine trusts it holds the
active revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opa_client import AsyncOpaClient

from gateway.context import Decision
from gateway.errors import PolicyUnavailable
from gateway.policy import ENTRYPOINT, PolicyBundle, parse_decision
from gateway.policy.embedded import PolicyLoadError, check_bundle

__all__ = ["PUSH_PREFIX", "OpaEngine", "opa_address"]

PUSH_PREFIX = "sovereign-gateway/"
"""Policy ids the engine pushes to OPA: ``sovereign-gateway/<module file name>``."""


def opa_address(url: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of an OPA base URL such as ``http://127.0.0.1:8181``.

    The port defaults to 8181 (OPA's) when absent. Raises ValueError for a scheme other than
    http/https, a missing host, or a path, query or fragment (the client cannot send one).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"OPA URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"OPA URL has no host: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"OPA URL must be scheme://host[:port] without a path: {url!r}")
    return parts.hostname, parts.port or 8181, parts.scheme == "https"


class OpaEngine:
    """Asks an OPA server for ``data.gateway.routing.decision``; see the module docstring.

    ``bundle``: the policy files the gateway loaded (its revision is reported as the engine's);
    ``url``: OPA's base URL (``http://host:port``); ``timeout_ms``: the deadline of one decision
    (connect, send, evaluate, read); ``push``: own OPA's policies (see the module docstring).
    Raises ValueError for an unusable ``url``.
    """

    name = "opa"

    def __init__(self, bundle: PolicyBundle, *, url: str, timeout_ms: float = 1000.0, push: bool = True) -> None:
        host, port, tls = opa_address(url)
        self._bundle = bundle
        self._push = push
        self._pushed: PolicyBundle | None = None  # what OPA holds (pushed by this engine)
        self._push_lock = asyncio.Lock()
        self._url = url.rstrip("/")
        self._timeout_s = timeout_ms / 1000.0
        self._client = AsyncOpaClient(host=host, port=port, ssl=tls, retries=0, timeout=self._timeout_s)
        self._stack = contextlib.AsyncExitStack()
        self._opened = False
        self._open_lock = asyncio.Lock()

    @property
    def revision(self) -> str:
        """Revision (``sha256:...``) of the bundle loaded from ``policy.path``."""
        return self._bundle.revision

    @property
    def bundle(self) -> PolicyBundle:
        """The active bundle."""
        return self._bundle

    async def activate(self, bundle: PolicyBundle) -> None:
        """Make ``bundle`` active: embedded load check, then (with push) OPA holds it. Raises
        PolicyLoadError when either refuses it or OPA cannot be reached; the active one stays."""
        await asyncio.get_running_loop().run_in_executor(None, check_bundle, bundle)
        if self._push:
            async with self._push_lock:
                await self._push_bundle(bundle)
        self._bundle = bundle

    async def _open(self) -> None:
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self._stack.enter_async_context(self._client)
                    self._opened = True

    async def _push_modules(self, modules: dict[str, str]) -> dict[str, str]:
        """Push in rounds until all compile or a round makes no progress; returns the failures."""
        waiting = dict(modules)
        while waiting:
            failed: dict[str, str] = {}
            for name, source in waiting.items():
                try:
                    await self._client.update_policy_from_string(source, PUSH_PREFIX + name, rego_compat=False)
                except Exception as exc:  # opa-client raises its own errors and aiohttp's alike
                    failed[name] = f"{type(exc).__name__}: {exc}"[:500]
            if len(failed) == len(waiting):
                return failed
            waiting = {name: modules[name] for name in failed}
        return {}

    async def _push_bundle(self, bundle: PolicyBundle) -> None:
        try:
            await asyncio.wait_for(self._open(), timeout=self._timeout_s)
            held = [p for p in await self._client.get_policies_list() if p.startswith(PUSH_PREFIX)]
        except Exception as exc:
            raise PolicyLoadError(
                f"OPA at {self._url} is unreachable, policy not pushed: {type(exc).__name__}"
            ) from exc
        for policy_id in held:  # modules this bundle no longer has could clash with its rules
            if policy_id.removeprefix(PUSH_PREFIX) not in bundle.modules:
                with contextlib.suppress(Exception):
                    await self._client.delete_policy(policy_id)
        failed = await self._push_modules(bundle.modules)
        if not failed:
            try:
                for key, value in bundle.data.items():
                    await self._client.update_or_create_data(value, key)
            except Exception as exc:
                failed = {"data.json": f"{type(exc).__name__}: {exc}"[:500]}
        if failed:
            previous = self._pushed
            for name in bundle.modules:
                if previous is None or name not in previous.modules:
                    with contextlib.suppress(Exception):
                        await self._client.delete_policy(PUSH_PREFIX + name)
            if previous is not None:
                await self._push_modules(previous.modules)
                for key, value in previous.data.items():
                    with contextlib.suppress(Exception):
                        await self._client.update_or_create_data(value, key)
            raise PolicyLoadError(f"OPA refused the policy: {failed}")
        self._pushed = bundle

    @property
    def url(self) -> str:
        """OPA's base URL."""
        return self._url

    async def _query(self, policy_input: dict[str, Any]) -> Any:
        await self._open()
        return await self._client.query_rule(input_data=policy_input, package_path=ENTRYPOINT)

    async def _ensure_pushed(self) -> None:
        """Wait for an activation in flight; push the active bundle if OPA does not hold it yet
        (it was unreachable at start). Raises PolicyUnavailable when that fails."""
        if not self._push or (not self._push_lock.locked() and self._pushed is self._bundle):
            return
        try:
            async with self._push_lock:
                if self._pushed is not self._bundle:
                    await self._push_bundle(self._bundle)
        except PolicyLoadError as exc:
            raise PolicyUnavailable(f"OPA does not hold the active policy (denied): {exc}") from exc

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        """Evaluate ``data.gateway.routing.decision`` on OPA for ``policy_input``.

        Returns a Decision (a deny for ``false``, undefined or malformed results). Raises
        PolicyUnavailable (503) for a non-200 answer, a non-object body, a connection error or
        a timeout.
        """
        await self._ensure_pushed()
        started = time.perf_counter()
        bundle = self._bundle  # the revision this decision is made (and recorded) under
        try:
            body = await asyncio.wait_for(self._query(policy_input), timeout=self._timeout_s)
        except TimeoutError as exc:
            raise PolicyUnavailable(f"OPA did not answer within {self._timeout_s * 1000:g} ms (denied)") from exc
        except aiohttp.ClientResponseError as exc:
            raise PolicyUnavailable(f"OPA answered HTTP {exc.status} {exc.message} (denied)") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise PolicyUnavailable(f"OPA at {self._url} is unreachable (denied): {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict):
            raise PolicyUnavailable(f"OPA answered a {type(body).__name__}, not a JSON object (denied)")
        eval_ms = (time.perf_counter() - started) * 1000.0
        offered = [d["id"] for d in policy_input.get("deployments", [])]
        raw = body.get("result")  # no "result" key: the decision is undefined
        return parse_decision(raw, offered=offered, engine=self.name, revision=bundle.revision, eval_ms=eval_ms)

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        self._opened = False
        await self._stack.aclose()
