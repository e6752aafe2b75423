"""schemathesis against the gateway's own OpenAPI document (``/openapi.json``): every operation
in it — so endpoints added later are fuzzed too — gets schema-valid and schema-violating
requests (a bounded number per operation) from a real gateway on loopback. No client input may
produce a 5xx; a 4xx comes in the OpenAI error shape (the Anthropic one on /v1/messages); every
request to the model API leaves exactly one audit record.

The deployments are provider simulators (also for the "local" one), so an upstream is never
the reason for a 5xx here. The key holds every role, so admin and audit routes are fuzzed past
authentication too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from gateway.api.openapi import REQUEST_BODIES
from gateway.auth import hash_key
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

FUZZ_KEY = "sk-test-fuzz-every-role"
MAX_EXAMPLES = 25
MODELS = ["external", "auto", "ordered", "ext-cheap", "ext-pricey", "local-smollm2"]
"""Examples per operation and generation mode: ~20 operations stay well under a minute."""


class Fuzzed:
    """The gateway under fuzzing and the request ids of the model-API requests sent to it."""

    def __init__(self, gateway: GatewayUnderTest) -> None:
        self.gateway = gateway
        self.request_ids: list[str] = []
        self.sent = 0


@pytest.fixture(scope="module")
def fuzzed(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> Fuzzed:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=sim_b.base_url)
    for dep in doc["deployments"]:
        dep["capabilities"] = ["stream", "tools", "json", "embeddings"]
    doc["keys"].append(
        {"id": "k_fuzz", "hash": hash_key(FUZZ_KEY), "tenant": "acme-eu", "roles": ["app", "admin", "auditor"]}
    )
    # admin routes write no model-API audit record: the check below counts per request id
    return Fuzzed(start_gateway(doc, check_invariant=False))


def _with_model(drawn: tuple[Any, str | None]) -> Any:
    case, model = drawn
    if model is not None and isinstance(case.body, dict):
        case.body["model"] = model
    return case


def _check(case: Any, fuzzed: Fuzzed, failures: list[str]) -> None:
    """Send one generated request; note a failure instead of raising (so every operation runs)."""
    response = case.call(headers={"authorization": f"Bearer {FUZZ_KEY}"}, timeout=30)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if case.method.upper() == "POST" and case.path in REQUEST_BODIES:
        fuzzed.sent += 1
        request_id = response.headers.get("x-request-id")
        if isinstance(request_id, list):  # schemathesis keeps every value of a header
            request_id = request_id[0] if request_id else None
        if request_id:
            fuzzed.request_ids.append(request_id)
        else:
            failures.append(f"no x-request-id: {where}")
    if response.status_code >= 500:
        failures.append(f"5xx: {where}")
    elif response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            failures.append(f"4xx body is not JSON: {where}")
            return
        if case.path == "/v1/messages":
            ok = body.get("type") == "error" and isinstance((body.get("error") or {}).get("message"), str)
        else:
            error = body.get("error") if isinstance(body, dict) else None
            ok = (
                isinstance(error, dict)
                and isinstance(error.get("message"), str)
                and isinstance(error.get("type"), str)
                and "Traceback" not in error["message"]
            )
        if not ok:
            failures.append(f"4xx not in the error shape: {where}")


def test_no_client_input_gets_a_5xx_on_any_operation(fuzzed: Fuzzed) -> None:
    """Every operation of /openapi.json (iterated, so new endpoints are included), with
    schema-valid and schema-violating requests."""
    schema = schemathesis.openapi.from_url(fuzzed.gateway.url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE and operation.path in REQUEST_BODIES:
                # a random model name is a 404 before anything else: mostly ask for real ones
                strategy = st.tuples(strategy, st.sampled_from([*MODELS, None])).map(_with_model)

            @given(strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate],
            )
            def run(case: Any) -> None:
                _check(case, fuzzed, failures)

            try:
                run()
            except Unsatisfiable:  # nothing in this operation's schema can be violated
                assert mode is GenerationMode.NEGATIVE, f"no valid request for {operation.label}"
    assert operations >= 5
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(sorted(set(failures))[:30])


def test_every_fuzzed_model_api_request_left_one_audit_record(fuzzed: Fuzzed) -> None:
    assert fuzzed.sent > 0 and len(fuzzed.request_ids) == fuzzed.sent
    counts: dict[str, int] = {}
    for record in fuzzed.gateway.records(limit=100_000):
        counts[record["request_id"]] = counts.get(record["request_id"], 0) + 1
    missing = [rid for rid in fuzzed.request_ids if counts.get(rid) != 1]
    assert not missing, f"{len(missing)} request(s) without exactly one audit record, e.g. {missing[:3]}"
