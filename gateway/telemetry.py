"""Telemetry: OpenTelemetry traces and metrics (OTLP over HTTP or gRPC, console, or off), a
Prometheus ``/metrics`` rendering of the same metrics (from the gateway's own in-process
aggregates; the OpenTelemetry SDK receives measurements only when OTLP metrics or another
reader are configured), and structured JSON logs.

One :class:`Telemetry` per app, built in the lifespan from ``telemetry:`` in gateway.yaml (its
providers are not installed globally). Per request: a SERVER span named
``{gen_ai.operation.name} {gen_ai.request.model}`` whose parent is the caller's W3C
``traceparent`` when one is sent; a child span per pipeline stage (``gateway.authenticate``,
``gateway.classify``, ``gateway.decide``, ``gateway.admit``, ``gateway.route``,
``gateway.audit``) and a CLIENT span per upstream attempt. Attributes follow the OpenTelemetry
GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``) plus the gateway's own (``gateway.data_level``,
``gateway.decision``, ``gateway.deployment``, ``gateway.jurisdiction``,
``gateway.policy.revision``). The trace id is returned in ``x-trace-id`` (and ``traceparent``)
and recorded in the audit record.

Content never goes into telemetry: no prompt, completion, header value or key appears in a
span, metric or log line — only ids, names, levels, counts and times. (Per-tenant content
capture is an audit-record obligation, sealed to the auditors' key: gateway/audit/capture.py.)

Metrics (units in the names' conventions; histograms in seconds):
``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``,
``gateway.requests`` (endpoint, status), ``gateway.cost`` (USD; tenant, deployment),
``gateway.time_to_first_token``, ``gateway.decisions`` (jurisdiction, data level, decision),
``gateway.policy.evaluation.duration`` (engine, cached), ``gateway.classification.duration``,
``gateway.audit.commit.duration``, ``gateway.breaker.open`` (gauge per deployment: 1 open).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from gateway.config import TelemetryConfig
from gateway.context import RequestContext

__all__ = ["PROMETHEUS_CONTENT_TYPE", "JsonLogFormatter", "Telemetry", "configure_logging", "log_context"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_log = logging.getLogger("gateway.requests")

log_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("gateway_log_context", default={})  # noqa: B039
"""Request id and trace id of the request being handled, added to every JSON log line."""

_OPERATIONS = {
    "chat.completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
    "messages": "chat",
}
_PROVIDERS = {"openai_compat": "openai", "litellm": "litellm"}
_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FAST_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the current
    request's ``request_id`` and ``trace_id`` (when inside a request), ``exc_type`` for errors.

    ``fields`` passed as ``extra={"fields": {...}}`` are merged in (the per-request line:
    endpoint, status, HTTP status, latency ms, deployment, data level, decision).

    The message is the log call's own text; the gateway never logs prompt or completion
    content, header values or keys, and exceptions are reduced to their type (their text
    could quote an upstream body).
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line."""
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **log_context.get(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    """Send the ``gateway`` loggers to stderr as JSON lines (``fmt == "json"``) or plain text.
    Idempotent: replaces the handler it installed before."""
    logger = logging.getLogger("gateway")
    for handler in list(logger.handlers):
        if getattr(handler, "_sovereign_gateway", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._sovereign_gateway = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonLogFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = fmt != "json"


def _metric_name(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


class _Recorder:
    """One instrument's measurements, aggregated in-process — what ``/metrics`` renders —
    and forwarded to the OpenTelemetry instrument only when something reads OTel metrics
    (OTLP export, extra readers). The SDK spends ~10 us a measurement cleaning and hashing
    attributes (10 measurements a request); this costs ~1.5 us. Used on the event loop only.

    ``kind``: ``counter`` (:meth:`add`) or ``histogram`` (:meth:`record`, ``bounds`` the
    explicit bucket upper bounds, inclusive as in Prometheus ``le`` and OTel).
    """

    def __init__(self, name: str, description: str, kind: str, bounds: Sequence[float] = (), otel: Any = None) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self.bounds = tuple(float(b) for b in bounds)
        self.otel = otel
        # sorted attribute items -> [bucket counts, sum] (histogram) or [value] (counter)
        self.points: dict[tuple[tuple[str, Any], ...], list[Any]] = {}

    def record(self, value: float, attributes: Mapping[str, Any]) -> None:
        """Add one observation to a histogram."""
        key = tuple(sorted(attributes.items()))
        point = self.points.get(key)
        if point is None:
            point = self.points[key] = [[0] * (len(self.bounds) + 1), 0.0]
        point[0][bisect.bisect_left(self.bounds, value)] += 1
        point[1] += value
        if self.otel is not None:
            self.otel.record(value, attributes)

    def add(self, value: float, attributes: Mapping[str, Any]) -> None:
        """Add to a counter."""
        key = tuple(sorted(attributes.items()))
        point = self.points.get(key)
        if point is None:
            point = self.points[key] = [0]
        point[0] += value
        if self.otel is not None:
            self.otel.add(value, attributes)

    def family(self) -> Metric | None:
        """The Prometheus metric family (None before the first measurement). Names and labels
        as the OTel Prometheus convention: dots become underscores; a label an observation
        lacks is empty; counters get ``_total``."""
        if not self.points:
            return None
        name = _metric_name(self.name)
        labels = sorted({k for key in self.points for k, _ in key})
        names = [_metric_name(k) for k in labels]
        if self.kind == "histogram":
            hist = HistogramMetricFamily(name, self.description, labels=names)
            for key, (counts, total) in self.points.items():
                attrs = dict(key)
                cumulative, buckets = 0, []
                for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                hist.add_metric([str(attrs.get(k, "")) for k in labels], buckets, total)
            return hist
        counter = CounterMetricFamily(name.removesuffix("_total"), self.description, labels=names)
        for key, (value,) in self.points.items():
            attrs = dict(key)
            counter.add_metric([str(attrs.get(k, "")) for k in labels], value)
        return counter


class _PrometheusCollector:
    """prometheus_client collector over the in-process aggregates (cumulative since start)
    and the breaker gauge."""

    def __init__(
        self, recorders: Sequence[_Recorder], breakers: Callable[[CallbackOptions], Iterable[Observation]]
    ) -> None:
        self._recorders = recorders
        self._breakers = breakers

    def collect(self) -> Iterable[Metric]:
        for recorder in self._recorders:
            family = recorder.family()
            if family is not None:
                yield family
        observations = list(self._breakers(CallbackOptions()))
        if observations:
            gauge = GaugeMetricFamily(
                "gateway_breaker_open",
                "Circuit breaker state per deployment (1 open, 0 closed)",
                labels=["gateway_deployment"],
            )
            for o in observations:
                gauge.add_metric([str((o.attributes or {}).get("gateway.deployment", ""))], o.value)
            yield gauge


class Telemetry:
    """Tracer, meter, instruments and exporters of one app; see the module docstring.

    ``span_exporters`` / ``metric_readers``: extra sinks (tests pass the SDK's in-memory ones).
    ``breaker_open``: ``() -> {deployment: open?}`` read by the breaker gauge at collection.
    ``deployments``: deployment id → (adapter kind, upstream model), for provider and model
    attributes; ``models``: the model names clients may request (aliases). A requested model
    that is not one of them is reported as ``unknown`` (a client-chosen string could be content).
    """

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        span_exporters: Sequence[SpanExporter] = (),
        metric_readers: Sequence[MetricReader] = (),
        breaker_open: Callable[[], Mapping[str, bool]] | None = None,
        deployments: Mapping[str, tuple[str, str]] | None = None,
        models: Iterable[str] = (),
    ) -> None:
        self.config = config
        self._deployments = dict(deployments or {})
        self._models = frozenset(models) | frozenset(self._deployments)
        resource = Resource.create({"service.name": config.service_name})
        self.tracer_provider = TracerProvider(resource=resource)
        # With nowhere to send spans, only the request span is made (its trace id goes into the
        # response and the audit record); stage and attempt spans cost CPU for nothing.
        self._recording = False
        if config.traces != "off":
            self.tracer_provider.add_span_processor(BatchSpanProcessor(self._span_exporter(config)))
            self._recording = True
        for exporter in span_exporters:
            self.add_span_exporter(exporter)
        readers: list[MetricReader] = list(metric_readers)
        if config.metrics != "off":
            readers.append(
                PeriodicExportingMetricReader(
                    self._metric_exporter(config), export_interval_millis=config.export_interval_s * 1000
                )
            )
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.tracer = self.tracer_provider.get_tracer("sovereign-gateway")
        meter = self.meter_provider.get_meter("sovereign-gateway")
        self._propagator = TraceContextTextMapPropagator()
        self._breaker_open = breaker_open
        otel = bool(readers)  # forward measurements to the SDK only when something reads them
        recorders: list[_Recorder] = []

        def instrument(name: str, unit: str, description: str, bounds: Sequence[float] | None = None) -> _Recorder:
            if bounds is None:
                sdk: Any = meter.create_counter(name, unit=unit, description=description) if otel else None
                recorder = _Recorder(name, description, "counter", otel=sdk)
            else:
                sdk = (
                    meter.create_histogram(
                        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=bounds
                    )
                    if otel
                    else None
                )
                recorder = _Recorder(name, description, "histogram", bounds, otel=sdk)
            recorders.append(recorder)
            return recorder

        self.operation_duration = instrument(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration", _DURATION_BUCKETS_S
        )
        self.token_usage = instrument(
            "gen_ai.client.token.usage", "{token}", "Input and output tokens per request", _TOKEN_BUCKETS
        )
        self.requests = instrument("gateway.requests", "{request}", "Requests by outcome")
        self.cost = instrument("gateway.cost", "USD", "Cost of served requests (USD)")
        self.ttft = instrument(
            "gateway.time_to_first_token", "s", "Time to first token of streams", _DURATION_BUCKETS_S
        )
        self.decisions = instrument(
            "gateway.decisions", "{decision}", "Policy decisions by jurisdiction and data level"
        )
        self.policy_duration = instrument(
            "gateway.policy.evaluation.duration", "s", "Policy evaluation time", _FAST_BUCKETS_S
        )
        self.classify_duration = instrument(
            "gateway.classification.duration", "s", "Classification time", _FAST_BUCKETS_S
        )
        self.audit_duration = instrument(
            "gateway.audit.commit.duration", "s", "Audit entry commit time (write-ahead and outcome)", _FAST_BUCKETS_S
        )
        if otel:
            meter.create_observable_gauge(
                "gateway.breaker.open", callbacks=[self._observe_breakers], unit="1",
                description="Circuit breaker state per deployment (1 open, 0 closed)",
            )  # fmt: skip
        self._stage_histograms = {"classify": self.classify_duration, "audit": self.audit_duration}
        self._registry = CollectorRegistry(auto_describe=False)
        if config.prometheus:
            self._registry.register(_PrometheusCollector(recorders, self._observe_breakers))

    @staticmethod
    def _span_exporter(config: TelemetryConfig) -> SpanExporter:
        if config.traces == "console":
            return ConsoleSpanExporter()
        if config.traces == "otlp_grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

            return GrpcSpans(endpoint=config.endpoint) if config.endpoint else GrpcSpans()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        return HttpSpans(endpoint=f"{config.endpoint.rstrip('/')}/v1/traces") if config.endpoint else HttpSpans()

    @staticmethod
    def _metric_exporter(config: TelemetryConfig) -> Any:
        if config.metrics == "console":
            return ConsoleMetricExporter()
        if config.metrics == "otlp_grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

            return GrpcMetrics(endpoint=config.endpoint) if config.endpoint else GrpcMetrics()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

        return HttpMetrics(endpoint=f"{config.endpoint.rstrip('/')}/v1/metrics") if config.endpoint else HttpMetrics()

    def add_span_exporter(self, exporter: SpanExporter) -> None:
        """Send finished spans to ``exporter`` too (synchronously; tests use the in-memory one)."""
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._recording = True

    def _observe_breakers(self, _options: CallbackOptions) -> Iterable[Observation]:
        states = self._breaker_open() if self._breaker_open is not None else {}
        return [Observation(1 if is_open else 0, {"gateway.deployment": dep}) for dep, is_open in states.items()]

    # -- spans ------------------------------------------------------------------------------

    def start_request(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        """Open the request's SERVER span (child of the caller's ``traceparent`` if valid) and
        put its trace id on ``ctx`` and in the log context."""
        parent: Context = self._propagator.extract({"traceparent": headers.get("traceparent", "")})
        operation = _OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        span: Span
        if self._recording:
            span = self.tracer.start_span(
                f"{operation}", context=parent, kind=SpanKind.SERVER,
                attributes={"gen_ai.operation.name": operation, "gateway.endpoint": ctx.endpoint,
                            "gateway.request_id": ctx.request_id},
            )  # fmt: skip
        else:
            # Nothing exports spans: a non-recording span carries the ids (the caller's trace
            # id, a new span id), as the SDK's own sampler does for a dropped span — without
            # building attributes nobody reads.
            caller = trace.get_current_span(parent).get_span_context()
            ids = self.tracer_provider.id_generator
            trace_id = caller.trace_id if caller.is_valid else ids.generate_trace_id()
            span = trace.NonRecordingSpan(
                trace.SpanContext(trace_id, ids.generate_span_id(), is_remote=False, trace_flags=trace.TraceFlags(1))
            )
        ctx.span = span
        span_context = span.get_span_context()
        ctx.trace_id = format(span_context.trace_id, "032x")
        log_context.set({"request_id": ctx.request_id, "trace_id": ctx.trace_id})

    def response_headers(self, ctx: RequestContext) -> dict[str, str]:
        """``x-trace-id`` and ``traceparent`` of the request's span (empty without one)."""
        span = ctx.span
        if span is None:
            return {}
        sc = span.get_span_context()
        return {"x-trace-id": ctx.trace_id or "", "traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-01"}

    @contextlib.contextmanager
    def stage(self, ctx: RequestContext, name: str, **attributes: Any) -> Iterator[Span]:
        """A child span ``gateway.<name>`` of the request span; an exception marks it failed
        (by type only) and propagates."""
        started = time.perf_counter()
        if not self._recording:
            try:
                yield trace.INVALID_SPAN
            finally:
                histogram = self._stage_histograms.get(name)
                if histogram is not None:
                    histogram.record(time.perf_counter() - started, {"gateway.stage": name})
            return
        parent = trace.set_span_in_context(ctx.span) if ctx.span is not None else None
        with self.tracer.start_as_current_span(
            f"gateway.{name}",
            context=parent,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            finally:
                histogram = self._stage_histograms.get(name)
                if histogram is not None:
                    histogram.record(time.perf_counter() - started, {"gateway.stage": name})

    def _attempt_spans(self, ctx: RequestContext, operation: str) -> None:
        """One CLIENT span per upstream attempt, timed from the attempt's record (it ended at
        ``ended_ns`` after ``latency_ms``)."""
        parent = trace.set_span_in_context(ctx.span)
        for attempt in ctx.attempts:
            adapter, model = self._deployments.get(attempt.deployment, ("", ""))
            end_ns = attempt.ended_ns
            span = self.tracer.start_span(
                f"{operation} {model}".strip(), context=parent, kind=SpanKind.CLIENT,
                start_time=end_ns - int(max(attempt.latency_ms, 0.0) * 1_000_000),
                attributes={"gen_ai.operation.name": operation,
                            "gen_ai.provider.name": _PROVIDERS.get(adapter, adapter),
                            "gen_ai.request.model": model, "gateway.deployment": attempt.deployment,
                            "gateway.attempt.outcome": attempt.outcome},
            )  # fmt: skip
            if attempt.status is not None:
                span.set_attribute("http.response.status_code", attempt.status)
            if attempt.outcome not in ("ok", "streaming"):
                error_type = (attempt.error or attempt.outcome).split(":", 1)[0][:64]
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.end(end_time=end_ns)

    # -- the end of a request ---------------------------------------------------------------

    def finish(self, ctx: RequestContext, *, response_model: str | None = None) -> None:
        """Set the outcome attributes on the request span, end it and record the metrics.
        Idempotent per request (a second call does nothing)."""
        span = ctx.span
        if span is None or getattr(ctx, "_telemetry_done", False):
            return
        ctx._telemetry_done = True  # type: ignore[attr-defined]
        operation = _OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        level = ctx.classification.level.label if ctx.classification else None
        decision = ("allow" if ctx.decision.allow else "deny") if ctx.decision else None
        provider = None
        attrs: dict[str, Any] = {"gateway.status": ctx.status}
        requested = ctx.requested_model if ctx.requested_model in self._models else None
        if ctx.requested_model:
            attrs["gen_ai.request.model"] = requested or "unknown"
            span.update_name(f"{operation} {requested or 'unknown'}")
        if ctx.principal:
            attrs["gateway.tenant"] = ctx.principal.tenant
        if level:
            attrs["gateway.data_level"] = level
        if decision:
            attrs["gateway.decision"] = decision
        if ctx.decision:
            attrs["gateway.policy.revision"] = ctx.decision.revision
            attrs["gateway.policy.engine"] = ctx.decision.engine
            self.policy_duration.record(
                ctx.decision.eval_ms / 1000.0,
                {"gateway.policy.engine": ctx.decision.engine, "gateway.policy.cached": ctx.decision.cached},
            )
        if ctx.chosen:
            attrs["gateway.deployment"] = ctx.chosen
            adapter = self._deployments.get(ctx.chosen, ("", ""))[0]
            provider = _PROVIDERS.get(adapter, adapter) or None
            if provider:
                attrs["gen_ai.provider.name"] = provider
        if ctx.chosen_jurisdiction:
            attrs["gateway.jurisdiction"] = ctx.chosen_jurisdiction
        if response_model:
            attrs["gen_ai.response.model"] = response_model
        if ctx.prompt_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = ctx.prompt_tokens
        if ctx.completion_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = ctx.completion_tokens
        if ctx.http_status is not None:
            attrs["http.response.status_code"] = ctx.http_status
        span.set_attributes(attrs)
        if ctx.status not in ("ok", "pending"):
            span.set_status(Status(StatusCode.ERROR, ctx.status))
            span.set_attribute("error.type", ctx.status)
        if self._recording:
            self._attempt_spans(ctx, operation)
        span.end()

        elapsed_s = ctx.elapsed_ms() / 1000.0
        _log.info(
            "request finished",
            extra={
                "fields": {
                    "request_id": ctx.request_id,
                    "trace_id": ctx.trace_id,
                    "endpoint": ctx.endpoint,
                    "status": ctx.status,
                    "http_status": ctx.http_status,
                    "latency_ms": round(elapsed_s * 1000.0, 2),
                    "deployment": ctx.chosen,
                    "data_level": level,
                    "decision": decision,
                }
            },
        )
        base = {"gen_ai.operation.name": operation}
        if ctx.requested_model:
            base["gen_ai.request.model"] = requested or "unknown"
        if provider:
            base["gen_ai.provider.name"] = provider
        if ctx.status not in ("ok", "pending"):
            base["error.type"] = ctx.status
        self.operation_duration.record(elapsed_s, base)
        self.requests.add(1, {"gateway.endpoint": ctx.endpoint, "gateway.status": ctx.status})
        if ctx.prompt_tokens:
            self.token_usage.record(ctx.prompt_tokens, {**base, "gen_ai.token.type": "input"})
        if ctx.completion_tokens:
            self.token_usage.record(ctx.completion_tokens, {**base, "gen_ai.token.type": "output"})
        if ctx.cost_usd:
            self.cost.add(
                ctx.cost_usd,
                {
                    "gateway.tenant": ctx.principal.tenant if ctx.principal else "",
                    "gateway.deployment": ctx.chosen or "",
                },
            )
        if decision:
            self.decisions.add(
                1,
                {
                    "gateway.jurisdiction": ctx.chosen_jurisdiction or "none",
                    "gateway.data_level": level or "unknown",
                    "gateway.decision": decision,
                },
            )

    def record_ttft(self, ctx: RequestContext, seconds: float) -> None:
        """Time to first token of a stream (s)."""
        self.ttft.record(seconds, {"gen_ai.operation.name": _OPERATIONS.get(ctx.endpoint, ctx.endpoint)})

    # -- exposition and shutdown -------------------------------------------------------------

    def prometheus_text(self) -> bytes:
        """The metrics in Prometheus text format 0.0.4 (empty when ``prometheus`` is off)."""
        return generate_latest(self._registry)

    def shutdown(self) -> None:
        """Flush and stop the exporters (idempotent)."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def finished_spans_text(spans: Iterable[ReadableSpan]) -> str:
    """All names, attributes, events and status texts of ``spans`` as one string (tests search
    it for content that must never appear)."""
    parts = []
    for span in spans:
        parts.append(span.name)
        parts.append(json.dumps({k: str(v) for k, v in (span.attributes or {}).items()}))
        parts.extend(
            event.name + json.dumps({k: str(v) for k, v in (event.attributes or {}).items()}) for event in span.events
        )
        parts.append(span.status.description or "")
    return "\n".join(parts)
