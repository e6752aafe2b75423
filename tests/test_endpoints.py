"""Every model endpoint through the one pipeline, end to end over HTTP: /v1/completions,
/v1/embeddings, /v1/responses and /v1/messages (Anthropic wire format), plus the chat
features (tools, JSON mode, multi-part content, n, stop, stream_options) and unknown-parameter
handling. Provider simulators play the local and the external deployments; egress is asserted
on what each simulator received, and requests sent == audit records written (conftest).

Embeddings are served by simulators here, not by the llama.cpp fixture: llama-cpp-python's
server started with ``--embedding true`` still answers chat, but for SmolLM2 (a model without
pooling) it returns one vector per token instead of the OpenAI shape; the adapter refuses that
as a protocol error (test_malformed_upstream_embeddings_are_502)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import AUDITOR_KEY, GatewayUnderTest
from tests.support.provider_sim import ProviderSimulator
from tests.support.sim_gateway import EMAIL, IBAN, SECRET_PROMPT, leaked, sim_config

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"


@pytest.fixture(scope="module")
def gw(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> GatewayUnderTest:
    return start_gateway(sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b))


def bodies(content: str, model: str = "auto") -> dict[str, dict[str, Any]]:
    """The same prompt as a request body for every endpoint."""
    return {
        CHAT: {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 32},
        COMPLETIONS: {"model": model, "prompt": content, "max_tokens": 32},
        EMBEDDINGS: {"model": model, "input": [content, "second input"]},
        RESPONSES: {"model": model, "input": content, "max_output_tokens": 32},
        MESSAGES: {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": content}]},
    }


ENDPOINT_NAMES = {
    CHAT: "chat.completions",
    COMPLETIONS: "completions",
    EMBEDDINGS: "embeddings",
    RESPONSES: "responses",
    MESSAGES: "messages",
}
STREAMING = [CHAT, COMPLETIONS, RESPONSES, MESSAGES]


def sse(text: str) -> list[tuple[str | None, Any]]:
    """(event name, data) pairs of an SSE body; data parsed as JSON unless it is [DONE]."""
    out: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


# ---------------------------------------------------------------- each endpoint, its format


def test_completions_non_stream(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(COMPLETIONS, json={"model": "auto", "prompt": ["Once upon", "a time"], "max_tokens": 8, "n": 2})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "text_completion" and len(data["choices"]) == 4
    assert data["choices"][0]["text"].startswith("simulated reply from ext-cheap")
    assert sim_a.requests[-1].path == "/v1/completions"
    assert sim_a.requests[-1].json["prompt"] == ["Once upon", "a time"] and sim_a.requests[-1].json["n"] == 2
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "completions" and rec["status"] == "ok" and rec["chosen_deployment"] == "ext-cheap"
    assert rec["prompt_tokens"] == data["usage"]["prompt_tokens"] and rec["completion_tokens"] > 0


def test_completions_stream_with_usage(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    body = {"model": "auto", "prompt": "Count to three", "stream": True, "stream_options": {"include_usage": True}}
    r = gw.post(COMPLETIONS, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [d for _, d in sse(r.text)]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(ch["text"] for c in chunks for ch in c["choices"])
    assert text.startswith("simulated reply from ext-cheap: Count to three")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "completions" and rec["status"] == "ok"
    assert rec["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"]


def test_embeddings(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(EMBEDDINGS, json={"model": "auto", "input": ["alpha", "beta gamma"]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "list" and [d["index"] for d in data["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in data["data"])
    assert sim_a.requests[-1].path == "/v1/embeddings" and sim_a.requests[-1].json["model"] == "cheap-model"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "embeddings" and rec["status"] == "ok"
    assert rec["prompt_tokens"] == 3 and rec["completion_tokens"] == 0 and rec["cost_usd"] > 0


def test_embeddings_need_a_deployment_with_the_capability(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> None:
    config = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    for dep in config["deployments"]:
        if dep["id"] != "ext-pricey":
            dep["capabilities"] = ["stream"]
    gw2 = start_gateway(config)
    r = gw2.post(EMBEDDINGS, json={"model": "auto", "input": "hello"})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    r = gw2.post(EMBEDDINGS, json={"model": "ext-cheap", "input": "hello"})
    assert r.status_code == 403
    assert any("lacks the required capability embeddings" in x for x in r.json()["error"]["reasons"])
    assert sim_a.requests == []


@pytest.mark.parametrize("prompt", [["Once upon", "a time"], [1, 2, 3], [[1, 2], [3]]], ids=["texts", "ids", "lists"])
def test_prompt_arrays_go_only_to_deployments_that_take_them(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    prompt: list[Any],
) -> None:
    """llama.cpp's server answers several prompts or token ids with a 500; five of those in a
    row would open its breaker for every tenant. Such prompts need ``prompt_arrays``."""
    config = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    config["deployments"][0]["capabilities"] = ["stream"]  # local-sim: as llama.cpp
    gw2 = start_gateway(config)
    confidential = {"x-data-classification": "confidential"}  # only local-sim is eligible
    r = gw2.post(COMPLETIONS, json={"model": "auto", "prompt": prompt, "max_tokens": 4}, headers=confidential)
    assert r.status_code == 403, r.text
    assert any("lacks the required capability prompt_arrays" in x for x in r.json()["error"]["reasons"])
    assert gw2.record(r.headers["x-request-id"])["status"] == "denied"
    assert sim_local.requests == []
    for one in ("Once upon", ["Once upon"]):  # one prompt, as a string or a one-item array
        r = gw2.post(COMPLETIONS, json={"model": "auto", "prompt": one, "max_tokens": 4}, headers=confidential)
        assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "local-sim", r.text
    r = gw2.post(COMPLETIONS, json={"model": "auto", "prompt": prompt, "max_tokens": 4})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] != "local-sim"


def test_responses_non_stream(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    body = {
        "model": "auto",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is Rego?"}]}],
        "max_output_tokens": 64,
        "metadata": {"ticket": "42"},
    }
    r = gw.post(RESPONSES, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "response" and data["status"] == "completed" and data["id"].startswith("resp_")
    (item,) = data["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0]["type"] == "output_text"
    assert item["content"][0]["text"] == "simulated reply from ext-cheap: What is Rego?"
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] == 7
    sent = sim_a.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is Rego?"},
    ]
    assert sent.json["max_tokens"] == 64
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "responses" and rec["status"] == "ok"
    assert rec["completion_tokens"] == data["usage"]["output_tokens"]


def test_responses_incomplete_when_cut_by_the_cap(gw: GatewayUnderTest) -> None:
    r = gw.post(RESPONSES, json={"model": "auto", "input": "Tell me a long story", "max_output_tokens": 2})
    assert r.status_code == 200
    assert r.json()["status"] == "incomplete"
    assert r.json()["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_stream_event_sequence(gw: GatewayUnderTest) -> None:
    r = gw.post(RESPONSES, json={"model": "auto", "input": "Stream me", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    kinds = [e for e, _ in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(data["type"] == kind for kind, data in events)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    text = "".join(d["delta"] for k, d in events if k == "response.output_text.delta")
    assert text == "simulated reply from ext-cheap: Stream me"
    done = events[-1][1]["response"]
    assert done["output"][0]["content"][0]["text"] == text and done["usage"]["output_tokens"] == 6
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "responses" and rec["status"] == "ok" and rec["completion_tokens"] == 6


def test_messages_non_stream(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    body = {
        "model": "auto",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour"}]},
        ],
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "u-1"},
    }
    r = gw.post(MESSAGES, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["type"] == "message" and data["role"] == "assistant" and data["id"].startswith("msg_")
    assert data["content"] == [{"type": "text", "text": "simulated reply from ext-cheap: Name a colour"}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] == 7
    sent = sim_a.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent["stop"] == ["\n\nHuman:"] and sent["user"] == "u-1" and sent["max_tokens"] == 50
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "messages" and rec["status"] == "ok"


def test_messages_stream_event_sequence(gw: GatewayUnderTest) -> None:
    body = {"model": "auto", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Go"}]}
    r = gw.post(MESSAGES, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    kinds = [e for e, _ in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    assert all(d["type"] == k for k, d in events)
    text = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
    assert text == "simulated reply from ext-cheap: Go"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 5
    assert "[DONE]" not in r.text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "messages" and rec["status"] == "ok" and rec["completion_tokens"] == 5


def test_messages_errors_are_in_the_anthropic_shape(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(MESSAGES, key=None, json={"model": "auto", "max_tokens": 5, "messages": []})
    assert r.status_code == 401
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    r = gw.post(MESSAGES, json={"model": "auto", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: required: a positive integer"},
    }
    r = gw.post(MESSAGES, key=AUDITOR_KEY, json={"model": "auto", "max_tokens": 5, "messages": []})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    # the anthropic SDK sends its key as x-api-key
    r = gw.client.post(
        MESSAGES,
        headers={"x-api-key": "sk-test-acme-app", "anthropic-version": "2023-06-01"},
        json={"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    sim_a.behave(status=500, times=1)
    r = gw.post(MESSAGES, json={"model": "ext-cheap", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 500 and r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"
    assert "simulated failure" in r.json()["error"]["message"]
    # a denial carries its reasons, and a bad header is named first, as on the OpenAI routes
    iban = {
        "model": "ext-cheap",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "IBAN DE89370400440532013000"}],
    }
    r = gw.post(MESSAGES, json=iban)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert any("ext-cheap" in reason for reason in r.json()["error"]["reasons"])
    r = gw.post(MESSAGES, json={**iban, "messages": [{"role": "user", "content": "x"}]},
                headers={"x-data-classification": "bogus"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("x-data-classification: ")


def test_messages_stream_cut_mid_answer_ends_with_an_error_event(
    gw: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    sim_a.behave(stream_cut_after=3)
    body = {"model": "ext-cheap", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    r = gw.post(MESSAGES, json=body)
    events = sse(r.text)
    assert events[-1][0] == "error" and events[-1][1]["type"] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [k for k, _ in events]
    assert gw.record(r.headers["x-request-id"])["status"] == "partial"


def test_responses_stream_cut_mid_answer_ends_with_response_failed(
    gw: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    sim_a.behave(stream_cut_after=3)
    r = gw.post(RESPONSES, json={"model": "ext-cheap", "input": "a b c", "stream": True})
    kinds = [k for k, _ in sse(r.text)]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    assert gw.record(r.headers["x-request-id"])["status"] == "partial"


def test_completions_stream_cut_mid_answer_has_no_done(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    sim_a.behave(stream_cut_after=2)
    r = gw.post(COMPLETIONS, json={"model": "ext-cheap", "prompt": "a b c", "stream": True})
    events = [d for _, d in sse(r.text)]
    assert "[DONE]" not in events and events[-1]["error"]["code"] == "stream_interrupted"
    assert gw.record(r.headers["x-request-id"])["status"] == "partial"


# ---------------------------------------------------------------- the promise, on every endpoint


@pytest.mark.parametrize(
    ("path", "stream"),
    [(path, stream) for path in ENDPOINT_NAMES for stream in (False, True) if path in STREAMING or not stream],
)  # embeddings have no stream mode
def test_confidential_data_never_leaves_on_any_endpoint(
    gw: GatewayUnderTest,
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    path: str,
    stream: bool,
) -> None:
    body = {**bodies(SECRET_PROMPT)[path], **({"stream": True} if stream else {})}
    r = gw.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "local-sim"
    assert leaked(sim_a, IBAN, EMAIL) == [] and leaked(sim_b, IBAN, EMAIL) == []
    assert sim_a.requests == [] and sim_b.requests == []
    assert leaked(sim_local, IBAN), "the local deployment got the prompt"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == ENDPOINT_NAMES[path] and rec["data_level"] == "confidential"
    assert rec["chosen_deployment"] == "local-sim" and rec["eligible"] == ["local-sim"]
    assert rec["status"] == "ok"

    # only external deployments behind the model: denied before any egress
    r = gw.post(path, json={**body, "model": "external"})
    assert r.status_code == 403
    assert sim_a.requests == [] and sim_b.requests == []
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == ENDPOINT_NAMES[path] and rec["decision"] == "deny" and rec["status"] == "denied"


@pytest.mark.parametrize("path", list(ENDPOINT_NAMES))
def test_declared_classification_header_counts_on_every_endpoint(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, path: str
) -> None:
    body = bodies("Nothing sensitive here")[path]
    r = gw.post(path, json={**body, "model": "external"}, headers={"x-data-classification": "restricted"})
    assert r.status_code == 403 and sim_a.requests == [] and sim_b.requests == []


def test_pii_in_fields_beside_the_prompt_is_classified_too(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """stop sequences, Responses instructions/text format, Anthropic system and tool schemas."""
    cases = [
        (CHAT, {"model": "external", "messages": [{"role": "user", "content": "hi"}], "stop": [EMAIL]}),
        (RESPONSES, {"model": "external", "input": "hi", "instructions": f"Reply to {EMAIL}"}),
        (MESSAGES, {"model": "external", "max_tokens": 5, "system": f"IBAN {IBAN}",
                    "messages": [{"role": "user", "content": "hi"}]}),
        (COMPLETIONS, {"model": "external", "prompt": "hi", "suffix": f"mail {EMAIL}"}),
    ]  # fmt: skip
    for path, body in cases:
        r = gw.post(path, json=body)
        assert r.status_code == 403, (path, r.text)
    assert sim_a.requests == [] and sim_b.requests == []


# ---------------------------------------------------------------- bad input: 400 naming the field

_CHAT_X = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}

BAD_INPUT = [
    (COMPLETIONS, {"model": "auto"}, "prompt"),
    (COMPLETIONS, {"model": "auto", "prompt": 12}, "prompt"),
    (COMPLETIONS, {"model": "auto", "prompt": []}, "prompt"),
    (COMPLETIONS, {"model": "auto", "prompt": ""}, "prompt"),
    (COMPLETIONS, {"model": "auto", "prompt": ["a", ""], "stream": True}, "prompt"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "stream": "yes"}, "stream"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "stop": [1]}, "stop"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    (COMPLETIONS, {"prompt": "x"}, "model"),
    (EMBEDDINGS, {"model": "auto"}, "input"),
    (EMBEDDINGS, {"model": "auto", "input": ""}, "input"),
    (EMBEDDINGS, {"model": "auto", "input": [""]}, "input"),
    (EMBEDDINGS, {"model": "auto", "input": [{"text": "x"}]}, "input"),
    (EMBEDDINGS, {"model": "auto", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    (EMBEDDINGS, {"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
    (EMBEDDINGS, {"model": "auto", "input": "x", "stream": True}, "stream"),
    (RESPONSES, {"model": "auto"}, "input"),
    (RESPONSES, {"model": "auto", "input": []}, "input"),
    (RESPONSES, {"model": "auto", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    (RESPONSES, {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0]"),
    (RESPONSES, {"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    (RESPONSES, {"model": "auto", "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    (RESPONSES, {"model": "auto", "input": "x", "tools": [{"type": "function", "name": "f"}],
                 "tool_choice": {"type": "mcp"}}, "tool_choice"),
    (RESPONSES, {"model": "auto", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    (RESPONSES, {"model": "auto", "input": "x", "max_output_tokens": -1}, "max_output_tokens"),
    (RESPONSES, {"model": "auto", "input": "x", "temperature": 9}, "temperature"),
    (RESPONSES, {"model": "auto", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    (RESPONSES, {"model": "auto", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    (RESPONSES, {"input": "x"}, "model"),
    (MESSAGES, {"model": "auto", "max_tokens": 5}, "messages"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": None}, "messages"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages[0].role"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": 12345}]},
     "messages[0].content"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
     "messages[0].content[0].type"),
    (MESSAGES, {"model": "auto", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 3},
     "system"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "stop_sequences": "x"}, "stop_sequences"),
    (MESSAGES, {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "maybe"}}, "tool_choice.type"),
    (CHAT, {"model": "auto", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
     "stop"),
    (CHAT, {"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1},
            "stream": True}, "stream_options.include_usage"),
    (CHAT, {"model": "auto", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    (CHAT, {"model": "auto", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}]},
     "messages[1]"),
    # values llama.cpp's server answers with a 500 (which would count against its breaker)
    (CHAT, {**_CHAT_X, "top_p": "x"}, "top_p"),
    (CHAT, {**_CHAT_X, "top_p": -1}, "top_p"),
    (CHAT, {**_CHAT_X, "temperature": "0.5"}, "temperature"),
    (CHAT, {**_CHAT_X, "presence_penalty": 3}, "presence_penalty"),
    (CHAT, {**_CHAT_X, "frequency_penalty": True}, "frequency_penalty"),
    (CHAT, {**_CHAT_X, "seed": 1.5}, "seed"),
    (CHAT, {**_CHAT_X, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {**_CHAT_X, "logprobs": 1}, "logprobs"),
    (CHAT, {**_CHAT_X, "logit_bias": {"abc": 1}}, "logit_bias"),
    (CHAT, {**_CHAT_X, "logit_bias": {"12": 101}}, "logit_bias"),
    (CHAT, {**_CHAT_X, "user": 5}, "user"),
    (CHAT, {**_CHAT_X, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "logprobs": True}, "logprobs"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "logprobs": 6}, "logprobs"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "echo": "no"}, "echo"),
    (COMPLETIONS, {"model": "auto", "prompt": "x", "best_of": 0}, "best_of"),
    # structure a server reads: tools, tool_choice, tool_calls, image parts
    (CHAT, {**_CHAT_X, "tools": "x"}, "tools"),
    (CHAT, {**_CHAT_X, "tools": [{"type": "function"}]}, "tools[0].function"),
    (CHAT, {**_CHAT_X, "tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
    (CHAT, {**_CHAT_X, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters"),
    (CHAT, {**_CHAT_X, "tool_choice": "sometimes"}, "tool_choice"),
    (CHAT, {**_CHAT_X, "tool_choice": {"type": "function"}}, "tool_choice.function.name"),
    (CHAT, {"model": "auto", "messages": [{"role": "assistant", "content": None, "tool_calls": "x"}]},
     "messages[0].tool_calls"),
    (CHAT, {"model": "auto", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    (CHAT, {"model": "auto", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages[0].tool_calls[0].id"),
    (CHAT, {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
     "messages[0].content[0].image_url"),
    (CHAT, {**_CHAT_X, "response_format": {"type": "xml"}}, "response_format"),
    (CHAT, {**_CHAT_X, "response_format": "json"}, "response_format"),
    (CHAT, {**_CHAT_X, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (CHAT, {"model": "auto", "messages": [{"role": "function", "content": "hi"}]}, "messages[0].name"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param"), BAD_INPUT)
def test_bad_input_is_400_naming_the_field(
    gw: GatewayUnderTest,
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    path: str,
    body: dict[str, Any],
    param: str,
) -> None:
    r = gw.post(path, json=body)
    assert r.status_code == 400, r.text
    data = r.json()
    if path == MESSAGES:
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
        assert data["error"]["message"].startswith(param + ":")
    else:
        assert data["error"]["param"] == param, data
        assert data["error"]["type"] == "invalid_request_error"
    assert sim_local.requests == [] and sim_a.requests == [] and sim_b.requests == []
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == ENDPOINT_NAMES[path] and rec["status"] == "invalid"


def test_a_number_with_too_many_digits_is_400_without_python_internals(gw: GatewayUnderTest) -> None:
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "seed": ' + b"9" * 5000 + b"}"
    r = gw.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "body" and "more than 4300 digits" in error["message"]
    assert "sys." not in error["message"] and "int_max_str_digits" not in error["message"]
    assert gw.record(r.headers["x-request-id"])["status"] == "invalid"


def test_null_parameters_are_unset_and_not_forwarded(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    body = {"model": "ext-cheap", "messages": [{"role": "user", "content": "x"}], "temperature": None,
            "top_p": None, "stop": None, "tools": None, "user": None, "seed": None}  # fmt: skip
    r = gw.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    sent = sim_a.requests[-1].json
    assert not {"temperature", "top_p", "stop", "tools", "user", "seed"} & set(sent), sent


@pytest.mark.parametrize("path", list(ENDPOINT_NAMES))
@pytest.mark.parametrize("raw", [b"", b"[]", b'{"model": "auto"', b"null"])
def test_unparseable_bodies_are_400_on_every_endpoint(gw: GatewayUnderTest, path: str, raw: bytes) -> None:
    r = gw.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert (r.json()["error"]["message"] if path == MESSAGES else r.json()["error"]["param"]) is not None


@pytest.mark.parametrize("path", list(ENDPOINT_NAMES))
def test_oversized_body_is_413_on_every_endpoint(gw: GatewayUnderTest, sim_a: ProviderSimulator, path: str) -> None:
    r = gw.post(path, content=b'{"input": "' + b"x" * 2_000_000 + b'"}', headers={"content-type": "application/json"})
    assert r.status_code == 413
    if path == MESSAGES:
        assert r.json()["error"]["type"] == "request_too_large"
    assert sim_a.requests == []


def test_upstream_error_is_never_an_empty_success(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    for path, body in bodies("hello", model="ext-cheap").items():
        sim_a.behave(status=422, body={"message": "rejected"}, times=1)
        r = gw.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        text = r.json()["error"]["message"]
        assert "rejected" in text


def test_upstream_malformed_answer_is_502(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    for path, body in bodies("hello", model="ext-cheap").items():
        sim_a.behave(body={"unexpected": True}, times=1)
        r = gw.post(path, json=body)
        assert r.status_code == 502, (path, r.text)


# ---------------------------------------------------------------- chat features end to end


def chat(content: str = "What is the weather in Paris?", **extra: Any) -> dict[str, Any]:
    return {"model": "ext-cheap", "messages": [{"role": "user", "content": content}], **extra}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
]


def test_chat_tool_calls_round_trip(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(CHAT, json=chat(tools=TOOLS, tool_choice="auto"))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"text": "What is the weather in Paris?"}
    assert sim_a.requests[-1].json["tools"] == TOOLS and sim_a.requests[-1].json["tool_choice"] == "auto"
    # the tool's answer goes back; null assistant content is sent as ""
    follow = chat(
        tools=TOOLS,
        tool_choice="none",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
        ],
    )
    r = gw.post(CHAT, json=follow)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    sent = sim_a.requests[-1].json["messages"]
    assert sent[1]["content"] == "" and sent[2] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "sunny, 21 C",
    }


def test_chat_tool_calls_stream(gw: GatewayUnderTest) -> None:
    r = gw.post(CHAT, json=chat(tools=TOOLS, stream=True))
    chunks = [d for _, d in sse(r.text)]
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c.get("choices")]
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(tc["function"].get("arguments", "") for tc in calls)) == {
        "text": "What is the weather in Paris?"
    }
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c.get("choices")][-1] == "tool_calls"


def test_chat_tools_translate_on_messages_and_responses(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    tool = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
    r = gw.post(
        MESSAGES,
        json={"model": "ext-cheap", "max_tokens": 64, "tools": [tool], "tool_choice": {"type": "any"},
              "messages": [{"role": "user", "content": "Weather in Oslo?"}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["stop_reason"] == "tool_use"
    (block,) = data["content"]
    assert (
        block["type"] == "tool_use"
        and block["name"] == "get_weather"
        and block["input"] == {"text": "Weather in Oslo?"}
    )
    sent = sim_a.requests[-1].json
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"},
                                          "description": "Weather"}}
    ]  # fmt: skip
    assert sent["tool_choice"] == "required"
    # tool_result goes back as a tool message
    r = gw.post(
        MESSAGES,
        json={"model": "ext-cheap", "max_tokens": 64, "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [block]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "cold"}]},
        ]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    sent = sim_a.requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"text": "Weather in Oslo?"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": block["id"], "content": "cold"}
    # streamed tool use: a tool_use block with input_json_delta
    r = gw.post(
        MESSAGES,
        json={"model": "ext-cheap", "max_tokens": 64, "stream": True, "tools": [tool],
              "messages": [{"role": "user", "content": "Weather in Oslo?"}]},
    )  # fmt: skip
    events = sse(r.text)
    starts = [d["content_block"] for k, d in events if k == "content_block_start"]
    assert any(b["type"] == "tool_use" and b["name"] == "get_weather" for b in starts)
    partial = "".join(
        d["delta"]["partial_json"] for k, d in events if k == "content_block_delta" and "partial_json" in d["delta"]
    )
    assert json.loads(partial) == {"text": "Weather in Oslo?"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    # Responses function tools
    r = gw.post(
        RESPONSES,
        json={"model": "ext-cheap", "input": "Weather in Rome?",
              "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    (item,) = r.json()["output"]
    assert item["type"] == "function_call" and item["name"] == "get_weather"
    assert json.loads(item["arguments"]) == {"text": "Weather in Rome?"}


def test_chat_json_mode(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(CHAT, json=chat(response_format={"type": "json_object"}))
    assert r.status_code == 200
    assert json.loads(r.json()["choices"][0]["message"]["content"])["reply"].startswith("simulated reply")
    assert sim_a.requests[-1].json["response_format"] == {"type": "json_object"}
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "ok"
    # JSON mode on /v1/responses (text.format)
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}}
    r = gw.post(
        RESPONSES,
        json={"model": "ext-cheap", "input": "hi", "text": {"format": {"type": "json_schema", "name": "r",
                                                                         "schema": schema}}},
    )  # fmt: skip
    assert r.status_code == 200
    assert sim_a.requests[-1].json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": schema},
    }
    assert json.loads(r.json()["output"][0]["content"][0]["text"])["reply"]


def test_chat_json_mode_needs_the_capability(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> None:
    config = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    config["deployments"][1]["capabilities"] = ["stream"]  # ext-cheap: no json
    gw2 = start_gateway(config)
    r = gw2.post(CHAT, json=chat(response_format={"type": "json_object"}))
    assert r.status_code == 403 and "lacks the required capability json" in json.dumps(r.json())
    assert sim_a.requests == []


def test_chat_multi_part_content_is_joined(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]
    r = gw.post(CHAT, json={"model": "ext-cheap", "messages": [{"role": "user", "content": parts}]})
    assert r.status_code == 200
    assert sim_a.requests[-1].json["messages"][0]["content"] == "Hello world"
    assert r.json()["choices"][0]["message"]["content"] == "simulated reply from ext-cheap: Hello world"


def test_chat_n_and_stop(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(CHAT, json=chat("alpha beta gamma", n=3, stop=["gamma"]))
    assert r.status_code == 200
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(c["message"]["content"] == "simulated reply from ext-cheap: alpha beta " for c in choices)
    assert sim_a.requests[-1].json["n"] == 3 and sim_a.requests[-1].json["stop"] == ["gamma"]


def test_chat_stream_options(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(CHAT, json=chat(stream=True))
    chunks = [d for _, d in sse(r.text)][:-1]
    assert not any(c.get("usage") for c in chunks), "no usage chunk unless asked"
    r = gw.post(CHAT, json=chat(stream=True, stream_options={"include_usage": True}))
    chunks = [d for _, d in sse(r.text)][:-1]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    # the gateway always asks the upstream for usage, so the record has exact counts
    assert sim_a.requests[-1].json["stream_options"] == {"include_usage": True}
    assert gw.record(r.headers["x-request-id"])["tokens_estimated"] is False


# ---------------------------------------------------------------- unknown parameters


def test_unknown_params_are_dropped_and_named(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(CHAT, json=chat(frobnicate=True, top_k=5, seed=7))
    assert r.status_code == 200
    assert r.headers["x-gateway-dropped-params"] == "frobnicate,top_k"
    sent = sim_a.requests[-1].json
    assert "frobnicate" not in sent and "top_k" not in sent and sent["seed"] == 7
    # a field the gateway cannot classify never leaves
    r = gw.post(EMBEDDINGS, json={"model": "ext-cheap", "input": "x", "note": SECRET_PROMPT})
    assert r.status_code == 200 and leaked(sim_a, IBAN) == []


def test_unknown_params_rejected_per_config(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> None:
    gw2 = start_gateway(sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b, unknown_params="reject"))
    for path, body in bodies("hi", model="ext-cheap").items():
        r = gw2.post(path, json={**body, "frobnicate": 1})
        assert r.status_code == 400, (path, r.text)
        if path != MESSAGES:
            assert r.json()["error"]["param"] == "frobnicate"
            assert r.json()["error"]["code"] == "unknown_parameter"
    assert sim_a.requests == []
    r = gw2.post(CHAT, json=chat(seed=1))
    assert r.status_code == 200


# ---------------------------------------------------------------- redaction obligation, every endpoint


def test_redaction_obligation_holds_on_every_endpoint_and_every_field(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> None:
    config = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    tenant = config["tenants"]["acme-eu"]
    tenant["allowed"]["confidential"] = {"jurisdictions": ["EU"]}  # EU externals may take it, redacted
    tenant["redact_external"] = ["pii.email"]
    gw2 = start_gateway(config)
    mail = f"Write to {EMAIL} please"
    cases = {
        CHAT: {"messages": [{"role": "user", "content": mail}], "stop": [f"bye {EMAIL}"], "user": EMAIL},
        COMPLETIONS: {"prompt": mail, "suffix": f"cc {EMAIL}"},
        EMBEDDINGS: {"input": [mail]},
        RESPONSES: {"input": mail, "instructions": f"Sign as {EMAIL}"},
        MESSAGES: {"max_tokens": 20, "system": f"Sign as {EMAIL}", "messages": [{"role": "user", "content": mail}]},
    }
    for path, body in cases.items():
        r = gw2.post(path, json={"model": "ext-cheap", **body})
        assert r.status_code == 200, (path, r.text)
        assert leaked(sim_a, EMAIL) == [], path
        assert "[EMAIL_1]" in sim_a.requests[-1].body.decode(), path
        assert gw2.record(r.headers["x-request-id"])["redacted"] == {
            "pii.email": sim_a.requests[-1].body.decode().count("[EMAIL_")
        }
        if path != EMBEDDINGS:
            assert EMAIL in r.text, f"{path}: the placeholder is restored for the client"


def test_chat_store_is_never_forwarded(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    r = gw.post(CHAT, json=chat(store=True, metadata={"k": "v"}))
    assert r.status_code == 200 and r.headers["x-gateway-dropped-params"] == "store"
    assert "store" not in sim_a.requests[-1].json


def test_malformed_upstream_embeddings_are_502(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    # llama.cpp's server answers one vector per token for a model without pooling
    sim_a.behave(body={"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [[0.1, 0.2]]}]})
    r = gw.post(EMBEDDINGS, json={"model": "ext-cheap", "input": "x"})
    assert r.status_code == 502 and "flat list of numbers" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (RESPONSES, {"input": "ok \ud800"}, "input"),
        (MESSAGES, {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
         "messages[0].content[0].text"),
        (EMBEDDINGS, {"input": ["fine", "\ud800"]}, "input[1]"),
        (COMPLETIONS, {"prompt": "x", "suffix": "\ud800"}, "suffix"),
        (CHAT, {"messages": [{"role": "user", "content": "x"}], "user": "\ud800"}, "user"),
    ],
)  # fmt: skip
def test_unpaired_surrogates_are_400_naming_the_field(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, path: str, body: dict[str, Any], param: str
) -> None:
    raw = json.dumps({"model": "ext-cheap", **body})  # ensure_ascii: the surrogate travels as \ud800
    r = gw.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(param + ":") and "surrogate" in message
    assert sim_a.requests == []


def test_limits_reserve_every_choice(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> None:
    """n (and one choice per prompt, best_of) multiply the worst case a request may cost."""
    config = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    config["tenants"]["acme-eu"]["limits"] = {"tpm": 1000}
    gw2 = start_gateway(config)
    r = gw2.post(CHAT, json=chat(max_tokens=300))
    assert r.status_code == 200
    r = gw2.post(CHAT, json=chat(max_tokens=300, n=4))
    assert r.status_code == 400 and r.json()["error"]["code"] == "exceeds_limit", r.text
    r = gw2.post(COMPLETIONS, json={"model": "ext-cheap", "prompt": ["a", "b", "c", "d"], "max_tokens": 300})
    assert r.status_code == 400
    r = gw2.post(COMPLETIONS, json={"model": "ext-cheap", "prompt": "a", "max_tokens": 300, "best_of": 4})
    assert r.status_code == 400
    assert len(sim_a.requests) == 1


def test_responses_stream_function_calls(gw: GatewayUnderTest) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    r = gw.post(RESPONSES, json={"model": "ext-cheap", "input": "Weather in Rome?", "tools": [tool], "stream": True})
    events = sse(r.text)
    kinds = [k for k, _ in events]
    assert "response.output_text.delta" not in kinds
    added = [d["item"] for k, d in events if k == "response.output_item.added"]
    assert [i["type"] for i in added] == ["function_call"] and added[0]["name"] == "get_weather"
    args = "".join(d["delta"] for k, d in events if k == "response.function_call_arguments.delta")
    assert json.loads(args) == {"text": "Weather in Rome?"}
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    (item,) = events[-1][1]["response"]["output"]
    assert item["type"] == "function_call" and item["status"] == "completed" and item["arguments"] == args
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))


def test_responses_tool_loop_round_trip(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    first = gw.post(
        RESPONSES,
        json={"model": "ext-cheap", "input": "Weather in Rome?", "tools": [tool],
              "tool_choice": {"type": "function", "name": "get_weather"}},
    ).json()  # fmt: skip
    assert sim_a.requests[-1].json["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    (call,) = first["output"]
    r = gw.post(
        RESPONSES,
        json={"model": "ext-cheap", "tools": [tool], "tool_choice": "none", "input": [
            {"role": "user", "content": "Weather in Rome?"},
            {"type": "function_call", "call_id": call["call_id"], "name": call["name"], "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
        ]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["output"][0]["type"] == "message"
    sent = sim_a.requests[-1].json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": call["call_id"], "type": "function",
                        "function": {"name": "get_weather", "arguments": call["arguments"]}}],
    }  # fmt: skip
    assert sent[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"}
