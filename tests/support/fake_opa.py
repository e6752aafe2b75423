"""Loopback stand-in for an OPA server (Data and Policy APIs), evaluating Rego with regopy.

No OPA binary can be downloaded in this environment, so :class:`FakeOpa` implements the part
of OPA's REST API the gateway and the contract tests use, with OPA's semantics:

``PUT /v1/policies/{id}`` (body: Rego source, ``text/plain``)
    Add or replace a module. 200 ``{}``; 400 ``{"code": "invalid_parameter", "message":
    "error(s) occurred while compiling module(s)", "errors": [{"code": "rego_compile_error",
    "message": ...}]}`` when the module set does not compile (the previous set stays).
``PUT /v1/data/{path}`` (body: a JSON value)
    Create or replace the base document at ``data.<path>``. 204; 400 for a body that is not JSON.
``DELETE /v1/policies/{id}``
    Remove a module. 200 ``{}``; 404 ``{"code": "resource_not_found", ...}`` if unknown.
``GET /v1/policies``
    ``{"result": [{"id": ..., "raw": ...}, ...]}``.
``POST /v1/data/{path}`` (body: ``{"input": ...}``, optional)
    Evaluate ``data.<path with / as .>``. 200 ``{"result": value}``, or 200 ``{}`` when the
    value is undefined (OPA's answer for an undefined decision); 400 ``{"code":
    "invalid_parameter", "message": "body contains malformed input document: ..."}`` for a
    body that is not JSON; 500 ``{"code": "internal_error", "message": ...}`` when evaluation
    fails (a rule conflict: regopy's ``ok()`` is false).
``GET /health``
    200 ``{}``.

Evaluation runs on a small thread pool; each thread holds its own regopy interpreter and
compiled bundle per (module generation, entrypoint) — regopy interpreters crash when shared.
Entry points are compiled with ``build`` + ``query_bundle_entrypoint`` so that a rule whose
value is ``false`` answers ``{"result": false}`` as OPA does (a bare regopy query would call
it undefined).

Misbehaviour for fail-closed tests, set with :meth:`FakeOpa.behave` (replaces the previous
one; applies to ``POST /v1/data`` only): ``delay_s`` (sleep first), ``status`` / ``body``
(answer this instead of evaluating; ``status`` alone answers OPA's 500 ``internal_error``
shape, ``body`` alone answers 200), ``times`` (then revert to evaluating; None = until reset).
Every data query is recorded in :attr:`FakeOpa.queries` as ``(path, body)``.

Example::

    with FakeOpa(modules={"routing.rego": source}) as opa:
        httpx.post(opa.url + "/v1/data/gateway/routing/decision", json={"input": {...}})
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web
from regopy import Interpreter

from tests.support.servers import AiohttpThread

__all__ = ["INTERNAL_ERROR_BODY", "FakeOpa", "OpaBehaviour"]

#: Body answered when a behaviour sets ``status`` without ``body`` (OPA's error shape).
INTERNAL_ERROR_BODY: dict[str, Any] = {"code": "internal_error", "message": "simulated OPA failure"}


@dataclass
class OpaBehaviour:
    """How :class:`FakeOpa` answers data queries; see the module docstring."""

    status: int | None = None
    body: Any = None
    delay_s: float | None = None
    times: int | None = None


class _EvalError(Exception):
    """regopy reported an evaluation error (answered as HTTP 500)."""


class FakeOpa:
    """A fake OPA server on ``127.0.0.1`` (free port) in a background thread.

    ``modules``: initial Rego modules (id → source), as if PUT to ``/v1/policies/{id}``;
    ``data``: the initial base document (as if PUT to ``/v1/data``); ``threads``: evaluation
    threads. Raises ValueError at construction if ``modules`` do not
    compile.
    """

    def __init__(
        self, modules: dict[str, str] | None = None, *, data: dict[str, Any] | None = None, threads: int = 2
    ) -> None:
        self._lock = threading.Lock()
        self._modules: dict[str, str] = {}
        self._document: dict[str, Any] = dict(data or {})
        self._generation = 0
        if modules:
            error = self._compile_error(dict(modules))
            if error:
                raise ValueError(error)
            self._modules = dict(modules)
        self._behaviour: OpaBehaviour | None = None
        self._refuse: str | None = None
        self._queries: list[tuple[str, Any]] = []
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fake-opa-rego")
        self._server = AiohttpThread(self._app, name="fake-opa")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; returns self. Raises RuntimeError if already started."""
        self._server.start()
        return self

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_put("/v1/policies/{id:.+}", self._put_policy)
        app.router.add_delete("/v1/policies/{id:.+}", self._delete_policy)
        app.router.add_get("/v1/policies", self._list_policies)
        app.router.add_get("/v1/policies/", self._list_policies)  # opa-python-client asks with the slash
        app.router.add_post("/v1/data/{path:.*}", self._data)
        app.router.add_put("/v1/data/{path:.*}", self._put_data)
        app.router.add_get("/health", self._health)
        return app

    def stop(self) -> None:
        """Stop the server, its thread and the evaluation pool (idempotent)."""
        self._server.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- inspection and behaviour ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>`` (only while started)."""
        if self._server.port is None:
            raise RuntimeError("FakeOpa is not started")
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def queries(self) -> list[tuple[str, Any]]:
        """Data queries received since start/reset: ``(path, parsed body or None)``."""
        with self._lock:
            return list(self._queries)

    def behave(
        self, *, status: int | None = None, body: Any = None, delay_s: float | None = None, times: int | None = None
    ) -> None:
        """Replace the current misbehaviour (see the module docstring)."""
        with self._lock:
            self._behaviour = OpaBehaviour(status=status, body=body, delay_s=delay_s, times=times)

    def refuse_modules(self, fragment: str | None) -> None:
        """Answer ``PUT /v1/policies`` with OPA's 400 compile error for any module whose source
        contains ``fragment`` (a builtin regopy lacks but OPA would reject, say); None stops."""
        with self._lock:
            self._refuse = fragment

    @property
    def modules(self) -> dict[str, str]:
        """The modules held (id → source)."""
        with self._lock:
            return dict(self._modules)

    def reset(self) -> None:
        """Forget recorded queries and misbehaviour (modules stay)."""
        with self._lock:
            self._behaviour = None
            self._queries.clear()

    # -- evaluation (pool threads) --------------------------------------------------------------

    @staticmethod
    def _compile_error(modules: dict[str, str]) -> str | None:
        rego = Interpreter()
        try:
            for name, source in sorted(modules.items()):
                rego.add_module(name, source)
            rego.build("true", [])  # regopy needs a query or an entrypoint to compile
        except Exception as exc:
            return str(exc).strip()[:2000] or "does not compile"
        return None

    def _evaluate(self, entrypoint: str, input_json: str | None) -> tuple[bool, Any]:
        """(defined, value) of ``entrypoint`` (``a/b/c``); raises _EvalError on engine errors."""
        with self._lock:
            generation, modules, data = self._generation, dict(self._modules), json.dumps(self._document)
        cache: dict[tuple[int, str], tuple[Interpreter, Any]] = getattr(self._local, "cache", {})
        if not cache or next(iter(cache))[0] != generation:
            cache = {}
            self._local.cache = cache
        entry = cache.get((generation, entrypoint))
        if entry is None:
            rego = Interpreter()
            for name, source in sorted(modules.items()):
                rego.add_module(name, source)
            rego.add_data_json(data)
            try:
                compiled = rego.build(None, [entrypoint])
            except Exception as exc:
                raise _EvalError(str(exc).strip()[:2000]) from exc
            entry = cache[(generation, entrypoint)] = (rego, compiled)
        rego, compiled = entry
        rego.set_input_term(input_json if input_json is not None else "{}")
        output = rego.query_bundle_entrypoint(compiled, entrypoint)
        if not output.ok():
            raise _EvalError(f"eval_error: {str(output).strip()[:500]}")
        text = str(output).strip()
        if text == "undefined":
            return False, None
        try:
            result = json.loads(text)
        except ValueError as exc:  # regopy prints error terms it cannot serialise as JSON
            raise _EvalError(f"eval_error: {text[:500]}") from exc
        expressions = result.get("expressions") if isinstance(result, dict) else None
        if not expressions:
            return False, None
        return True, expressions[0]

    # -- handlers -------------------------------------------------------------------------------

    async def _put_policy(self, request: web.Request) -> web.Response:
        policy_id = request.match_info["id"]
        source = await request.text()
        with self._lock:
            candidate = {**self._modules, policy_id: source}
            refuse = self._refuse
        if refuse is not None and refuse in source:
            error: str | None = f"{policy_id}: refused by the test (contains {refuse!r})"
        else:
            error = await asyncio.get_running_loop().run_in_executor(self._pool, self._compile_error, candidate)
        if error:
            return web.json_response(
                {
                    "code": "invalid_parameter",
                    "message": "error(s) occurred while compiling module(s)",
                    "errors": [{"code": "rego_compile_error", "message": error, "location": {"file": policy_id}}],
                },
                status=400,
            )
        with self._lock:
            self._modules[policy_id] = source
            self._generation += 1
        return web.json_response({})

    async def _delete_policy(self, request: web.Request) -> web.Response:
        policy_id = request.match_info["id"]
        with self._lock:
            if policy_id not in self._modules:
                return web.json_response(
                    {"code": "resource_not_found", "message": f"storage_not_found_error: policy id {policy_id!r}"},
                    status=404,
                )
            del self._modules[policy_id]
            self._generation += 1
        return web.json_response({})

    async def _put_data(self, request: web.Request) -> web.Response:
        parts = [p for p in request.match_info["path"].split("/") if p]
        try:
            value = json.loads(await request.read())
        except ValueError as exc:
            return web.json_response({"code": "invalid_parameter", "message": f"malformed JSON: {exc}"}, status=400)
        with self._lock:
            if not parts:
                if not isinstance(value, dict):
                    return web.json_response(
                        {"code": "invalid_parameter", "message": "root must be an object"}, status=400
                    )
                self._document = value
            else:
                node = self._document
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
            self._generation += 1
        return web.Response(status=204)

    async def _list_policies(self, request: web.Request) -> web.Response:
        with self._lock:
            items = [{"id": k, "raw": v} for k, v in sorted(self._modules.items())]
        return web.json_response({"result": items})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _data(self, request: web.Request) -> web.Response:
        path = request.match_info["path"].strip("/")
        raw = await request.read()
        body: Any = None
        malformed: str | None = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as exc:
                malformed = str(exc)
        with self._lock:
            self._queries.append((path, body))
            behaviour = self._behaviour
            if behaviour is not None and behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    self._behaviour = None
        if behaviour is not None:
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)
            if behaviour.status is not None or behaviour.body is not None:
                status = behaviour.status if behaviour.status is not None else 200
                answer = behaviour.body if behaviour.body is not None else INTERNAL_ERROR_BODY
                return web.json_response(answer, status=status)
        if malformed is not None or (body is not None and not isinstance(body, dict)):
            return web.json_response(
                {"code": "invalid_parameter", "message": f"body contains malformed input document: {malformed}"},
                status=400,
            )
        if not path:
            return web.json_response({"code": "invalid_parameter", "message": "fake OPA: empty data path"}, status=400)
        input_json = json.dumps(body["input"]) if body and "input" in body else None
        try:
            defined, value = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._evaluate, path, input_json
            )
        except _EvalError as exc:
            return web.json_response({"code": "internal_error", "message": str(exc)}, status=500)
        return web.json_response({"result": value} if defined else {})
