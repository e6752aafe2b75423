"""Admit stage: reserve the worst case of a request against every limit that applies, settle
the actual use when it ends, release the reservation when it fails.

Lifecycle of one request (``ctx.admission`` holds an :class:`Admission` throughout and the
audit record's ``limits`` field is its :meth:`Admission.as_record`)::

    admit    after the policy allowed it, before the write-ahead record and any egress:
             reserve 1 request, est. prompt tokens + max output tokens, and the worst-case
             cost (USD: the most expensive planned deployment) on every rule's counter, all
             at once or none (429 RateLimited naming the first rule without room)
    settle   after the response (for streams, when the stream ends, however it ends):
             counters += actual - reserved (tokens = prompt + completion, USD = ctx.cost_usd)
    release  if the request fails before a response (upstream error, audit store down,
             client gone): tokens and USD go back; the request still counts for ``rpm``

So a budget is exceeded by at most what settlements add over their reservations, which is
nothing while upstreams honour ``max_tokens``: every token-based rule needs the request's
output cap, and a request without one is refused (400 ``max_tokens_required``, naming the
rule) rather than admitted on a guess. Rules that need no cap (``rpm``; a USD budget when
every planned deployment's output is free) never ask for one.

Store failure: ``on_error: closed`` answers 503 ``limits_unavailable`` (nothing sent);
``on_error: open`` admits without limits and records ``skipped`` with the reason. Either way
the policy decision, the audit record and the eligible set are untouched. A settlement that
cannot reach the store is logged and recorded (``settle_error``); the response stands.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config import DeploymentConfig, Limits
from gateway.context import RequestContext
from gateway.errors import InvalidRequest, LimitsUnavailable, RateLimited
from gateway.limits.rules import Amounts, Period, Rule, Window, rules_of, window
from gateway.limits.stores import Hold, LimitStore, StoreUnavailable
from gateway.routing import estimated_cost_usd

__all__ = ["Admission", "Limiter"]

_RULES_CACHE_SIZE = 10_000  # (tenant, key) pairs; cleared when full

log = logging.getLogger("gateway.limits")


@dataclass
class Admission:
    """The admit stage's result for one request.

    ``rules``: names of the rules checked. ``holds``/``metrics``: the counters reserved on and
    which metric each counts. ``reserved``/``settled``: amounts (requests, tokens, USD), None
    until it happened. ``refused``: the rule that refused the request. ``skipped``: why limits
    were not applied (store unavailable, fail open). ``settle_error``: why settlement failed.
    """

    store: str
    rules: list[str] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    metrics: list[Literal["requests", "tokens", "usd"]] = field(default_factory=list)
    reserved: Amounts | None = None
    settled: Amounts | None = None
    refused: str | None = None
    skipped: str | None = None
    settle_error: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The audit record's ``limits`` field: ``{"store", "rules", "reserved", "settled",
        "refused", "skipped", "settle_error"}`` (amounts as ``{"requests", "tokens", "usd"}``)."""
        return {
            "store": self.store,
            "rules": list(self.rules),
            "reserved": self.reserved.as_record() if self.reserved else None,
            "settled": self.settled.as_record() if self.settled else None,
            "refused": self.refused,
            "skipped": self.skipped,
            "settle_error": self.settle_error,
        }


class Limiter:
    """Applies the configured tenant and key limits through one :class:`LimitStore`.

    ``tenant_limits``/``key_limits``: limits by tenant name / key id (from gateway.yaml).
    ``key_limits`` is read at every request, not copied: pass a live mapping (the KeyRing's
    ``key_limits``) so keys created or changed at run time are limited at once.
    ``on_error``: ``closed`` or ``open`` (see the module docstring). ``prefix``: counter key
    prefix (``sgw:limits:``). ``clock``: epoch seconds (tests may pass their own).
    """

    def __init__(
        self,
        store: LimitStore,
        *,
        tenant_limits: Mapping[str, Limits],
        key_limits: Mapping[str, Limits],
        on_error: Literal["closed", "open"] = "closed",
        prefix: str = "sgw:limits:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._tenant_limits = dict(tenant_limits)
        self._key_limits = key_limits
        self._on_error = on_error
        self._prefix = prefix
        self._clock = clock
        # (tenant, key id) -> (tenant limits, key limits, rules): rebuilt when either Limits
        # object changes (a key's limits are replaced on reload, never mutated: frozen models)
        self._rules: dict[tuple[str, str], tuple[Limits | None, Limits | None, list[Rule]]] = {}
        self._day_windows: dict[Period, tuple[int, Window]] = {}  # period -> (epoch day, window)

    def rules(self, *, tenant: str, key_id: str) -> list[Rule]:
        """The rules a request of ``key_id`` in ``tenant`` is checked against (cached per
        tenant and key while their limits stay the same objects)."""
        tenant_limits, key_limits = self._tenant_limits.get(tenant), self._key_limits.get(key_id)
        cached = self._rules.get((tenant, key_id))
        if cached is not None and cached[0] is tenant_limits and cached[1] is key_limits:
            return cached[2]
        rules = rules_of(tenant=tenant, key_id=key_id, tenant_limits=self._tenant_limits, key_limits=self._key_limits)
        if len(self._rules) >= _RULES_CACHE_SIZE:
            self._rules.clear()
        self._rules[(tenant, key_id)] = (tenant_limits, key_limits, rules)
        return rules

    def _window(self, period: Period, now: float) -> Window:
        """:func:`window`, with day and month windows computed once per UTC day."""
        if period == "minute":
            return window(period, now)
        day = int(now // 86400)
        cached = self._day_windows.get(period)
        if cached is None or cached[0] != day:
            cached = self._day_windows[period] = (day, window(period, now))
        return cached[1]

    async def admit(
        self,
        ctx: RequestContext,
        *,
        planned: Sequence[DeploymentConfig],
        est_input_tokens: int,
        max_output_tokens: int,
        output_capped: bool,
    ) -> None:
        """Reserve the worst case of one request on every applicable rule, atomically, and
        set ``ctx.admission`` (also when refused, so the audit record says why).

        ``planned``: the deployments the request may go to (eligible, in plan order).
        ``est_input_tokens`` / ``max_output_tokens``: tokens. ``output_capped``: whether the
        client set max_tokens (else ``max_output_tokens`` is the pipeline's default guess).

        With no rules nothing is reserved and the store is not called. Failing open sets
        ``skipped``. Raises InvalidRequest (400 ``max_tokens_required``), RateLimited (429)
        or LimitsUnavailable (503); nothing is reserved then.
        """
        if ctx.principal is None:
            raise RuntimeError("admit needs an authenticated request")
        tenant, key_id = ctx.principal.tenant, ctx.principal.key_id
        rules = self.rules(tenant=tenant, key_id=key_id)
        ctx.admission = admission = Admission(store=self.store.kind, rules=[r.name for r in rules])
        if not rules:
            return
        worst_usd = max(
            (estimated_cost_usd(d, input_tokens=est_input_tokens, output_tokens=max_output_tokens) for d in planned),
            default=0.0,
        )
        priced_output = any(d.price.output_per_mtok > 0 for d in planned)
        for rule in rules:
            if not output_capped and (rule.metric == "tokens" or (rule.metric == "usd" and priced_output)):
                error = InvalidRequest(
                    f"{rule.name} needs max_tokens (or max_completion_tokens) to reserve the worst case; "
                    "set an output cap",
                    param="max_tokens",
                    code="max_tokens_required",
                )
                raise error
        need = Amounts(requests=1, tokens=est_input_tokens + max_output_tokens, usd=worst_usd)
        now = self._clock()
        windows = [self._window(r.period, now) for r in rules]
        holds = [
            Hold(r.counter(self._prefix, w), need.of(r.metric), r.limit, w.expire_at)
            for r, w in zip(rules, windows, strict=True)
        ]
        try:
            refused = await self.store.reserve(holds, now=now)
        except StoreUnavailable as exc:
            if self._on_error == "open":
                log.warning("limits skipped (store unavailable, on_error=open): %s", exc)
                admission.skipped = f"limits store unavailable, admitted without limits (on_error: open): {exc}"
                return
            raise LimitsUnavailable(
                f"limits store unavailable; refusing the request (limits_store.on_error: closed): {exc}"
            ) from exc
        if refused is not None:
            rule, win = rules[refused], windows[refused]
            admission.refused = rule.name
            retry_after = max(1, math.ceil(win.end - now))
            alone = " (this request alone exceeds it)" if need.of(rule.metric) > rule.limit else ""
            if alone and rule.metric == "tokens":
                # waiting never helps: the worst case of this one request is above the limit
                raise InvalidRequest(
                    f"this request's worst case ({need.of(rule.metric):g} tokens) exceeds {rule.name}; "
                    "lower max_tokens or shorten the prompt",
                    param="max_tokens",
                    code="exceeds_limit",
                )
            raise RateLimited(
                f"{'budget' if rule.metric == 'usd' else 'rate limit'} reached: {rule.name}{alone}; "
                f"retry after {retry_after} s",
                limit=rule.name,
                retry_after_s=retry_after,
                code="budget_exceeded" if rule.metric == "usd" else "rate_limit_exceeded",
            )
        admission.holds = holds
        admission.metrics = [r.metric for r in rules]
        admission.reserved = need

    async def settle(self, ctx: RequestContext) -> None:
        """Replace the request's reservation by its actual use: tokens = ``ctx.prompt_tokens``
        + ``ctx.completion_tokens``, USD = ``ctx.cost_usd``. Idempotent: only the first
        settle/release of a request counts. Never raises (store errors are logged and
        recorded in ``ctx.admission.settle_error``)."""
        tokens = (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)
        await self._settle(ctx.admission, Amounts(requests=1, tokens=tokens, usd=ctx.cost_usd or 0.0))

    async def release(self, ctx: RequestContext) -> None:
        """Give back a failed request's tokens and USD (the request still counts for rpm).
        Idempotent like :meth:`settle`; never raises."""
        await self._settle(ctx.admission, Amounts(requests=1, tokens=0, usd=0.0))

    async def _settle(self, admission: Admission | None, actual: Amounts) -> None:
        if admission is None or admission.reserved is None or admission.settled is not None:
            return
        admission.settled = actual
        reserved = admission.reserved
        deltas = [
            (hold.key, actual.of(metric) - reserved.of(metric), hold.expire_at)
            for hold, metric in zip(admission.holds, admission.metrics, strict=True)
            if actual.of(metric) != reserved.of(metric)
        ]
        try:
            await self.store.adjust(deltas, now=self._clock())
        except StoreUnavailable as exc:
            log.warning("limits settlement failed: %s", exc)
            admission.settle_error = str(exc)

    async def aclose(self) -> None:
        """Close the store."""
        await self.store.aclose()
