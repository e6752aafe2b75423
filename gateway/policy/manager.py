"""Policy lifecycle: versions pushed, validated, tested, activated and rolled back without a
restart, on every worker and replica.

The active revision lives in the database (:class:`~gateway.policy.store.PolicyStore`). At
start, the bundle in ``policy.path`` is stored (content-addressed); when its revision is new (a
changed file set) or nothing was active yet, it is activated (``bootstrap``); otherwise the
database's active revision wins, so an activation or rollback made through the admin API or
CLI survives restarts. Every worker then follows the database: :meth:`PolicyManager.refresh`
runs on change notifications (Redis pub/sub when Redis is configured, polling otherwise;
:mod:`gateway.notify`). A version that does not compile, calls a builtin the embedded engine
lacks, or fails its tests is refused with the reason, and the active version stays.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import InvalidRequest, NotFound
from gateway.notify import publish
from gateway.policy import PolicyBundle, PolicyEngine
from gateway.policy.embedded import PolicyLoadError, check_bundle
from gateway.policy.store import PolicyStore
from gateway.policy.testing import PolicyCase, run_tests

__all__ = ["PROBE_INPUT", "TOPIC", "PolicyManager", "validate"]

log = logging.getLogger("gateway.policy")

TOPIC = "policy"
"""Change-notification topic of policy activations."""


PROBE_INPUT: dict[str, Any] = {
    "principal": {"tenant": "probe", "key_id": "k_probe", "roles": ["app"], "home_region": "eu"},
    "request": {"id": "req_probe", "endpoint": "chat.completions", "model": "probe", "needs": [],
                "est_input_tokens": 10, "max_output_tokens": 16, "choices": 1},
    "data": {"level": "public", "labels": [], "declared": None, "detected": "public"},
    "tenant": {"floor": "public", "allowed": {"public": {"any": True}}, "capture_prompts": False,
               "redact_external": [], "cost_ceiling_usd": {}, "models": None},
    "deployments": [{"id": "probe-local", "adapter": "openai_compat", "locality": "local", "jurisdiction": "EU",
                     "region": "eu-1", "retains_data": False, "trains_on_data": False, "capabilities": [],
                     "context_window": 4096, "price": {"input_per_mtok": 0.0, "output_per_mtok": 0.0},
                     "quality": 0.5, "healthy": True}],
}  # fmt: skip
"""A well-formed policy input a version must answer with a decision object (any allow)."""


def validate(bundle: PolicyBundle, tests: list[PolicyCase] | None = None) -> dict[str, Any]:
    """Check ``bundle`` (compiles; every builtin exists in the embedded engine; it answers a
    well-formed input with a decision object, :data:`PROBE_INPUT`) and run ``tests`` through
    it. Returns ``{"tests": n, "passed": n}``.

    Raises InvalidRequest (400, param ``modules`` or ``tests``) naming the problem.
    """
    try:
        evaluator = check_bundle(bundle)
        raw = evaluator.evaluate(PROBE_INPUT)
    except (PolicyLoadError, RuntimeError, ValueError) as exc:
        raise InvalidRequest(f"policy refused: {exc}", param="modules", code="policy_invalid") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("allow"), bool):
        shape = "undefined" if raw is None else f"a {type(raw).__name__}"
        raise InvalidRequest(
            "policy refused: data.gateway.routing.decision must be an object with a boolean 'allow' for every "
            f"input; for a well-formed probe input it is {shape}",
            param="modules",
            code="policy_invalid",
        )
    results = run_tests(bundle, tests or [], evaluator=evaluator)
    failed = [r for r in results if not r.passed]
    if failed:
        detail = "; ".join(f"{r.case.file}: {r.case.name}: {', '.join(r.problems)}" for r in failed[:5])
        raise InvalidRequest(
            f"policy refused: {len(failed)} of {len(results)} policy tests failed: {detail}",
            param="tests",
            code="policy_tests_failed",
        )
    return {"tests": len(results), "passed": len(results)}


class PolicyManager:
    """Keeps ``engine`` on the database's active revision; pushes, activates, rolls back.

    ``file_bundle``: the bundle loaded from ``policy.path`` (``source``: its directory, for the
    record); ``redis_url``: the shared Redis for change notifications (None: peers poll);
    ``default_tests``: the table tests beside ``policy.path``, run on a push that brings none;
    ``topic``: the change-notification topic (namespaced by the shared Redis's key prefix).
    """

    def __init__(
        self,
        engine: PolicyEngine,
        store: PolicyStore,
        *,
        file_bundle: PolicyBundle,
        source: str,
        redis_url: str | None,
        default_tests: list[PolicyCase] | None = None,
        topic: str = TOPIC,
    ) -> None:
        self.engine = engine
        self._topic = topic
        self._default_tests = list(default_tests or [])
        self.store = store
        self._file_bundle = file_bundle
        self._source = source
        self._redis_url = redis_url
        self._bootstrapped = False

    async def bootstrap(self) -> dict[str, Any] | None:
        """Store the file bundle and activate it if new; else follow the database.

        Returns the activation (``{"from", "to", "action"}``) when one happened. Raises
        SQLAlchemyError when the database is unreachable (the engine keeps the file bundle).
        """
        created = await self.store.push(self._file_bundle, by=f"config:{self._source}", source="file")
        active = await self.store.active()
        activation = None
        if created or active is None:
            await self.store.record_activation(
                self._file_bundle.revision, previous=active, by=f"config:{self._source}", action="bootstrap"
            )
            activation = {"action": "bootstrap", "from": active, "to": self._file_bundle.revision}
        self._bootstrapped = True
        await self.refresh()
        return activation

    async def refresh(self) -> None:
        """Activate the database's active revision here if it differs from the engine's.

        Raises SQLAlchemyError when the database is unreachable; PolicyLoadError is logged
        (a stored version that no longer loads keeps the current one active).
        """
        if not self._bootstrapped:
            await self.bootstrap()
            return
        active = await self.store.active()
        if active is None or active == self.engine.revision:
            return
        bundle = await self.store.get(active)
        if bundle is None:
            log.error("active policy revision %s is not stored; keeping %s", active, self.engine.revision)
            return
        try:
            await self.engine.activate(bundle)
        except PolicyLoadError as exc:
            log.error(
                "active policy revision %s does not load here (%s); keeping %s", active, exc, self.engine.revision
            )
            return
        log.info("policy revision %s active", active)

    async def push(
        self,
        bundle: PolicyBundle,
        *,
        by: str,
        source: str,
        description: str = "",
        tests: list[PolicyCase] | None = None,
        activate: bool = False,
    ) -> dict[str, Any]:
        """Validate and store ``bundle``; activate it when asked. ``tests``: the table tests to
        run (None: the default tests beside ``policy.path``; a push that changes behaviour on
        purpose brings its own).

        Returns ``{"revision", "created", "tests", "passed", "activated", "from"?, "to"?}``.
        Raises InvalidRequest when the bundle is refused (nothing stored, active stays).
        """
        summary = validate(bundle, self._default_tests if tests is None else tests)
        created = await self.store.push(bundle, by=by, source=source, description=description)
        result: dict[str, Any] = {"revision": bundle.revision, "created": created, **summary, "activated": False}
        if activate:
            result.update(await self.activate(bundle.revision, by=by), activated=True)
        return result

    async def activate(self, revision: str, *, by: str, action: str = "activate") -> dict[str, Any]:
        """Make a stored ``revision`` active everywhere. Returns ``{"from", "to", "action"}``.

        Raises NotFound (unknown revision) or InvalidRequest (it does not load; active stays).
        """
        bundle = await self.store.get(revision)
        if bundle is None:
            raise NotFound(f"policy revision {revision!r} is not stored", param="revision", code="policy_not_found")
        description = await self.store.describe(revision)
        previous = self.engine.revision
        try:
            await self.engine.activate(bundle)
        except PolicyLoadError as exc:
            raise InvalidRequest(f"policy refused: {exc}", param="revision", code="policy_invalid") from exc
        try:
            await self.store.record_activation(revision, previous=previous, by=by, action=action)
        except SQLAlchemyError:
            previous_bundle = await self.store.get(previous)
            if previous_bundle is not None:
                await self.engine.activate(previous_bundle)
            raise
        await publish(self._redis_url, self._topic)
        return {"action": action, "from": previous, "to": revision, "to_description": description}

    async def rollback(self, *, by: str, to: str | None = None) -> dict[str, Any]:
        """Activate ``to``, or the revision the latest activation replaced (as ``helm rollback``
        does: rolling back twice returns to where you started). Raises InvalidRequest when
        there is nothing to roll back to, NotFound for an unknown ``to``."""
        if to is None:
            latest = await self.store.latest_activation()
            to = latest["previous_revision"] if latest else None
            if not to:
                raise InvalidRequest(
                    "no earlier policy revision to roll back to", param="to", code="nothing_to_roll_back"
                )
        return await self.activate(to, by=by, action="rollback")

    async def set_killswitch(self, blocked: bool, *, by: str, reason: str = "") -> dict[str, Any]:
        """Activate a copy of the active bundle with ``data.killswitch`` set (the incident flag
        that blocks all external egress). Returns what :meth:`push` returns."""
        state: dict[str, Any] = {"external_egress_blocked": blocked}
        if reason:
            state["reason"] = reason
        bundle = self.engine.bundle.with_data(["killswitch"], state)
        description = f"kill switch {'on' if blocked else 'off'}" + (f": {reason}" if reason else "")
        # a data flip of the active, already tested modules: their table tests assume it off
        return await self.push(bundle, by=by, source="killswitch", description=description, tests=[], activate=True)
