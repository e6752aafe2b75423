"""The cases from the field (../shared/cases/routing.yaml, streaming.yaml, input.yaml), each a test
named by its case id here or elsewhere under tests/ — and a test that fails when a case id in
those files appears in no test.

Everything upstream is a provider simulator on loopback ("data never reached X" is asserted on
what the simulator received); every gateway started here checks requests sent == audit
records written when its module ends (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from gateway.auth import hash_key
from tests.conftest import ROOT, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CASES = ROOT.parent / "shared" / "cases"
CASE_FILES = ("routing.yaml", "streaming.yaml", "input.yaml")
CHAT = "/v1/chat/completions"
NO_LLAMA = "http://127.0.0.1:9/v1"  # these cases need no local model: simulators play every part
IBAN_PROMPT = "Invoice for IBAN DE89 3704 0044 0532 0130 00"
EU_KEY = "sk-test-eu-corp-app"
QWEN_KEY = "sk-test-qwen-only"


def _sse(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def _posts(sim: ProviderSimulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "POST"]


def _chat(model: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# --- every case id is a test ------------------------------------------------------------------


def _case_ids() -> list[tuple[str, str]]:
    """(file, id) of every case: the lines ``- id: <id>`` (the files are notes in a YAML-like
    layout, not all of them parse as YAML)."""
    ids = []
    for name in CASE_FILES:
        for line in (CASES / name).read_text(encoding="utf-8").splitlines():
            found = re.match(r"^-\s+id:\s*([A-Za-z0-9][\w.-]*)\s*$", line)
            if found:
                ids.append((name, found.group(1)))
    return ids


def test_every_case_id_in_routing_streaming_and_input_is_a_test() -> None:
    """Never skipped: a missing shared/cases file fails here. A case id counts as covered when
    it appears in a test module under tests/ (a test name or docstring naming it)."""
    for name in CASE_FILES:
        assert (CASES / name).is_file(), f"{CASES / name} is missing"
    ids = _case_ids()
    assert len(ids) >= 8, ids
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py"))
    # an id only counts with a word boundary around it (so "stream-cut" is not "stream-cut-mid-answer")
    missing = [
        f"{name}: {case_id}"
        for name, case_id in ids
        if not re.search(rf"(?<![\w-]){re.escape(case_id)}(?![\w-])", sources)
    ]
    assert not missing, f"case ids that no test under tests/ names: {missing}"


# --- routing.yaml ----------------------------------------------------------------------------


def _residency_config(sim_us: ProviderSimulator, sim_eu: ProviderSimulator | None, strategy: str) -> dict[str, Any]:
    def dep(dep_id: str, sim: ProviderSimulator, jurisdiction: str, price: float, weight: float) -> dict[str, Any]:
        return {
            "id": dep_id,
            "adapter": "openai_compat",
            "model": f"{dep_id}-model",
            "api_base": sim.base_url,
            "locality": "external",
            "jurisdiction": jurisdiction,
            "region": jurisdiction.lower(),
            "capabilities": ["stream"],
            "context_window": 128000,
            "price": {"input_per_mtok": price, "output_per_mtok": price},
            "weight": weight,
            "timeout_s": 5,
        }

    # chat-us is cheaper, heavier and listed first: every strategy would pick it if it could
    deployments = [dep("chat-us", sim_us, "US", 0.1, 100.0)]
    if sim_eu is not None:
        deployments.append(dep("chat-eu", sim_eu, "EU", 5.0, 1.0))
    return {
        "server": {"breaker": {"failures": 1000}, "health": {"enabled": False}},
        "deployments": deployments,
        "aliases": {"chat": {"strategy": strategy, "deployments": [d["id"] for d in deployments]}},
        "tenants": {
            "eu-corp": {
                "home_region": "eu",
                "default_level": "public",
                "allowed": {
                    "public": {"any": True},
                    "internal": {"any": True},
                    "confidential": {"jurisdictions": ["EU"]},
                    "restricted": {"jurisdictions": ["EU"]},
                },
            }
        },
        "keys": [{"id": "k_eu", "hash": hash_key(EU_KEY), "tenant": "eu-corp", "roles": ["app"]}],
        "policy": {"path": str(ROOT / "policies")},
    }


@pytest.mark.parametrize("strategy", ["cost", "weighted", "ordered"])
def test_residency_hard_filter(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, strategy: str
) -> None:
    """routing.yaml residency-hard-filter: 20 confidential (IBAN) requests under each routing
    strategy are all served by chat-eu; chat-us receives nothing. Without chat-eu the answer is
    403 naming the jurisdiction rule, and the denial is audited."""
    us, eu = sim_b, sim_a
    gw = start_gateway(_residency_config(us, eu, strategy))
    for _ in range(20):
        r = gw.post(CHAT, key=EU_KEY, json=_chat("chat", IBAN_PROMPT))
        assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "chat-eu", r.text
    assert len(_posts(eu)) == 20 and us.requests == []
    rec = gw.record(r.headers["x-request-id"])
    assert rec["data_level"] == "confidential" and "chat-us" in rec["excluded"]

    without_eu = start_gateway(_residency_config(us, None, strategy))
    r = without_eu.post(CHAT, key=EU_KEY, json=_chat("chat", IBAN_PROMPT))
    assert r.status_code == 403, r.text
    reasons = r.json()["error"]["reasons"]
    assert any("jurisdiction US is not allowed for confidential data" in x for x in reasons), reasons
    assert us.requests == []
    rec = without_eu.record(r.headers["x-request-id"])
    assert rec["decision"] == "deny" and rec["status"] == "denied" and rec["attempts"] == []


def _qwen_config(sim_local: ProviderSimulator, sim_ext: ProviderSimulator) -> dict[str, Any]:
    doc = make_config(sim_a_url=sim_ext.base_url, sim_b_url=sim_ext.base_url, llama_url=NO_LLAMA)
    common = {"adapter": "openai_compat", "jurisdiction": "EU", "region": "eu", "capabilities": ["stream"]}
    doc["deployments"] += [
        {
            **common,
            "id": "local-qwen",
            "model": "qwen",
            "api_base": sim_local.base_url,
            "locality": "local",
            "context_window": 8192,
            "price": {"input_per_mtok": 0, "output_per_mtok": 0},
        },
        {
            **common,
            "id": "ext-big",
            "model": "big",
            "api_base": sim_ext.base_url,
            "locality": "external",
            "context_window": 200000,
            "price": {"input_per_mtok": 1, "output_per_mtok": 1},
        },
    ]
    # the fallback local-qwen -> ext-big, as an ordered alias
    doc["aliases"]["qwen"] = {"strategy": "ordered", "deployments": ["local-qwen", "ext-big"]}
    doc["keys"].append(
        {
            "id": "k_qwen",
            "hash": hash_key(QWEN_KEY),
            "tenant": "acme-eu",
            "roles": ["app"],
            "allowed_models": ["qwen", "local-qwen"],
        }
    )
    return doc


def test_fallback_rechecked_by_policy(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """routing.yaml fallback-rechecked-by-policy: confidential data may only stay local, so the
    fallback ext-big is excluded by policy and never called — for a ~20,000-token prompt, for
    the local model's context-length error (400) and for a content-policy refusal (400)."""
    local, ext = sim_a, sim_b
    gw = start_gateway(_qwen_config(local, ext))
    confidential = {"x-data-classification": "confidential"}

    huge = " ".join(["word"] * 20_000)  # ~20,000 tokens, far past local-qwen's 8192
    for model in ("qwen", "local-qwen"):
        r = gw.post(CHAT, key=QWEN_KEY, json=_chat(model, huge), headers=confidential)
        assert 400 <= r.status_code < 500 and r.status_code != 404, r.text
        assert "context window" in r.text, r.text
        rec = gw.record(r.headers["x-request-id"])
        assert rec["attempts"] == [] and rec["chosen_deployment"] is None
        if model == "qwen":
            assert "ext-big" in rec["excluded"]
    assert ext.requests == [] and local.requests == []

    refusals = [
        {"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}},
        {"error": {"message": "The response was filtered due to the content policy", "code": "content_filter"}},
    ]
    for refusal in refusals:
        local.behave(status=400, body=refusal)
        r = gw.post(CHAT, key=QWEN_KEY, json=_chat("qwen", "a prompt the local model refuses"), headers=confidential)
        assert r.status_code == 400 and refusal["error"]["message"] in r.json()["error"]["message"], r.text
        rec = gw.record(r.headers["x-request-id"])
        assert "ext-big" in rec["excluded"]
        assert any("locality external is not allowed for confidential data" in x for x in rec["excluded"]["ext-big"])
        assert [a["deployment"] for a in rec["attempts"]] == ["local-qwen"]
    assert ext.requests == [], "the fallback outside the eligible set was called"


# --- streaming.yaml --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sims_gateway(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> GatewayUnderTest:
    """The standard test config with simulators only ("external": ext-cheap, then ext-pricey),
    a 1 s per-try (idle) timeout."""
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=NO_LLAMA)
    for dep in doc["deployments"]:
        if dep["id"] != "local-smollm2":
            dep["timeout_s"] = 1
    return start_gateway(doc)


def test_stream_cut_before_first_byte(
    sims_gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """streaming.yaml stream-cut-before-first-byte: the primary accepts the connection and
    closes it before any chunk; the client sees one clean stream from the secondary ending with
    [DONE], and the record lists both attempts."""
    sim_a.behave(close_connection=True)
    r = sims_gateway.post(CHAT, json=_chat("external", "count to 60", stream=True))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    events = _sse(r.text)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == sim_b.reply_text("count to 60"), "exactly one stream, from the secondary"
    rec = sims_gateway.record(r.headers["x-request-id"])
    assert (rec["attempts"][0]["deployment"], rec["attempts"][0]["outcome"]) == ("ext-cheap", "error")
    assert [a["deployment"] for a in rec["attempts"]] == ["ext-cheap", "ext-pricey"]
    assert rec["status"] == "ok"


@pytest.mark.parametrize("fault", ["connection_closed", "stalled", "malformed_line"])
def test_stream_cut_mid_answer(
    sims_gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, fault: str
) -> None:
    """streaming.yaml stream-cut-mid-answer: after some content chunks the primary (a) closes the
    connection, (b) stalls for 30 s, (c) sends a malformed SSE line. The client never sees a
    normal finish; it gets an explicit terminal error event within the idle timeout (1 s
    here); the record says partial with the tokens delivered; no fallback after the first byte."""
    import time

    delivered = 12
    prompt = " ".join("abcdefghijklmnopqrst")  # 20 one-letter words: a 24-word reply
    if fault == "connection_closed":
        sim_a.behave(stream_cut_after=delivered)
    elif fault == "stalled":
        sim_a.behave(stream_cut_after=delivered, stream_stall_s=30)
    else:
        sim_a.behave(stream_malformed_after=delivered)
    started = time.monotonic()
    r = sims_gateway.post(CHAT, json=_chat("external", prompt, stream=True))
    assert time.monotonic() - started < 10, "the terminal error came later than the idle timeout allows"
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    events = _sse(r.text)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last.get("error", {}).get("message"), last
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
    words = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")).split()
    assert len(words) == delivered
    assert sim_b.requests == [], "no fallback after the first byte"
    rec = sims_gateway.record(r.headers["x-request-id"])
    assert rec["status"] == "partial" and rec["completion_tokens"] >= delivered


# --- input.yaml ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [CHAT, "/v1/embeddings"])
def test_malformed_requests(
    sims_gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, endpoint: str
) -> None:
    """input.yaml malformed-requests: each malformed body is a 400/422 in the OpenAI error shape
    naming the offending field, a 2 MB body is 413 naming the limit; no internal names or stack
    traces, no upstream call, and every rejection is audited."""
    if endpoint == CHAT:
        cases = [
            (b'{"model": "m"}', "messages"),
            (b'{"model": "m", "messages": null}', "messages"),
            (b'{"model": "m", "messages": [{"role": "user", "content": 12345}]}', "messages[0].content"),
            (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}', "body"),
            (b'{"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
        ]
    else:
        cases = [(b'{"model": "m"}', "input"), (b'{"model": "m", "input": "hi"', "body")]
    for raw, param in cases:
        r = sims_gateway.post(endpoint, content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), (raw, r.status_code, r.text)
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error", (raw, err)
        assert param in err["message"] or param == "body", err
        for leak in ("Traceback", "pydantic", "gateway.", 'File "'):
            assert leak not in r.text, (leak, r.text)
        assert sims_gateway.record(r.headers["x-request-id"])["status"] == "invalid"

    two_mb = b'{"model": "m", "input": "' + b"x" * 2_000_000 + b'"}'
    r = sims_gateway.post(endpoint, content=two_mb, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1048576" in r.json()["error"]["message"], r.text
    assert sims_gateway.record(r.headers["x-request-id"])["status"] == "invalid"
    assert _posts(sim_a) == [] and _posts(sim_b) == []


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_is_never_empty_success(
    sims_gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, stream: bool
) -> None:
    """input.yaml upstream-error-is-never-empty-success: the upstream always answers 422
    {"message": "rejected"} and a fallback is configured. The client gets an error status with
    the upstream's reason (a request's own fault is not retried elsewhere), never a 200 with a
    null or empty body; requests sent == audit records written (checked at module end)."""
    sim_a.behave(status=422, body={"message": "rejected"})
    sim_b.behave(status=422, body={"message": "rejected"})
    r = sims_gateway.post(CHAT, json=_chat("external", stream=stream))
    assert r.status_code == 422, r.text
    assert r.content and "rejected" in r.json()["error"]["message"]
    rec = sims_gateway.record(r.headers["x-request-id"])
    assert rec["status"] != "ok" and rec["http_status"] == 422

    sim_a.behave(status=500, body={"message": "rejected"})  # a retryable failure: the fallback answers
    sim_b.clear_behaviour()
    r = sims_gateway.post(CHAT, json=_chat("external", stream=stream))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    if stream:
        assert _sse(r.text)[-1] == "[DONE]" and len(_sse(r.text)) > 1
    else:
        assert r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},
        {"choices": [None]},
    ],
    ids=["null-content", "no-message", "null-choice"],
)
def test_an_empty_upstream_answer_is_never_relayed_as_success(
    sims_gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, answer: dict[str, Any]
) -> None:
    """input.yaml upstream-error-is-never-empty-success, with a 200 that says nothing: it is a
    protocol failure (tried elsewhere like a 5xx), not an answer."""
    sim_a.behave(status=200, body=answer)
    r = sims_gateway.post(CHAT, json=_chat("external"))
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey", r.text
    assert r.json()["choices"][0]["message"]["content"]
    rec = sims_gateway.record(r.headers["x-request-id"])
    assert [(a["deployment"], a["outcome"]) for a in rec["attempts"]] == [("ext-cheap", "error"), ("ext-pricey", "ok")]
    sim_b.behave(status=200, body=answer)
    r = sims_gateway.post(CHAT, json=_chat("external"))
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error", r.text


def test_a_sparse_upstream_answer_is_completed_to_the_wire_format(
    sims_gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    """A server that answers only ``choices`` (no id, object, created, model or usage) still
    gives the client a whole chat.completion, usage from the gateway's own count."""
    sim_a.behave(status=200, body={"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]})
    r = sims_gateway.post(CHAT, json=_chat("external"))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert isinstance(data["created"], int) and data["model"] == "external"
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["total_tokens"] >= data["usage"]["prompt_tokens"]
    assert sims_gateway.record(r.headers["x-request-id"])["status"] == "ok"
