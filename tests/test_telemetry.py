"""Observability (issue 8): a trace per request with a span per pipeline stage and per upstream
attempt (GenAI semantic conventions), W3C traceparent honoured, the trace id in the response
and the audit record; Prometheus /metrics with the gateway's metrics; JSON logs with request
and trace ids; and no prompt or completion content in any span, metric or log line.

Spans are read with the SDK's in-memory exporter added to the running gateway's tracer
provider; metrics through /metrics, parsed with prometheus_client's text parser.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry import JsonLogFormatter, finished_spans_text, log_context
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.servers import AiohttpThread

CHAT = "/v1/chat/completions"
CANARY = "CANARY-q7Zx31-never-export-me"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def traced(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> Iterator[tuple[GatewayUnderTest, InMemorySpanExporter, io.StringIO]]:
    gw = start_gateway(
        make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    )
    exporter = InMemorySpanExporter()
    gw.server.app.state.gateway.telemetry.add_span_exporter(exporter)
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("gateway")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield gw, exporter, logs
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _spans_of(exporter: InMemorySpanExporter, trace_id: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


def test_one_request_gives_a_trace_with_a_span_per_stage_and_attempt(
    traced: tuple[GatewayUnderTest, InMemorySpanExporter, io.StringIO],
) -> None:
    gw, exporter, _ = traced
    r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                headers={"traceparent": PARENT})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["x-trace-id"] == TRACE_ID and r.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert gw.record(r.headers["x-request-id"])["trace_id"] == TRACE_ID

    spans = _spans_of(exporter, TRACE_ID)
    by_name = {s.name: s for s in spans}
    root = by_name["chat external"]
    assert root.kind.name == "SERVER" and format(root.parent.span_id, "016x") == "00f067aa0ba902b7"
    stages = {"gateway.authenticate", "gateway.classify", "gateway.decide", "gateway.route", "gateway.admit",
              "gateway.audit"}  # fmt: skip
    assert stages <= set(by_name)
    for name in stages:
        assert by_name[name].parent.span_id == root.context.span_id, name
    attempt = by_name["chat cheap-model"]
    assert attempt.kind.name == "CLIENT" and attempt.parent.span_id == root.context.span_id
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gateway.deployment"] == "ext-cheap"
    attrs = root.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "external"
    assert attrs["gen_ai.response.model"] == "cheap-model"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gateway.data_level"] == "public" and attrs["gateway.decision"] == "allow"
    assert attrs["gateway.deployment"] == "ext-cheap" and attrs["gateway.jurisdiction"] == "EU"
    assert attrs["gateway.policy.revision"].startswith("sha256:")


def test_a_denied_request_has_an_error_span_and_its_own_trace_id(
    traced: tuple[GatewayUnderTest, InMemorySpanExporter, io.StringIO],
) -> None:
    gw, exporter, _ = traced
    r = gw.post(
        CHAT, json={"model": "external", "messages": [{"role": "user", "content": "IBAN DE89370400440532013000"}]}
    )
    assert r.status_code == 403
    trace_id = r.headers["x-trace-id"]
    assert trace_id != TRACE_ID and gw.record(r.headers["x-request-id"])["trace_id"] == trace_id
    root = next(s for s in _spans_of(exporter, trace_id) if s.kind.name == "SERVER")
    assert root.status.status_code.name == "ERROR" and root.attributes["gateway.decision"] == "deny"


def test_no_prompt_or_completion_content_in_spans_metrics_or_logs(
    traced: tuple[GatewayUnderTest, InMemorySpanExporter, io.StringIO], sim_a: ProviderSimulator
) -> None:
    gw, exporter, logs = traced
    exporter.clear()
    message = {"role": "user", "content": f"{CANARY} mail ana@example.com"}
    gw.post(CHAT, json={"model": "external", "messages": [message]})  # confidential: denied
    gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": CANARY}]})
    gw.post(CHAT, json={"model": "external", "stream": True, "messages": [{"role": "user", "content": CANARY}]})
    gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": CANARY}], CANARY: 1})
    gw.post(CHAT, json={"model": CANARY, "messages": [{"role": "user", "content": CANARY}]})
    gw.post(CHAT, content=b'{"model": "external", "messages": "' + CANARY.encode() + b'"}')
    assert any(CANARY in r.body.decode(errors="replace") for r in sim_a.requests)  # it did go upstream
    spans = exporter.get_finished_spans()
    assert len(spans) >= 6
    assert CANARY not in finished_spans_text(spans)
    assert CANARY not in gw.client.get("/metrics").text
    assert CANARY not in logs.getvalue()
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    finished = [line for line in lines if line["message"] == "request finished"]
    assert len(finished) >= 6 and all(line["request_id"].startswith("req_") and line["trace_id"] for line in finished)
    assert {line["status"] for line in finished} >= {"ok", "denied", "invalid"}


def test_metrics_parse_and_carry_the_gateway_metrics(
    traced: tuple[GatewayUnderTest, InMemorySpanExporter, io.StringIO],
) -> None:
    gw, _, _ = traced
    gw.post(CHAT, json={"model": "external", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).read()
    r = gw.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    expected = (
        "gateway_requests", "gateway_cost", "gateway_decisions", "gen_ai_client_operation_duration",
        "gen_ai_client_token_usage", "gateway_time_to_first_token", "gateway_policy_evaluation_duration",
        "gateway_classification_duration", "gateway_audit_commit_duration", "gateway_breaker_open",
    )  # fmt: skip
    for name in expected:
        assert name in families, f"{name} missing from /metrics"
    decisions = [s for s in families["gateway_decisions"].samples if s.name == "gateway_decisions_total"]
    assert {s.labels["gateway_data_level"] for s in decisions} >= {"public", "confidential"}
    assert any(s.labels["gateway_jurisdiction"] == "EU" and s.labels["gateway_decision"] == "allow" for s in decisions)
    breakers = {s.labels["gateway_deployment"]: s.value for s in families["gateway_breaker_open"].samples}
    assert breakers == {"local-smollm2": 0, "ext-cheap": 0, "ext-pricey": 0}
    tokens = families["gen_ai_client_token_usage"].samples
    assert any(s.name.endswith("_count") and s.labels.get("gen_ai_token_type") == "output" for s in tokens)


def test_json_log_lines_carry_request_and_trace_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("gateway.test-json")
    logger.addHandler(handler)
    token = log_context.set({"request_id": "req_1", "trace_id": TRACE_ID})
    try:
        try:
            raise ValueError(CANARY)
        except ValueError:
            logger.exception("upstream failed")
    finally:
        log_context.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["request_id"] == "req_1" and line["trace_id"] == TRACE_ID and line["message"] == "upstream failed"
    assert line["exc_type"] == "ValueError" and CANARY not in stream.getvalue()


# ---------------------------------------------------------------------------------------------
# OTLP export, for real: a collector on loopback receiving the protobuf the SDK sends
# ---------------------------------------------------------------------------------------------


class _HttpCollector:
    """An OTLP/HTTP receiver on loopback: stores the raw export requests per path."""

    def __init__(self) -> None:
        self.received: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}
        self._server = AiohttpThread(self._app, name="otlp-collector")

    def _app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.received.setdefault(request.path, []).append(await request.read())
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", handle)
        app.router.add_post("/v1/metrics", handle)
        return app

    def __enter__(self) -> _HttpCollector:
        self.port = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


def _span_names(payloads: list[bytes]) -> set[str]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    names = set()
    for payload in payloads:
        request = ExportTraceServiceRequest()
        request.ParseFromString(payload)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                names.update(span.name for span in ss.spans)
    return names


def _metric_names(payloads: list[bytes]) -> set[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    names = set()
    for payload in payloads:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(payload)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                names.update(m.name for m in sm.metrics)
    return names


def _traced_config(sim_a: ProviderSimulator, sim_b: ProviderSimulator, telemetry: dict[str, Any]) -> dict[str, Any]:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    doc["telemetry"] = telemetry
    return doc


def test_otlp_http_export_reaches_a_collector(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    from gateway.config import TelemetryConfig
    from gateway.telemetry import Telemetry

    with _HttpCollector() as collector:
        cfg = {"traces": "otlp_http", "metrics": "otlp_http", "endpoint": f"http://127.0.0.1:{collector.port}"}
        gw = start_gateway(_traced_config(sim_a, sim_b, {**cfg, "export_interval_s": 0.2}))
        r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": CANARY}]})
        assert r.status_code == 200
        telemetry: Telemetry = gw.server.app.state.gateway.telemetry
        assert isinstance(telemetry.config, TelemetryConfig)
        telemetry.tracer_provider.force_flush()
        telemetry.meter_provider.force_flush()
        names = _span_names(collector.received["/v1/traces"])
        assert {"chat external", "gateway.decide", "gateway.audit"} <= names
        assert {"gateway.requests", "gen_ai.client.operation.duration"} <= _metric_names(
            collector.received["/v1/metrics"]
        )
        assert all(CANARY.encode() not in p for path in collector.received for p in collector.received[path])
        telemetry.shutdown()  # before the collector goes: no export retries against a closed port


def test_otlp_grpc_export_reaches_a_collector(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from tests.support.servers import free_port

    received: list[bytes] = []

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            received.append(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        gw = start_gateway(
            _traced_config(sim_a, sim_b, {"traces": "otlp_grpc", "endpoint": f"http://127.0.0.1:{port}"})
        )
        assert (
            gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": "hi"}]}).status_code
            == 200
        )
        telemetry = gw.server.app.state.gateway.telemetry
        telemetry.tracer_provider.force_flush()
        assert {"chat external", "gateway.classify"} <= _span_names(received)
        telemetry.shutdown()  # before the collector goes: no export retries against a closed port
    finally:
        server.stop(0)


def test_without_span_exporters_trace_ids_still_follow_the_caller_and_reach_the_record(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """``traces: off`` (nothing exports spans): the request span is a non-recording one, yet
    the caller's traceparent is honoured, each other request gets a fresh trace id, and both
    reach the response headers and the audit record."""
    gw = start_gateway(
        make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    )
    telemetry = gw.server.app.state.gateway.telemetry
    assert not telemetry._recording
    body = {"model": "external", "messages": [{"role": "user", "content": "hello"}]}
    r = gw.post(CHAT, json=body, headers={"traceparent": PARENT})
    assert r.status_code == 200 and r.headers["x-trace-id"] == TRACE_ID
    assert r.headers["traceparent"].startswith(f"00-{TRACE_ID}-") and r.headers["traceparent"] != PARENT
    assert gw.record(r.headers["x-request-id"])["trace_id"] == TRACE_ID
    fresh = {gw.post(CHAT, json=body, headers={"traceparent": "00-garbage-01"}).headers["x-trace-id"] for _ in range(3)}
    assert len(fresh) == 3 and TRACE_ID not in fresh and all(len(t) == 32 and int(t, 16) for t in fresh)


def test_in_process_metric_aggregates_match_the_opentelemetry_sdk() -> None:
    """/metrics renders the gateway's own aggregates (the SDK's per-measurement attribute
    handling cost ~10 us each); with a reader attached the SDK gets every measurement too.
    Both must agree: same series, bucket counts (upper bounds inclusive), sums and totals."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

    from gateway.config import TelemetryConfig
    from gateway.telemetry import Telemetry

    reader = InMemoryMetricReader()
    telemetry = Telemetry(TelemetryConfig(prometheus=True), metric_readers=[reader])
    values = [0.00005, 0.0001, 0.00009, 0.3, 2.5, 0.0, 7.0, 1e-9, 0.0025, 0.0025]
    for i, value in enumerate(values):
        attrs = {"gateway.stage": "classify"} if i % 3 else {"gateway.stage": "audit", "extra": "x"}
        telemetry.classify_duration.record(value, dict(reversed(list(attrs.items()))) if i % 2 else attrs)
        telemetry.requests.add(1, {"gateway.endpoint": "chat.completions", "gateway.status": f"s{i % 2}"})
        telemetry.cost.add(value, {"gateway.tenant": "t"})
    ours = {f.name: f for f in text_string_to_metric_families(telemetry.prometheus_text().decode())}
    sdk = {
        m.name: m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }

    hist = sdk["gateway.classification.duration"].data.data_points
    assert len(hist) == 2
    for point in hist:
        assert isinstance(point, HistogramDataPoint)
        stage = point.attributes["gateway.stage"]
        samples = [s for s in ours["gateway_classification_duration"].samples if s.labels["gateway_stage"] == stage]
        buckets = [s.value for s in samples if s.name.endswith("_bucket")]
        cumulative = [float(sum(point.bucket_counts[: i + 1])) for i in range(len(point.bucket_counts))]
        assert buckets == cumulative
        assert next(s.value for s in samples if s.name.endswith("_sum")) == pytest.approx(point.sum)
        assert next(s.value for s in samples if s.name.endswith("_count")) == point.count
    totals = {
        s.labels["gateway_status"]: s.value for s in ours["gateway_requests"].samples if s.name.endswith("_total")
    }
    assert totals == {p.attributes["gateway.status"]: p.value for p in sdk["gateway.requests"].data.data_points}
    [cost] = [s.value for s in ours["gateway_cost"].samples if s.name.endswith("_total")]
    assert cost == pytest.approx(sdk["gateway.cost"].data.data_points[0].value)
