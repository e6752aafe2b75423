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

``revision`` is the sha256 of the gateway's active bundle (as for the embedded engine):
the operator serves OPA the same revision as an OPA bundle (``gateway policy bundle`` writes the
active one). The engine does not push policies to OPA: OPA's Policy API compiles one module at a
time, so modules of one package that refer to each other cannot be pushed one by one. It cannot
see OPA's own bundle revision either; :meth:`OpaEngine.activate` checks the bundle with the
embedded engine's load check (syntax and builtins — explain and what-if replay decisions with
the embedded engine, so a policy only OPA could run would not be replayable) before the
gateway records decisions under the new revision.
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

__all__ = ["OpaEngine", "opa_address"]


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
    (connect, send, evaluate, read). Raises ValueError for an unusable ``url``.
    """

    name = "opa"

    def __init__(self, bundle: PolicyBundle, *, url: str, timeout_ms: float = 1000.0) -> None:
        host, port, tls = opa_address(url)
        self._bundle = bundle
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
        """Record decisions under ``bundle`` from now on, after the embedded load check
        (raises PolicyLoadError; the active revision stays)."""
        from gateway.policy.embedded import check_bundle

        await asyncio.get_running_loop().run_in_executor(None, check_bundle, bundle)
        self._bundle = bundle

    @property
    def url(self) -> str:
        """OPA's base URL."""
        return self._url

    async def _query(self, policy_input: dict[str, Any]) -> Any:
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self._stack.enter_async_context(self._client)
                    self._opened = True
        return await self._client.query_rule(input_data=policy_input, package_path=ENTRYPOINT)

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        """Evaluate ``data.gateway.routing.decision`` on OPA for ``policy_input``.

        Returns a Decision (a deny for ``false``, undefined or malformed results). Raises
        PolicyUnavailable (503) for a non-200 answer, a non-object body, a connection error or
        a timeout.
        """
        started = time.perf_counter()
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
        return parse_decision(raw, offered=offered, engine=self.name, revision=self.revision, eval_ms=eval_ms)

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        self._opened = False
        await self._stack.aclose()
