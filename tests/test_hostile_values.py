"""Values JSON text cannot carry — unpaired UTF-16 surrogates (JSON's ``\\ud800`` escape
decodes to one), ``NaN``/``Infinity``, integers beyond 2^53 — whether a client, an upstream
or the configuration brings them, never cost a request its answer shape or its one audit
record (a new-user trial found each of these answering a false 503 audit_unavailable with the
record missing or left pending, or a 500 after an "ok" record). Also: a client that goes
away in the middle of its request body is recorded.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.conftest import APP_KEY, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gw(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> GatewayUnderTest:
    return start_gateway(
        make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    )


def _post_raw(gw: GatewayUnderTest, path: str, body: str) -> Any:
    return gw.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, '{"model":"\\ud800","messages":[{"role":"user","content":"hi"}]}', "model"),
        ("/v1/completions", '{"model":"x\\udc00y","prompt":"hi"}', "model"),
        ("/v1/embeddings", '{"model":"external","input":["ok","\\ud83d"]}', "input[1]"),
        (CHAT, '{"model":"external","messages":[{"role":"user","content":"hi"}],"\\ud800x":1}', "body"),
        ("/v1/messages", '{"model":"external","max_tokens":5,"messages":[],"\\ud800":1}', "body"),
        ("/v1/responses", '{"model":"external","input":"hi","\\ud800x":{"a":1}}', "body"),
    ],
)
def test_unpaired_surrogates_from_the_client_are_400_naming_the_field_and_recorded(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, path: str, body: str, param: str
) -> None:
    sim_a.reset()
    r = _post_raw(gw, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "surrogate" in error["message"]
    if path != "/v1/messages":  # the Anthropic error shape has no param: the message names it
        assert error["param"] == param
    record = gw.record(r.headers["x-request-id"])
    assert record["status"] == "invalid" and record["requested_model"] is None
    assert sim_a.requests == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_request_are_not_json(gw: GatewayUnderTest, constant: str) -> None:
    body = f'{{"model":"external","temperature":{constant},"messages":[{{"role":"user","content":"hi"}}]}}'
    r = _post_raw(gw, CHAT, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    assert constant in r.json()["error"]["message"]
    assert gw.record(r.headers["x-request-id"])["status"] == "invalid"


def _completion(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-\ud800",
        "object": "chat.completion",
        "created": 1,
        "model": "cheap-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", **extra}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_an_upstream_answer_with_surrogates_and_nan_is_repaired_relayed_and_recorded(
    gw: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    """NaN becomes null and an unpaired surrogate U+FFFD (as any strict UTF-8 decoder would),
    so the client gets valid JSON and the record says what the client got."""
    sim_a.behave(status=200, body=_completion("a\ud800b", logprobs={"p": float("nan")}), times=1)
    r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    text = r.content.decode("utf-8")  # strict: no surrogate made it into the bytes
    assert "NaN" not in text
    answer = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the answer"))
    assert answer["choices"][0]["message"]["content"] == "a\ufffdb"
    record = gw.record(r.headers["x-request-id"])
    assert (record["status"], record["http_status"], record["prompt_tokens"]) == ("ok", 200, 3)


def test_an_upstream_error_whose_text_holds_a_surrogate_is_relayed_not_a_false_audit_outage(
    gw: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    sim_a.behave(status=400, body={"error": {"message": "bad request \ud800 here", "type": "invalid_request_error"}})
    try:
        r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        sim_a.reset()
    assert r.status_code == 400 and r.json()["error"]["code"] != "audit_unavailable", r.text
    assert "bad request \ufffd here" in r.json()["error"]["message"]
    record = gw.record(r.headers["x-request-id"])
    assert record["status"] == "upstream_error" and "\ufffd" in record["error"]


def test_a_stream_chunk_with_a_split_surrogate_pair_or_nan_ends_cleanly_and_is_recorded(
    gw: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    """Each chunk is its own JSON document: half of an emoji's surrogate pair in each is two
    unpaired surrogates; both become U+FFFD, the stream ends with [DONE], the record is ok."""
    sim_a.reset()
    body = {"model": "external", "stream": True, "messages": [{"role": "user", "content": "say \U0001f600 please"}]}
    # the simulator echoes the prompt; a split pair is what a tokenizer-level stream produces
    head = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    chunks = [
        head + '"delta":{"content":"\\ud83d"},"finish_reason":null}]}',
        head + '"delta":{"content":"\\ude00"},"logprobs":NaN,"finish_reason":"stop"}]}',
    ]
    from adapters.openai_compat import _loads

    repaired = [_loads(c.encode()) for c in chunks]
    assert [c["choices"][0]["delta"]["content"] for c in repaired] == ["\ufffd", "\ufffd"]
    assert repaired[1]["choices"][0]["logprobs"] is None
    r = gw.post(CHAT, json=body)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert gw.record(r.headers["x-request-id"])["status"] == "ok"


def test_a_client_that_disconnects_mid_body_is_recorded(gw: GatewayUnderTest) -> None:
    url = urlsplit(gw.server.url)
    before = len(gw.records(status="client_disconnected", limit=1000))
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + APP_KEY.encode() + b'\r\nContent-Length: 500\r\n\r\n{"model":'
        )
        time.sleep(0.2)
    gw.sent += 1  # a request the conftest invariant must find one record for
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = gw.records(status="client_disconnected", limit=1000)
        if len(found) > before:
            break
        time.sleep(0.1)
    assert len(found) == before + 1
    assert found[0]["error"].startswith("the client disconnected after 9 bytes")


def test_a_context_window_beyond_what_a_record_can_hold_is_a_config_error() -> None:
    doc = make_config(sim_a_url="http://127.0.0.1:9/v1", sim_b_url="http://127.0.0.1:9/v1", llama_url="http://x/v1")
    doc["deployments"][0]["context_window"] = 2**60
    with pytest.raises(ConfigError, match=r"deployments\.0\.context_window"):
        parse_config(doc)


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_usage_beyond_the_requests_output_cap_is_not_charged(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, stream: bool
) -> None:
    """A misbehaving upstream claiming 2^31 - 1 completion tokens for a max_tokens 5 request
    would be charged ~USD 3,000 against the tenant's budget: over the cap, the gateway's own
    count is recorded instead (marked estimated)."""
    huge = {"prompt_tokens": 3, "completion_tokens": 2**31 - 1, "total_tokens": 2**31 + 2}
    if stream:
        sim_a.reset()
        body = {"model": "external", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        from adapters.openai_compat import OpenAICompatAdapter

        real = OpenAICompatAdapter._stream

        async def inflated(self: Any, *args: Any) -> Any:
            async for chunk in real(self, *args):
                yield {**chunk, "usage": huge} if chunk.get("usage") else chunk

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(OpenAICompatAdapter, "_stream", inflated)
            r = gw.post(CHAT, json=body)
    else:
        reply = _completion("ok")
        reply["id"] = "chatcmpl-1"
        sim_a.behave(status=200, body={**reply, "usage": huge}, times=1)
        r = gw.post(CHAT, json={"model": "external", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    record = gw.record(r.headers["x-request-id"])
    # the gateway's own count of what was relayed (the simulator's stream ignores max_tokens)
    assert record["tokens_estimated"] is True and record["completion_tokens"] < 100
    assert record["cost_usd"] < 0.01


def test_an_answer_with_nan_past_the_adapters_still_renders_as_valid_json(
    gw: GatewayUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adapters hand back JSON-safe answers (openai_compat parses strictly, litellm's are
    repaired); should one not, the answer is still rendered as valid JSON (NaN as null)
    instead of a 500 after the request was recorded as ok."""
    gateway = gw.server.app.state.gateway
    real = gateway.executor.complete

    async def unrepaired(*args: Any, **kwargs: Any) -> Any:
        dep, response = await real(*args, **kwargs)
        response["choices"][0]["logprobs"] = {"p": float("nan")}
        return dep, response

    monkeypatch.setattr(gateway.executor, "complete", unrepaired)
    r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    answer = json.loads(r.content.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"{c} in the answer"))
    assert answer["choices"][0]["logprobs"] == {"p": None}
    assert gw.record(r.headers["x-request-id"])["status"] == "ok"


def test_json_safe_repairs_what_json_text_cannot_carry() -> None:
    from adapters import json_safe

    value = {"a\ud800": [float("nan"), float("-inf"), 1.5, "ok \udfff", ("t", 2)], "n": None, "b": True}
    assert json_safe(value) == {"a\ufffd": [None, None, 1.5, "ok \ufffd", ["t", 2]], "n": None, "b": True}
