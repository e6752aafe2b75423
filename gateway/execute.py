"""Execute stage: call the planned deployments in order, inside the eligible set only.

A loop over the plan (the policy's eligible deployments, ordered by the routing strategy)
with a per-attempt timeout. Connect errors, timeouts, malformed answers, 5xx and 429 move on
to the next planned deployment; any other 4xx is the request's fault and is returned to the
client at once (a refusal is not a reason to try elsewhere). Each try is recorded as an
:class:`~gateway.context.Attempt`; when every try failed, one UpstreamError aggregates them.

Streams fall over only before the first chunk; after it, a failure ends the stream (the API
layer sends a terminal error event and the record says ``partial``).

A try that is cancelled (its client went away: gateway/disconnect.py) is recorded as an
attempt with outcome ``cancelled``, its upstream stream closed, and the cancellation goes on
up: no other deployment is tried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio

from adapters import Adapter, AdapterError, Target, UpstreamHTTPError
from gateway.breaker import CircuitBreaker
from gateway.config import DeploymentConfig
from gateway.context import Attempt, RequestContext
from gateway.errors import UpstreamError
from gateway.wire import Operation

__all__ = ["Executor", "Operation", "Prepare", "StreamStart"]


Prepare = Callable[[DeploymentConfig, dict[str, Any]], dict[str, Any]]
"""Per-attempt body transform (e.g. a redaction obligation for that deployment)."""


def _target(dep: DeploymentConfig, timeout_s: float) -> Target:
    return Target(
        deployment_id=dep.id,
        model=dep.model,
        api_base=dep.api_base,
        api_key=dep.api_key(),
        timeout_s=timeout_s,
    )


class _Schedule:
    """The tries of one request: each planned deployment, retried ``dep.retries`` times after
    exponential backoff with full jitter (base 0.2 s, cap 2 s; AWS Architecture Blog,
    "Exponential Backoff And Jitter"), each try's timeout cut to what is left of the
    request's overall deadline. ``expired`` says the deadline ended the schedule."""

    BACKOFF_BASE_S = 0.2
    BACKOFF_CAP_S = 2.0

    def __init__(self, planned: Sequence[DeploymentConfig], deadline: float, rng: random.Random) -> None:
        self._planned = planned
        self._deadline = deadline
        self._rng = rng
        self.expired = False

    async def __aiter__(self) -> AsyncIterator[tuple[DeploymentConfig, float]]:
        for dep in self._planned:
            for n in range(dep.retries + 1):
                if n:
                    delay = min(self.BACKOFF_CAP_S, self.BACKOFF_BASE_S * 2 ** (n - 1)) * self._rng.random()
                    if time.perf_counter() + delay >= self._deadline:
                        self.expired = True
                        return
                    await asyncio.sleep(delay)
                remaining = self._deadline - time.perf_counter()
                if remaining <= 0:
                    self.expired = True
                    return
                yield dep, min(dep.timeout_s, remaining)


def _aggregate(ctx: RequestContext, errors: list[AdapterError]) -> UpstreamError:
    """One error for a plan where every attempt failed.

    Status: the upstreams' common status when they all answered the same 429/5xx, else 502.
    """
    detail = "; ".join(f"{a.deployment}: {a.error}" for a in ctx.attempts)
    statuses = {e.status for e in errors}
    status = 502
    if len(statuses) == 1:
        only = next(iter(statuses))
        if only is not None and (only == 429 or only >= 500):
            status = only
    return UpstreamError(
        f"all {len(ctx.attempts)} eligible deployment(s) failed: {detail}", status=status, code="upstream_failed"
    )


def _client_error(dep: DeploymentConfig, exc: AdapterError) -> UpstreamError:
    """A non-retryable upstream 4xx, passed to the client with the upstream's reason."""
    status = exc.status if exc.status is not None else 502
    return UpstreamError(f"deployment {dep.id} rejected the request: {exc.message}", status=status)


class StreamStart:
    """A stream whose first chunk has arrived: ``deployment`` serves the rest via ``chunks``."""

    def __init__(
        self,
        deployment: DeploymentConfig,
        first: dict[str, Any],
        chunks: AsyncIterator[dict[str, Any]],
        attempt: Attempt,
    ) -> None:
        self.deployment = deployment
        self.first = first
        self.chunks = chunks
        self.attempt = attempt


class Executor:
    """Runs plans against the adapters created in the app's lifespan (kind → adapter)."""

    def __init__(
        self,
        adapters: Mapping[str, Adapter],
        breaker: CircuitBreaker | None = None,
        *,
        deadline_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self._adapters = dict(adapters)
        self.breaker = breaker or CircuitBreaker()
        self._deadline_s = deadline_s
        self._rng = rng or random.Random()

    def _schedule(self, ctx: RequestContext, planned: Sequence[DeploymentConfig]) -> _Schedule:
        return _Schedule(planned, ctx.started + self._deadline_s, self._rng)

    def _exhausted(self, ctx: RequestContext, schedule: _Schedule, errors: list[AdapterError]) -> UpstreamError:
        if schedule.expired:
            tried = "; ".join(f"{a.deployment}: {a.error}" for a in ctx.attempts) or "no attempt fitted"
            return UpstreamError(
                f"the request's deadline of {self._deadline_s:g}s passed ({tried})",
                status=504,
                code="deadline_exceeded",
            )
        return _aggregate(ctx, errors)

    async def complete(
        self,
        ctx: RequestContext,
        planned: Sequence[DeploymentConfig],
        body: dict[str, Any],
        prepare: Prepare | None = None,
        operation: Operation = "chat",
    ) -> tuple[DeploymentConfig, dict[str, Any]]:
        """Try each planned deployment until one answers.

        Returns (deployment, the OpenAI answer for ``operation``: chat.completion,
        text_completion or embeddings list). Appends to ``ctx.attempts``.
        Raises UpstreamError (client 4xx passthrough, or the aggregate of all failures).
        """
        errors: list[AdapterError] = []
        schedule = self._schedule(ctx, planned)
        async for dep, timeout_s in schedule:
            started = time.perf_counter()
            try:
                sent = prepare(dep, body) if prepare else body
                adapter = self._adapters[dep.adapter]
                call = {"chat": adapter.complete, "text": adapter.complete_text, "embed": adapter.embed}[operation]
                response = await call(_target(dep, timeout_s), sent)
            except AdapterError as exc:
                ctx.attempts.append(
                    Attempt(dep.id, "error", (time.perf_counter() - started) * 1000, exc.status, _describe(exc))
                )
                if not exc.retryable:
                    raise _client_error(dep, exc) from exc
                self.breaker.failure(dep.id)
                errors.append(exc)
                continue
            except asyncio.CancelledError:
                ctx.attempts.append(Attempt(dep.id, "cancelled", (time.perf_counter() - started) * 1000))
                raise
            ctx.attempts.append(Attempt(dep.id, "ok", (time.perf_counter() - started) * 1000, 200))
            self.breaker.success(dep.id)
            return dep, response
        raise self._exhausted(ctx, schedule, errors)

    async def open_stream(
        self,
        ctx: RequestContext,
        planned: Sequence[DeploymentConfig],
        body: dict[str, Any],
        prepare: Prepare | None = None,
        operation: Operation = "chat",
    ) -> StreamStart:
        """Open a stream on the first planned deployment that delivers a first chunk.

        The returned attempt is in ``ctx.attempts`` with outcome ``streaming``; the caller
        updates it when the stream ends. Raises UpstreamError like :meth:`complete`.
        """
        errors: list[AdapterError] = []
        schedule = self._schedule(ctx, planned)
        async for dep, timeout_s in schedule:
            started = time.perf_counter()
            sent = prepare(dep, body) if prepare else body
            adapter = self._adapters[dep.adapter]
            open_chunks = adapter.stream_text if operation == "text" else adapter.stream
            chunks = open_chunks(_target(dep, timeout_s), sent)
            try:
                first = await anext(chunks)
            except (AdapterError, StopAsyncIteration) as exc:
                await chunks.aclose()  # type: ignore[attr-defined]
                err = exc if isinstance(exc, AdapterError) else UpstreamHTTPError("empty stream", status=502)
                ctx.attempts.append(
                    Attempt(dep.id, "error", (time.perf_counter() - started) * 1000, err.status, _describe(err))
                )
                if not err.retryable:
                    raise _client_error(dep, err) from exc
                self.breaker.failure(dep.id)
                errors.append(err)
                continue
            except asyncio.CancelledError:
                ctx.attempts.append(Attempt(dep.id, "cancelled", (time.perf_counter() - started) * 1000))
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()  # type: ignore[attr-defined]  # closes the upstream connection
                raise
            self.breaker.success(dep.id)
            attempt = Attempt(dep.id, "streaming", (time.perf_counter() - started) * 1000, 200)
            ctx.attempts.append(attempt)
            return StreamStart(dep, first, chunks, attempt)
        raise self._exhausted(ctx, schedule, errors)

    async def aclose(self) -> None:
        """Close every adapter's connections."""
        for adapter in self._adapters.values():
            await adapter.aclose()


def _describe(exc: AdapterError) -> str:
    """Short error text for the audit record: class, status and upstream reason."""
    status = f" {exc.status}" if exc.status is not None else ""
    return f"{exc.error_class}{status}: {exc.message}"[:500]
