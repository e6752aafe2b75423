"""End to end through the real HTTP API: real SmolLM2 via llama.cpp, external provider
simulators, real Rego policy, real SQLite audit database."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import pytest

from tests.conftest import APP_KEY, AUDITOR_KEY, OTHER_TENANT_KEY, GatewayUnderTest
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"


def body(model: str = "auto", content: str = "Say hello in one short sentence.", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_confidential_request_is_answered_by_local_model_and_never_reaches_external(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    r = gateway.post(CHAT, json=body(max_tokens=24, temperature=0), headers={"x-data-classification": "confidential"})
    assert r.status_code == 200, r.text
    data = r.json()
    text = data["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip(), "the real model generated no text"
    assert "simulated reply" not in text
    assert r.headers["x-gateway-deployment"] == "local-smollm2"
    assert data["usage"]["completion_tokens"] > 0
    assert sim_a.requests == [] and sim_b.requests == []
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["data_level"] == "confidential" and rec["declared_level"] == "confidential"
    assert rec["decision"] == "allow" and rec["eligible"] == ["local-smollm2"]
    assert set(rec["excluded"]) == {"ext-pricey", "ext-cheap"}
    assert any("locality external is not allowed for confidential data" in m for m in rec["excluded"]["ext-cheap"])
    assert rec["chosen_deployment"] == "local-smollm2" and rec["status"] == "ok"
    assert rec["policy_revision"].startswith("sha256:") and rec["policy_engine"] == "embedded"
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0
    assert rec["key_id"] == "k_app" and APP_KEY not in json.dumps(rec)


def test_public_request_goes_to_cheapest_eligible(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    r = gateway.post(CHAT, json=body(max_tokens=16))
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "ext-cheap"
    assert r.json()["choices"][0]["message"]["content"].startswith("simulated reply from ext-cheap")
    assert len(sim_a.requests) == 1 and sim_b.requests == []
    assert sim_a.requests[0].json["model"] == "cheap-model"
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["eligible"] == ["local-smollm2", "ext-pricey", "ext-cheap"]
    assert rec["cost_usd"] > 0 and rec["tokens_estimated"] is False


def test_cheapest_answers_503_then_next_eligible_serves_and_both_attempts_are_recorded(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(status=503, times=1)
    r = gateway.post(CHAT, json=body("external"))
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "ext-pricey"
    assert len(sim_a.requests) == 1 and len(sim_b.requests) == 1
    rec = gateway.record(r.headers["x-request-id"])
    attempts = [(a["deployment"], a["outcome"], a["status"]) for a in rec["attempts"]]
    assert attempts == [("ext-cheap", "error", 503), ("ext-pricey", "ok", 200)]
    assert all(a["latency_ms"] >= 0 for a in rec["attempts"])
    assert rec["chosen_deployment"] == "ext-pricey" and rec["status"] == "ok"


def test_fallback_never_leaves_the_eligible_set(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    # internal data may only go to EU: ext-cheap (EU) is eligible, ext-pricey (US) is not.
    sim_a.behave(status=503)
    r = gateway.post(CHAT, json=body("external"), headers={"x-data-classification": "internal"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "upstream_error"
    assert "ext-cheap" in r.json()["error"]["message"]
    assert sim_b.requests == [], "a deployment outside 'eligible' was called on fallback"
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["eligible"] == ["ext-cheap"] and rec["status"] == "upstream_error"
    assert "jurisdiction US is not allowed for internal data" in rec["excluded"]["ext-pricey"][0]


def test_connection_closed_counts_as_failure_and_falls_over(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(close_connection=True)
    r = gateway.post(CHAT, json=body("external"))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["attempts"][0]["error"].startswith("connect_error")


def test_upstream_client_error_is_returned_not_retried_elsewhere(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(status=422, body={"message": "rejected"})
    r = gateway.post(CHAT, json=body("external"))
    assert r.status_code == 422
    err = r.json()["error"]
    assert "rejected" in err["message"] and err["type"] == "upstream_error"
    assert sim_b.requests == []
    assert gateway.record(r.headers["x-request-id"])["status"] == "upstream_error"


def test_nothing_eligible_is_403_with_reasons_no_upstream_call_and_a_denial_record(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    r = gateway.post(CHAT, json=body("external"), headers={"x-data-classification": "confidential"})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["type"] == "permission_error" and err["code"] == "policy_denied"
    assert any("locality external is not allowed for confidential data" in x for x in err["reasons"])
    assert sim_a.requests == [] and sim_b.requests == []
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["decision"] == "deny" and rec["status"] == "denied" and rec["http_status"] == 403
    assert rec["chosen_deployment"] is None and rec["attempts"] == []
    assert set(rec["excluded"]) == {"ext-pricey", "ext-cheap"}


def test_declared_level_cannot_lower_the_tenant_floor(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    # globex-us's floor is internal (US only): declaring "public" does not lower it.
    r = gateway.post(CHAT, key=OTHER_TENANT_KEY, json=body("external"), headers={"x-data-classification": "public"})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["data_level"] == "internal" and rec["declared_level"] == "public"
    assert rec["tenant"] == "globex-us" and rec["eligible"] == ["ext-pricey"]
    assert sim_a.requests == []


def test_declared_level_raises(gateway: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gateway.post(CHAT, json=body("auto", max_tokens=8), headers={"x-data-classification": "restricted"})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "local-smollm2"
    assert gateway.record(r.headers["x-request-id"])["data_level"] == "restricted"
    assert sim_a.requests == []


def test_stream_matches_non_stream_text_ends_with_done_and_records_tokens(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    req = body("local-smollm2", "Name three colors.", max_tokens=24, temperature=0, seed=7)
    plain = gateway.post(CHAT, json=req)
    assert plain.status_code == 200, plain.text
    expected = plain.json()["choices"][0]["message"]["content"]

    streamed = gateway.post(CHAT, json={**req, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    assert text == expected
    assert any(c.get("usage") for c in chunks), "include_usage asked for a usage chunk"
    rec = gateway.record(streamed.headers["x-request-id"])
    assert rec["stream"] is True and rec["status"] == "ok"
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0
    assert sim_a.requests == []


def test_stream_without_include_usage_sends_no_usage_chunk_but_records_tokens(gateway: GatewayUnderTest) -> None:
    r = gateway.post(CHAT, json=body("external", stream=True))
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert not any(json.loads(e).get("usage") for e in events[:-1])
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["completion_tokens"] > 0 and rec["status"] == "ok"


def test_stream_failure_before_first_byte_falls_over(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(close_connection=True)
    r = gateway.post(CHAT, json=body("external", stream=True))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    assert sse_events(r.text)[-1] == "[DONE]"
    rec = gateway.record(r.headers["x-request-id"])
    assert [a["deployment"] for a in rec["attempts"]] == ["ext-cheap", "ext-pricey"]


def test_stream_cut_mid_answer_ends_with_error_event_and_partial_record(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(stream_cut_after=3)
    r = gateway.post(CHAT, json=body("external", "one two three four five six seven", stream=True))
    events = sse_events(r.text)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "stream_interrupted"
    assert not re.search(r"\w+Error\b|<\w+", last["error"]["message"]), last  # no client library class names
    assert not any(
        c.get("choices") and c["choices"][0].get("finish_reason") == "stop" for c in map(json.loads, events[:-1])
    )
    assert sim_b.requests == [], "no fallback after the first byte"
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["status"] == "partial" and rec["completion_tokens"] >= 3


def test_an_upstream_stack_trace_never_reaches_the_client_or_the_record(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """llama-cpp-python's server puts its Python traceback in a 500's message."""
    trace = (
        'Traceback (most recent call last):\n  File "/srv/venv/lib/python3.11/site-packages/llama_cpp/server/app.py",'
        " line 376, in create_chat_completion\nTypeError: '<' not supported"
    )
    sim_a.behave(status=500, body={"error": {"message": trace, "type": "internal_server_error"}})
    sim_b.behave(status=500, body={"error": {"message": trace, "type": "internal_server_error"}})
    r = gateway.post(CHAT, json=body("external"))
    assert r.status_code == 500, r.text
    assert "File " not in r.text and "Traceback" not in r.text and "app.py" not in r.text
    assert "stack trace is withheld" in r.json()["error"]["message"]
    rec = gateway.record(r.headers["x-request-id"])
    assert all("app.py" not in a["error"] for a in rec["attempts"]) and len(rec["attempts"]) == 2


def test_missing_and_wrong_api_key_are_401_and_recorded(gateway: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    before = len(gateway.records(limit=10_000))
    missing = gateway.post(CHAT, key=None, json=body())
    wrong = gateway.post(CHAT, key="sk-not-a-key", json=body())
    for r in (missing, wrong):
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        rec = gateway.record(r.headers["x-request-id"])
        assert rec["status"] == "unauthorized" and rec["tenant"] is None and rec["key_id"] is None
    assert "sk-not-a-key" not in json.dumps(gateway.records(limit=10_000))
    assert len(gateway.records(limit=10_000)) == before + 2
    assert sim_a.requests == []


def test_malformed_bodies_name_the_field_and_are_recorded(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    cases = [
        (b'{"model": "auto"}', "messages"),
        (b'{"model": "auto", "messages": null}', "messages"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": 12345}]}', "messages[0].content"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}', "body"),
        (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
        (b"[1, 2]", "body"),
        (b"", "body"),
    ]
    for raw, param in cases:
        r = gateway.post(CHAT, content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), (raw, r.status_code, r.text)
        err = r.json()["error"]
        assert err["param"] == param, (raw, err)
        assert err["type"] == "invalid_request_error"
        assert "Traceback" not in r.text and "pydantic" not in r.text.lower()
        rec = gateway.record(r.headers["x-request-id"])
        assert rec["status"] == "invalid" and rec["tenant"] == "acme-eu"
    assert sim_a.requests == [] and sim_b.requests == []


def test_bad_classification_header_and_unknown_model_are_4xx(gateway: GatewayUnderTest) -> None:
    r = gateway.post(CHAT, json=body(), headers={"x-data-classification": "secret-ish"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-data-classification"
    r = gateway.post(CHAT, json=body("no-such-model"))
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert r.json()["error"]["code"] == "model_not_found"


def test_oversized_body_is_413(gateway: GatewayUnderTest) -> None:
    big = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}'
    r = gateway.post(CHAT, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1048576" in r.json()["error"]["message"]
    assert gateway.record(r.headers["x-request-id"])["status"] == "invalid"


def test_model_named_in_url_is_ignored_or_rejected(gateway: GatewayUnderTest, sim_b: ProviderSimulator) -> None:
    r = gateway.post(f"{CHAT}?model=ext-pricey", json=body("ext-cheap"))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    r = gateway.post("/openai/deployments/ext-pricey/chat/completions", json=body("ext-cheap"))
    assert r.status_code == 404
    assert sim_b.requests == []


def test_models_lists_aliases_and_deployments(gateway: GatewayUnderTest) -> None:
    r = gateway.client.get("/v1/models", headers={"authorization": f"Bearer {APP_KEY}"})
    ids = [m["id"] for m in r.json()["data"]]
    assert ids[:3] == ["auto", "external", "ordered"] and "local-smollm2" in ids
    assert gateway.client.get("/v1/models").status_code == 401


def test_healthz(gateway: GatewayUnderTest) -> None:
    r = gateway.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["policy_revision"].startswith("sha256:")


def test_out_of_range_and_mistyped_fields_are_400_naming_the_field(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    cases = [
        ({**body(), "max_tokens": 2**63 - 1}, "max_tokens"),
        ({**body(), "max_completion_tokens": 10**30}, "max_completion_tokens"),
        ({**body(), "stream": "yes"}, "stream"),
        ({"model": "auto", "messages": [{"role": "user", "content": None}]}, "messages[0]"),
        ({"model": "auto", "messages": [{"role": "user"}]}, "messages[0]"),
        ({"model": "auto", "messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content"),
    ]
    for req, param in cases:
        r = gateway.post(CHAT, json=req)
        assert r.status_code == 400, (req, r.text)
        assert r.json()["error"]["param"] == param, (req, r.json())
    surrogate = b'{"model": "auto", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
    r = gateway.post(CHAT, content=surrogate, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    assert "surrogate" in r.json()["error"]["message"]
    deep = b'{"model": "auto", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = gateway.post(CHAT, content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "recursion" not in r.text
    assert sim_a.requests == []


def test_assistant_tool_call_without_content_is_valid(gateway: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    r = gateway.post(CHAT, json={"model": "external", "messages": messages})
    assert r.status_code == 200, r.text
    assert sim_a.requests[0].json["messages"][1]["tool_calls"] == [call]
    # the local llama.cpp server rejects null content beside tool_calls: it gets ""
    r = gateway.post(CHAT, json={"model": "local-smollm2", "max_tokens": 4, "messages": messages})
    assert r.status_code == 200, r.text


def test_text_content_parts_reach_the_local_model_as_text(gateway: GatewayUnderTest) -> None:
    parts = [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]
    r = gateway.post(
        CHAT, json={"model": "local-smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": parts}]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


def test_requested_tools_exclude_deployments_without_the_capability(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    r = gateway.post(CHAT, json={**body(), "tools": tools}, headers={"x-data-classification": "confidential"})
    assert r.status_code == 403
    assert any("lacks the required capability tools" in x for x in r.json()["error"]["reasons"])
    r = gateway.post(CHAT, json={**body(), "tools": tools})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    rec = gateway.record(r.headers["x-request-id"])
    assert "local-smollm2" in rec["excluded"]
    assert sim_a.requests[-1].json["tools"] == tools


def test_auditor_key_cannot_run_completions(gateway: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gateway.post(CHAT, key=AUDITOR_KEY, json=body())
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert gateway.record(r.headers["x-request-id"])["status"] == "forbidden"
    assert sim_a.requests == []


def test_a_developer_message_reaches_llama_cpp_as_system(gateway: GatewayUnderTest) -> None:
    """llama.cpp's server refuses the ``developer`` role (a 500 from its schema); the gateway
    sends it as ``system``, which OpenAI treats alike."""
    messages = [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "Say hi"}]
    r = gateway.post(
        CHAT, json=body(max_tokens=8, messages=messages), headers={"x-data-classification": "confidential"}
    )
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "local-smollm2", r.text
    assert gateway.record(r.headers["x-request-id"])["status"] == "ok"


def test_null_sampling_parameters_reach_llama_cpp_as_unset(gateway: GatewayUnderTest) -> None:
    """llama.cpp's server answers ``"temperature": null`` with a 500 (five of those opened its
    breaker for everyone); null means unset in OpenAI's API, so the gateway leaves it out."""
    extra = {"temperature": None, "top_p": None, "seed": None, "stop": None}
    r = gateway.post(CHAT, json=body(max_tokens=4, **extra), headers={"x-data-classification": "confidential"})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "local-smollm2", r.text


def test_unknown_routes_and_methods(gateway: GatewayUnderTest) -> None:
    assert gateway.client.get("/nope").status_code == 404
    assert gateway.client.get("/nope").json()["error"]["type"] == "not_found_error"
    r = gateway.client.put(CHAT, json=body())
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert gateway.record(r.headers["x-request-id"])["status"] == "invalid"
    r = gateway.client.options(CHAT)  # no route takes OPTIONS: Starlette's own 405, same shape
    assert r.status_code == 405
    assert r.json()["error"] == {
        "message": f"OPTIONS is not allowed on {CHAT}",
        "type": "invalid_request_error",
        "param": None,
        "code": "method_not_allowed",
    }
    r = gateway.client.get(
        "/v1/audit/decisions", params={"status": "bogus"}, headers={"authorization": f"Bearer {AUDITOR_KEY}"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "status"


def test_public_request_to_auto_falls_over_from_cheapest_503_to_next_cheapest(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    # auto by cost: ext-cheap (0.1/0.2 USD per Mtok) < local-smollm2 (2/4) < ext-pricey (5/15)
    sim_a.behave(status=503)
    r = gateway.post(CHAT, json=body("auto", max_tokens=8))
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "local-smollm2"
    rec = gateway.record(r.headers["x-request-id"])
    assert [(a["deployment"], a["status"]) for a in rec["attempts"]] == [("ext-cheap", 503), ("local-smollm2", 200)]
    assert sim_b.requests == []


def test_audit_database_holds_no_api_key_nor_prompt_or_completion_text(gateway: GatewayUnderTest) -> None:
    """Runs last in this module: every key used above, and a canary prompt, are absent from
    every row of every table; the prompt and completion are there only as keyed digests."""
    import asyncio

    from sqlalchemy import text

    from gateway.audit.store import make_engine
    from tests.conftest import OTHER_TENANT_KEY

    canary = "canary-7f3a9c mother's maiden name is Smithers"
    r = gateway.post(CHAT, json=body("external", canary))
    assert r.status_code == 200
    completion = r.json()["choices"][0]["message"]["content"]
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["prompt_hmac"].startswith("hmac-sha256:") and rec["response_hmac"].startswith("hmac-sha256:")

    async def dump() -> str:
        engine = make_engine(gateway.audit_url)
        try:
            async with engine.connect() as conn:
                tables = [
                    row[0] for row in await conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
                ]
                rows = []
                for table in tables:
                    rows.extend(str(tuple(r)) for r in await conn.execute(text(f'SELECT * FROM "{table}"')))
                return "\n".join(rows)
        finally:
            await engine.dispose()

    everything = asyncio.run(dump())
    from tests.conftest import LIMITED_KEY

    for secret in (APP_KEY, AUDITOR_KEY, OTHER_TENANT_KEY, LIMITED_KEY, "sk-not-a-key", canary, "Smithers", completion):
        assert secret not in everything, f"{secret[:12]}… found in the audit database"


def test_implausible_upstream_usage_is_replaced_by_a_marked_estimate(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    hostile = {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2**80, "completion_tokens": "lots", "total_tokens": -1},
    }  # fmt: skip
    sim_a.behave(body=hostile)
    r = gateway.post(CHAT, json=body("external"))
    assert r.status_code == 200, r.text
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["tokens_estimated"] is True and 0 < rec["prompt_tokens"] < 1000


def test_repeated_classification_headers_count_the_highest_and_reject_unknown(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    hdrs = [("authorization", f"Bearer {APP_KEY}"), ("x-data-classification", "public"),
            ("x-data-classification", "restricted")]  # fmt: skip
    r = gateway.client.post(CHAT, headers=hdrs, json=body("external"))
    assert r.status_code == 403, "restricted data must not reach the external-only alias"
    assert gateway.record(r.headers["x-request-id"])["data_level"] == "restricted"
    r = gateway.post(CHAT, json=body("external"), headers={"x-data-classification": "public, restricted"})
    assert r.status_code == 403
    r = gateway.post(CHAT, json=body("external"), headers={"x-data-classification": "public, bogus"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-data-classification"
    assert sim_a.requests == []


def test_error_messages_name_no_internal_class(gateway: GatewayUnderTest) -> None:
    r = gateway.post(CHAT, json={"model": "auto", "messages": ["hi"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0]"
    assert "ChatMessage" not in r.text and "must be a JSON object" in r.text


def test_oversized_body_to_an_unknown_route_is_413(gateway: GatewayUnderTest) -> None:
    r = gateway.post("/v1/embeddings", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_key_allowed_one_model_gets_exactly_that_model(gateway: GatewayUnderTest, sim_b: ProviderSimulator) -> None:
    """../shared/cases/routing.yaml model-named-in-url: the model that is authorized is the
    model that is dispatched."""
    from tests.conftest import LIMITED_KEY

    r = gateway.post(f"{CHAT}?model=ext-pricey", key=LIMITED_KEY, json=body("ext-cheap"))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    assert gateway.record(r.headers["x-request-id"])["chosen_deployment"] == "ext-cheap"
    r = gateway.post("/openai/deployments/ext-pricey/chat/completions", key=LIMITED_KEY, json=body("ext-cheap"))
    assert r.status_code == 404
    r = gateway.post(CHAT, key=LIMITED_KEY, json=body("ext-pricey"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert r.json()["error"]["param"] == "model"
    assert gateway.record(r.headers["x-request-id"])["status"] == "forbidden"
    models = gateway.client.get("/v1/models", headers={"authorization": f"Bearer {LIMITED_KEY}"}).json()["data"]
    assert [m["id"] for m in models] == ["ext-cheap"]
    assert sim_b.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["bad-content-length", "bad-request-line", "bad-chunk-size"],
)
def test_a_request_the_http_parser_refuses_gets_the_openai_error_shape(gateway: GatewayUnderTest, raw: bytes) -> None:
    """uvicorn answers these before the app with text/plain ``Invalid HTTP request received.``;
    the gateway's protocol (gateway.api.server) answers JSON in the OpenAI shape and closes."""
    before = len(gateway.records(limit=100_000))
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):  # the server closes the connection after the answer
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), data
    assert b"content-type: application/json" in head.lower()
    error = json.loads(payload)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "malformed_http"
    if b"chunked" in raw:  # refused mid-body: the app was serving it, and records what the client got
        gateway.sent += 1  # a request the app saw, sent past the counting client
        deadline = time.monotonic() + 5
        while len(records := gateway.records(limit=100_000)) == before:
            assert time.monotonic() < deadline, "no record"
            time.sleep(0.05)
        newest = records[0]
        assert newest["endpoint"] == "chat.completions", newest
        assert newest["status"] == "invalid" and newest["http_status"] == 400, newest
