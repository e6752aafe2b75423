"""The request pipeline for every model endpoint (chat, completions, embeddings, responses,
messages — each a wire dialect in gateway/wire), one direction:

authenticate → parse → classify → decide → route → admit (limits: reserve the worst case) →
record (write-ahead) → execute → settle (tokens, cost; limits settled) → record outcome.
:meth:`Gateway.chat` never raises: it returns an :class:`Outcome` holding a response, a
stream, or a GatewayError, and the request's audit record is written exactly once (inserted
before egress, completed with the outcome; for streams, when the stream ends, fails or the
client goes away). A request that fails after admission gets its reservation released.

A client that goes away (seen through the API layer's :class:`~gateway.disconnect.ClientWatch`)
while an upstream works for it — waiting for a non-stream answer, for a stream's first chunk,
or mid-stream — has that upstream call cancelled (its connection closed: the provider stops
generating, nothing more is paid for), like LiteLLM's proxy and Kong/nginx do. The record
says ``client_disconnected``, the attempt ``cancelled``, and carries the tokens produced until
then (estimated where no usage came; before any answer: the prompt, no completion), which is
what limits and budgets are settled with. An answer complete before the hang-up was noticed
is recorded as what it is (``ok``). Audit writes are never cancelled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard, cast
from urllib.parse import quote

import anyio

from adapters import AdapterError
from gateway.audit.capture import PromptSealer
from gateway.audit.digest import Digester
from gateway.audit.ledger import canonical
from gateway.audit.store import AuditStore
from gateway.auth import KeyRing, require_role
from gateway.classify import Classifier, SpanDetector
from gateway.classify.redact import Redaction, Restorer, redact_body
from gateway.classify.walk import text_chars
from gateway.config import DeploymentConfig, GatewayConfig
from gateway.context import DataLevel, RequestContext
from gateway.disconnect import WATCH_AFTER_S, ClientWatch
from gateway.errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    PolicyUnavailable,
)
from gateway.execute import Executor, Prepare, StreamStart
from gateway.health import HealthMonitor
from gateway.keystore import KeyAdmin
from gateway.limits import Limiter
from gateway.notify import ChangeWatcher
from gateway.policy import PolicyEngine, build_input
from gateway.policy.manager import PolicyManager
from gateway.routing import estimated_cost_usd, plan
from gateway.schemas import parse_body
from gateway.telemetry import Telemetry
from gateway.tokens import TokenCounter
from gateway.wire import Dialect
from gateway.wire.openai import CHAT

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "Gateway", "Outcome", "estimate_tokens"]

DEFAULT_MAX_OUTPUT_TOKENS = 256
"""Output tokens assumed for cost and context-window estimates when a request sets no cap."""

CLASSIFICATION_HEADER = "x-data-classification"

log = logging.getLogger("gateway")


def estimate_tokens(text_chars: int, messages: int = 0) -> int:
    """Rough token estimate: 4 characters per token plus 4 per message (OpenAI's rule of
    thumb, "What are tokens and how to count them"). Used only when no usage is reported."""
    return max(1, (text_chars + 3) // 4 + 4 * messages)


@dataclass
class Outcome:
    """What the API layer sends: ``response`` (JSON), ``stream`` (SSE bytes) or ``error``."""

    ctx: RequestContext
    response: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    error: GatewayError | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Gateway:
    """Holds the wired stages (built in the app's lifespan) and runs requests through them."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        keyring: KeyRing,
        classifier: Classifier,
        engine: PolicyEngine,
        executor: Executor,
        limiter: Limiter,
        audit: AuditStore,
        digester: Digester,
        sealer: PromptSealer | None = None,
        health: HealthMonitor | None = None,
        key_admin: KeyAdmin | None = None,
        watchers: Sequence[ChangeWatcher] = (),
        policies: PolicyManager | None = None,
        telemetry: Telemetry,
        token_counters: Mapping[str, TokenCounter] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.keyring = keyring
        self.classifier = classifier
        self.engine = engine
        self.executor = executor
        self.limiter = limiter
        self.audit = audit
        self.digester = digester
        self.sealer = sealer
        self.health = health or HealthMonitor((), {}, enabled=False)
        self.key_admin = key_admin  # run-time API keys (None: only gateway.yaml's)
        self.watchers = tuple(watchers)  # change watchers (gateway/notify.py), closed first
        self.policies = policies  # versioned policies (push, activate, rollback); None in unit tests
        self.telemetry = telemetry  # spans, metrics, request logs (gateway/telemetry.py)
        self.token_counters = dict(token_counters or {})  # deployment id → its tokenizer (gateway/tokens.py)
        self._rng = rng or random.Random()

    def deployment_healthy(self, dep: DeploymentConfig) -> bool:
        """``healthy`` in the policy input: its API key is set, its circuit breaker is closed
        and its background health probes pass. No I/O."""
        return dep.credentials_present() and self.executor.breaker.healthy(dep.id) and self.health.healthy(dep.id)

    async def chat(self, ctx: RequestContext, raw: bytes, headers: Mapping[str, str]) -> Outcome:
        """Run one chat completion request (non-stream or SSE) through the pipeline."""
        return await self.handle(ctx, raw, headers, CHAT)

    async def handle(
        self,
        ctx: RequestContext,
        raw: bytes,
        headers: Mapping[str, str],
        dialect: Dialect,
        watch: ClientWatch | None = None,
    ) -> Outcome:
        """Run one request of any endpoint through the pipeline; ``dialect`` is the endpoint's
        wire format (gateway/wire): it parses the body into a Call and renders the answer.
        ``watch`` sees the client go away: the upstream call is then cancelled and the outcome
        is ClientDisconnected (499, recorded ``client_disconnected``); a returned stream's
        relay is watched by whoever sends it (the API layer, with the same watch). Without a
        ``watch`` (no HTTP client) nothing is watched."""
        watch = watch or ClientWatch(None)
        self.telemetry.start_request(ctx, headers)
        try:
            outcome = await self._run(ctx, raw, headers, dialect, watch)
        except GatewayError as exc:
            await self.limiter.release(ctx)
            return await self.fail(ctx, exc)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.limiter.release(ctx)
            self._finish(ctx)
            raise
        if outcome.stream is None:
            ctx.status = "ok"
            ctx.http_status = 200
            with self.telemetry.stage(ctx, "audit"):
                await self.audit.record_outcome(ctx)
            self._finish(ctx, outcome.response)
        outcome.headers.update(self.telemetry.response_headers(ctx))
        return outcome

    def _finish(self, ctx: RequestContext, response: Mapping[str, Any] | None = None) -> None:
        """End the request's span and record its metrics (after its final audit record)."""
        model = response.get("model") if isinstance(response, Mapping) else None
        self.telemetry.finish(ctx, response_model=model if isinstance(model, str) else None)

    async def fail(self, ctx: RequestContext, error: GatewayError) -> Outcome:
        """Record a request that ended in ``error`` and return it as the outcome.

        If the audit store is down too, the outcome is AuditUnavailable (503).
        """
        if ctx.span is None:  # failed before the pipeline (reading the body)
            self.telemetry.start_request(ctx, {})
        ctx.status = error.outcome
        ctx.http_status = error.status
        ctx.error = error.message
        try:
            with self.telemetry.stage(ctx, "audit"):
                await self.audit.record_outcome(ctx)
        except GatewayError as audit_error:
            ctx.status, ctx.http_status = audit_error.outcome, audit_error.status
            self._finish(ctx)
            return Outcome(ctx, error=audit_error, headers=self.telemetry.response_headers(ctx))
        self._finish(ctx)
        return Outcome(ctx, error=error, headers=self.telemetry.response_headers(ctx))

    async def _run(
        self, ctx: RequestContext, raw: bytes, headers: Mapping[str, str], dialect: Dialect, watch: ClientWatch
    ) -> Outcome:
        with self.telemetry.stage(ctx, "authenticate"):
            ctx.principal = self.keyring.authenticate(headers.get("authorization"), headers.get("x-api-key"))
            require_role(ctx.principal, "app")
        data = parse_body(raw)
        if isinstance(data.get("model"), str):
            ctx.requested_model = data["model"][:256]
        request = dialect.parse(data, unknown=self.config.server.unknown_params)
        ctx.stream = request.stream
        ctx.prompt_digest = self.digester.prompt(ctx.principal.tenant, request.prompt)

        declared = _declared_level(headers.get(CLASSIFICATION_HEADER))

        allowed = ctx.principal.allowed_models
        if allowed is not None and request.model not in allowed:
            raise PermissionDenied(
                f"this API key may not use model {request.model!r} (allowed: {', '.join(allowed)})",
                param="model",
                code="model_not_allowed",
            )
        found = self.config.candidates(request.model)
        if found is None:
            raise NotFound(
                f"model {request.model!r} does not exist or you do not have access to it",
                param="model",
                code="model_not_found",
            )
        candidates, strategy = found

        tenant = self.config.tenants[ctx.principal.tenant]
        with self.telemetry.stage(ctx, "classify"):
            ctx.classification = self.classifier.classify(data, declared=declared, floor=tenant.floor)

        est_input = estimate_tokens(max(request.input_chars, text_chars(data)), request.input_items)
        max_output = DEFAULT_MAX_OUTPUT_TOKENS if request.max_output_tokens is None else request.max_output_tokens
        # the most completion tokens an upstream may report for this request (None: uncapped)
        cap = None if request.max_output_tokens is None else request.max_output_tokens * request.choices
        policy_input = build_input(
            principal=ctx.principal,
            tenant=tenant.policy_view(),
            request={
                "id": ctx.request_id,
                "endpoint": ctx.endpoint,
                "model": request.model,
                "needs": list(request.needs),
                "est_input_tokens": est_input,
                "max_output_tokens": max_output,
                "choices": request.choices,
            },
            classification=ctx.classification,
            deployments=[d.policy_view(healthy=self.deployment_healthy(d)) for d in candidates],
        )
        ctx.policy_input = policy_input
        with self.telemetry.stage(ctx, "decide"):
            ctx.decision = decision = await self.engine.decide(policy_input)
        if not decision.allow:
            reasons = list(decision.reasons) + [
                f"{dep}: {reason}" for dep, rs in decision.excluded.items() for reason in rs
            ]
            # a deployment that only its health keeps out would have served it: an outage (503)
            if any(set(r) == {"unhealthy"} for r in decision.rules.values()):
                raise NoHealthyDeployment(
                    f"no deployment behind {request.model!r} is healthy right now (breaker open, failed health "
                    "checks or no credentials); retry later; see reasons",
                    reasons=reasons,
                )
            raise PolicyDenied(
                f"no deployment behind {request.model!r} is eligible for this {ctx.classification.level.label} "
                "request; see reasons",
                reasons=reasons,
            )

        with self.telemetry.stage(ctx, "route"):
            planned = plan(
                candidates,
                decision.eligible,
                strategy=strategy,
                est_input_tokens=est_input,
                max_output_tokens=max_output,
                rng=self._rng,
            )
        if decision.obligations.get("capture_prompt"):
            if self.sealer is None:
                raise PolicyUnavailable(
                    "the policy requires encrypted prompt capture but audit.capture_public_key_file is not set"
                )
            ctx.prompt_capture = self.sealer.seal(canonical(request.prompt).encode("utf-8"))
        # Admit before the write-ahead record, so it carries the reservation; a refusal (429)
        # costs one audit entry and sends nothing. Released in chat() if anything below fails.
        with self.telemetry.stage(ctx, "admit"):
            await self.limiter.admit(
                ctx,
                planned=planned,
                est_input_tokens=est_input,
                max_output_tokens=max_output * request.choices,  # worst case: every choice runs to the cap
                output_capped=request.max_output_tokens is not None,
            )
        # Write-ahead: the decision is durable before any byte leaves for a deployment.
        with self.telemetry.stage(ctx, "audit"):
            await self.audit.record_decision(ctx)

        body = request.body
        # client-chosen names: percent-encoded, so a header value is always latin-1 and one line
        dropped = ",".join(quote(name, safe="") for name in request.dropped)
        headers_out = {"x-gateway-dropped-params": dropped} if request.dropped else {}
        redactions: dict[str, Redaction] = {}
        prepare = self._redaction(decision.obligations, redactions)
        if request.stream:
            try:
                # streams watch at once: the relay that follows needs the watcher anyway
                with watch.upstream("while the gateway waited for the upstream's first chunk"):
                    start = await self.executor.open_stream(
                        ctx, planned, {**body, "stream_options": {"include_usage": True}}, prepare, request.operation
                    )
            except ClientDisconnected:
                await self._abandoned(ctx, planned, redactions, est_input=est_input, body=body)
                raise
            _choose(ctx, start.deployment)
            restorer = self._restorer(ctx, tenant.restore_redacted, redactions.get(start.deployment.id))
            events = self._relay(
                ctx,
                start,
                include_usage=request.include_usage,
                est_input=est_input,
                restorer=restorer,
                body=body,
                max_completion=cap,
            )
            return Outcome(
                ctx,
                stream=dialect.encode(events, request),
                headers={"x-gateway-deployment": start.deployment.id, **headers_out},
            )

        try:
            # no watcher task for an answer within WATCH_AFTER_S (the hot path)
            with watch.upstream("while the gateway waited for the upstream's answer", after_s=WATCH_AFTER_S):
                dep, response = await self.executor.complete(ctx, planned, body, prepare, request.operation)
        except ClientDisconnected:
            await self._abandoned(ctx, planned, redactions, est_input=est_input, body=body)
            raise
        _choose(ctx, dep)
        restorer = self._restorer(ctx, tenant.restore_redacted, redactions.get(dep.id))
        if restorer is not None:
            _restore_response(response, restorer)
        if request.operation == "embed":
            ctx.response_digest = self.digester.text(ctx.principal.tenant, json.dumps(response.get("data")))
            self._settle(ctx, dep, response.get("usage"), est_input=est_input, completion_text="", body=body)
            if ctx.tokens_estimated:  # embeddings produce no output tokens
                ctx.completion_tokens = 0
                ctx.cost_usd = estimated_cost_usd(dep, input_tokens=ctx.prompt_tokens or 0, output_tokens=0)
        else:
            completion = _message_text(response)
            ctx.response_digest = self.digester.text(ctx.principal.tenant, completion)
            self._settle(
                ctx, dep, response.get("usage"), est_input=est_input, completion_text=completion, body=body,
                max_completion=cap,
            )  # fmt: skip
        response = dialect.response(response, request, (ctx.prompt_tokens or 0, ctx.completion_tokens or 0))
        await self.limiter.settle(ctx)
        return Outcome(ctx, response=response, headers={"x-gateway-deployment": dep.id, **headers_out})

    def _redaction(self, obligations: Mapping[str, Any], done: dict[str, Redaction]) -> Prepare | None:
        """The per-attempt body transform for a ``redact`` obligation (deployment id → labels),
        or None. Fails closed: a malformed obligation, no span detector, or a redaction error
        raises PolicyUnavailable and nothing is sent."""
        wanted = obligations.get("redact")
        if not wanted:
            return None
        if not isinstance(wanted, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in wanted.values()
        ):
            raise PolicyUnavailable("the policy's redact obligation is malformed (denied)")
        detector = next((d for d in self.classifier.detectors if callable(getattr(d, "find", None))), None)
        if detector is None:
            raise PolicyUnavailable("the policy requires redaction but no detector reports spans (denied)")
        span_detector = cast(SpanDetector, detector)

        def prepare(dep: DeploymentConfig, body: dict[str, Any]) -> dict[str, Any]:
            labels = wanted.get(dep.id)
            if not labels:
                return body
            try:
                sent, redaction = redact_body(body, span_detector, labels)
            except Exception as exc:  # any detector fault: send nothing
                raise PolicyUnavailable(f"redaction failed ({type(exc).__name__}); nothing was sent") from exc
            done[dep.id] = redaction
            return sent

        return prepare

    @staticmethod
    def _restorer(ctx: RequestContext, restore: bool, redaction: Redaction | None) -> Restorer | None:
        """Record what was redacted for the serving deployment; a Restorer if answers are restored."""
        if redaction is None:
            return None
        ctx.redacted = dict(redaction.counts)
        return Restorer(redaction.mapping) if restore and redaction.mapping else None

    async def _abandoned(
        self,
        ctx: RequestContext,
        planned: Sequence[DeploymentConfig],
        redactions: Mapping[str, Redaction],
        *,
        est_input: int,
        body: Mapping[str, Any],
    ) -> None:
        """Settle a request whose client went away while an upstream worked on it (the call
        cancelled before any answer): the deployment is recorded as chosen — the prompt went
        there, redacted as recorded — and charged the prompt's tokens (counted locally: no
        usage came) and no completion. Nothing when no upstream call was made (the caller
        releases the reservation then)."""
        attempt = ctx.attempts[-1] if ctx.attempts else None
        dep = next((d for d in planned if attempt is not None and d.id == attempt.deployment), None)
        if attempt is None or attempt.outcome != "cancelled" or dep is None:
            return
        _choose(ctx, dep)
        self._restorer(ctx, False, redactions.get(dep.id))  # records what was redacted
        self._settle(ctx, dep, None, est_input=est_input, completion_text="", body=body)
        ctx.completion_tokens = 0  # the estimator counts at least one token for any text
        ctx.cost_usd = estimated_cost_usd(dep, input_tokens=ctx.prompt_tokens or 0, output_tokens=0)
        with anyio.CancelScope(shield=True):
            await self.limiter.settle(ctx)

    def _settle(
        self,
        ctx: RequestContext,
        dep: DeploymentConfig,
        usage: Any,
        *,
        est_input: int,
        completion_text: str,
        body: Mapping[str, Any] | None = None,
        max_completion: int | None = None,
    ) -> None:
        """Tokens and cost (USD) for the record: upstream usage when it is plausible (two
        non-negative int32 counts, the completion within ``max_completion`` — the client's
        output cap times its choices — when there is one), else a local count marked
        ``tokens_estimated``: with the deployment's own tokenizer the same numbers the model
        reports without streaming (the prompt ``body`` as its chat template renders it),
        otherwise the character estimate. A misbehaving upstream's usage is what limits and
        budgets are charged, so it is never taken beyond what the request allowed."""
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        completion = usage.get("completion_tokens", 0) if isinstance(usage, dict) else None
        if _is_count(prompt) and _is_count(completion) and (max_completion is None or completion <= max_completion):
            prompt_tokens, completion_tokens = prompt, completion
        else:
            if _is_count(completion) and max_completion is not None and completion > max_completion:
                log.warning(
                    "usage from %s reports %d completion tokens, over the request's cap of %d: estimated",
                    dep.id, completion, max_completion,
                )  # fmt: skip
            prompt_tokens = est_input
            # the same estimator for streams and non-streams, so both record the same counts
            completion_tokens = estimate_tokens(len(completion_text))
            counter = self.token_counters.get(dep.id)
            if counter is not None:
                try:
                    counted = counter.prompt_tokens(body) if body is not None else None
                    prompt_tokens = counted if counted is not None else prompt_tokens
                    completion_tokens = counter.text_tokens(completion_text)
                except Exception as exc:  # a tokenizer fault never fails a request: estimate
                    log.warning("tokenizer of %s failed (%s); tokens estimated", dep.id, type(exc).__name__)
            ctx.tokens_estimated = True
        ctx.prompt_tokens, ctx.completion_tokens = prompt_tokens, completion_tokens
        ctx.cost_usd = estimated_cost_usd(dep, input_tokens=prompt_tokens, output_tokens=completion_tokens)

    async def _relay(
        self,
        ctx: RequestContext,
        start: StreamStart,
        *,
        include_usage: bool,
        est_input: int,
        restorer: Restorer | None = None,
        body: Mapping[str, Any] | None = None,
        max_completion: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Relay upstream chunks (OpenAI chat or text-completion chunks; the endpoint's
        dialect encodes them as SSE); a failure after the first byte ends the relay with one
        ``{"error": {...}}`` event (status partial).

        The outcome is recorded whatever happens, shielded from the client's cancellation.
        """
        usage: Any = None
        text_parts: list[str] = []
        status, error = "partial", "stream ended early"
        self.telemetry.record_ttft(ctx, time.perf_counter() - ctx.started)
        try:
            chunk: dict[str, Any] | None = start.first
            last: dict[str, Any] = start.first
            while chunk is not None:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content") or choice.get("text")
                    if isinstance(content, str) and content:
                        text_parts.append(content)
                usage_only = not chunk.get("choices") and chunk.get("usage")
                if include_usage or not usage_only:
                    if not include_usage:
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    for out in _restored_chunks(chunk, restorer) if restorer else (chunk,):
                        yield out
                last = chunk
                chunk = await anext(start.chunks, None)
            if restorer is not None and (tail := restorer.flush()):
                yield {**last, "choices": [{"index": 0, **_text_delta(last, tail), "finish_reason": None}]}
            if include_usage and usage is None:
                # The upstream sent no usage (llama.cpp does not): send the gateway's count.
                self._settle(
                    ctx,
                    start.deployment,
                    None,
                    est_input=est_input,
                    completion_text="".join(text_parts),
                    body=body,
                    max_completion=max_completion,
                )
                yield {
                    "id": last.get("id"), "object": last.get("object", "chat.completion.chunk"),
                    "created": last.get("created"),
                    "model": last.get("model"), "choices": [],
                    "usage": {"prompt_tokens": ctx.prompt_tokens, "completion_tokens": ctx.completion_tokens,
                              "total_tokens": (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)},
                }  # fmt: skip
            status, error = "ok", ""
        except AdapterError as exc:
            error = f"stream from {start.deployment.id} failed after first byte: {exc.error_class}: {exc.message}"
            yield {"error": {"message": error, "type": "upstream_error", "param": None, "code": "stream_interrupted"}}
        except BaseException:
            status, error = "client_disconnected", "client disconnected during the stream"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await start.chunks.aclose()  # type: ignore[attr-defined]
                start.attempt.outcome = status if status != "client_disconnected" else "cancelled"
                start.attempt.latency_ms = (time.perf_counter() - ctx.started) * 1000 - start.attempt.latency_ms
                start.attempt.ended_ns = time.time_ns()
                self._settle(
                    ctx,
                    start.deployment,
                    usage,
                    est_input=est_input,
                    completion_text="".join(text_parts),
                    body=body,
                    max_completion=max_completion,
                )
                await self.limiter.settle(ctx)
                if ctx.principal is not None:
                    ctx.response_digest = self.digester.text(ctx.principal.tenant, "".join(text_parts))
                ctx.status = status
                ctx.http_status = 200
                ctx.error = error or None
                # The decision record is already durable; if the outcome cannot be added, the
                # record keeps status "pending" — visible to auditors as an unfinished request.
                with contextlib.suppress(GatewayError), self.telemetry.stage(ctx, "audit"):
                    await self.audit.record_outcome(ctx)
                self._finish(ctx, last if status == "ok" else None)


def _declared_level(header: str | None) -> DataLevel | None:
    """The declared level from ``x-data-classification``: every value of the header (repeated
    headers arrive comma-joined, RFC 9110 §5.3) must be a level; the highest one counts.
    Raises InvalidRequest naming the header otherwise."""
    if header is None:
        return None
    try:
        return max(DataLevel.parse(value.strip()) for value in header.split(","))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=CLASSIFICATION_HEADER) from None


def _restore_response(response: dict[str, Any], restorer: Restorer) -> None:
    """Put redacted values back into a chat.completion's message contents and tool-call
    arguments, or a text_completion's texts (in place)."""
    for choice in response.get("choices") or []:
        if isinstance(choice.get("text"), str):
            choice["text"] = restorer.text(choice["text"])
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            message["content"] = restorer.text(message["content"])
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = restorer.json_text(function["arguments"])
                if isinstance(function.get("name"), str):
                    function["name"] = restorer.text(function["name"])


def _restored_chunks(chunk: dict[str, Any], restorer: Restorer) -> list[dict[str, Any]]:
    """A stream chunk with redacted values restored. Text that may be the start of a
    placeholder split across chunks is held back; it is emitted, restored, just before the
    chunk that finishes the choice."""
    out: list[dict[str, Any]] = []
    choices = []
    for choice in chunk.get("choices") or []:
        choice = dict(choice)
        if isinstance(choice.get("text"), str):  # a text_completion chunk
            choice["text"] = restorer.feed(choice["text"])
        else:
            delta = dict(choice.get("delta") or {})
            if isinstance(delta.get("content"), str):
                delta["content"] = restorer.feed(delta["content"])
            if isinstance(delta.get("tool_calls"), list):
                delta["tool_calls"] = [_restored_call(choice.get("index", 0), c, restorer) for c in delta["tool_calls"]]
            choice["delta"] = delta
        if choice.get("finish_reason"):
            if tail := restorer.flush():
                out.append({**chunk, "choices": [{"index": choice.get("index", 0), **_text_delta(chunk, tail)}]})
            for (index, call_index), args in restorer.flush_json().items():
                call = {"index": call_index, "function": {"arguments": args}}
                out.append({**chunk, "choices": [{"index": index, "delta": {"tool_calls": [call]}}]})
        choices.append(choice)
    out.append({**chunk, "choices": choices} if "choices" in chunk else chunk)
    return out


def _restored_call(choice_index: int, call: Any, restorer: Restorer) -> Any:
    """A streamed tool-call delta with its name and arguments fragment restored (arguments
    JSON-escaped, a possible placeholder start held back per tool call)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return call
    function = dict(function)
    if isinstance(function.get("arguments"), str):
        function["arguments"] = restorer.feed_json((choice_index, call.get("index", 0)), function["arguments"])
    if isinstance(function.get("name"), str):
        function["name"] = restorer.text(function["name"])
    return {**call, "function": function}


def _text_delta(chunk: Mapping[str, Any], text: str) -> dict[str, Any]:
    """The text-carrying part of a choice in a chunk like ``chunk``: ``{"text": ...}`` for a
    text_completion stream, else ``{"delta": {"content": ...}}``."""
    if chunk.get("object") == "text_completion":
        return {"text": text}
    return {"delta": {"content": text}}


def _is_count(value: Any) -> TypeGuard[int]:
    """A token count an upstream may plausibly report: an int in [0, 2^31)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _choose(ctx: RequestContext, dep: DeploymentConfig) -> None:
    """Record where the request went: deployment id, jurisdiction and locality."""
    ctx.chosen, ctx.chosen_jurisdiction, ctx.chosen_locality = dep.id, dep.jurisdiction, dep.locality


def _message_text(response: Mapping[str, Any]) -> str:
    parts = []
    for choice in response.get("choices") or []:
        content = (choice.get("message") or {}).get("content", choice.get("text"))
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)
