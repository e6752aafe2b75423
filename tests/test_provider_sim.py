"""Fast tests of the provider simulator used by the rest of the suite."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.provider_sim import (
    ANTHROPIC_ERROR_BODY,
    DEFAULT_ERROR_BODY,
    EMBEDDING_DIM,
    ProviderSimulator,
)

CHAT_BODY: dict[str, Any] = {
    "model": "gpt-sim",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there general kenobi"},
    ],
}
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-sim",
    "max_tokens": 100,
    "system": "be brief",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi claude"}]}],
}


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(name="ext-a") as simulator:
        yield simulator


@pytest.fixture()
def client(sim: ProviderSimulator) -> Iterator[httpx.Client]:
    sim.reset()
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as c:
        yield c


def sse_data(lines: list[str]) -> list[str]:
    """The payloads of the ``data:`` lines."""
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def stream_lines(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[list[str], Exception | None]:
    """POST a stream request; return the lines read and the error that ended it."""
    lines: list[str] = []
    try:
        with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line:
                    lines.append(line)
    except httpx.TransportError as exc:
        return lines, exc
    return lines, None


def test_url_properties(sim: ProviderSimulator) -> None:
    assert sim.url.startswith("http://127.0.0.1:")
    assert sim.base_url == sim.url + "/v1"


def test_chat_non_stream_reply_and_usage(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=CHAT_BODY)
    assert response.status_code == 200
    data = response.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-sim"
    choice = data["choices"][0]
    content = "simulated reply from ext-a: hello there general kenobi"
    assert choice["message"] == {"role": "assistant", "content": content}
    assert choice["finish_reason"] == "stop"
    # prompt: "be brief" (2) + "hello there general kenobi" (4); completion: 8 words
    assert data["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 8,
        "total_tokens": 14,
    }


def test_chat_user_text_truncated_and_max_tokens(client: httpx.Client) -> None:
    long_text = "x" * 100
    data = client.post(
        "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": long_text}]},
    ).json()
    assert data["choices"][0]["message"]["content"] == "simulated reply from ext-a: " + "x" * 40

    data = client.post("/chat/completions", json={**CHAT_BODY, "max_tokens": 3}).json()
    assert data["choices"][0]["message"]["content"] == "simulated reply from"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


def test_chat_stream_with_usage(client: httpx.Client) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    lines, error = stream_lines(client, "/chat/completions", body)
    assert error is None
    payloads = sse_data(lines)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert words[0] == "simulated " and words[-1] == "kenobi"
    assert "".join(words) == "simulated reply from ext-a: hello there general kenobi"
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert chunks[-1]["usage"]["total_tokens"] == 14


def test_chat_stream_without_usage_by_default(client: httpx.Client) -> None:
    lines, error = stream_lines(client, "/chat/completions", {**CHAT_BODY, "stream": True})
    assert error is None
    payloads = sse_data(lines)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_status_times_one_then_recovers(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(status=503, times=1)
    first = client.post("/chat/completions", json=CHAT_BODY)
    assert first.status_code == 503
    assert first.json() == DEFAULT_ERROR_BODY
    second = client.post("/chat/completions", json=CHAT_BODY)
    assert second.status_code == 200
    assert sim.behaviour is None


def test_custom_status_body_headers_and_anthropic_default(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(
        status=429,
        body={"error": {"message": "slow down"}},
        headers={"Retry-After": "1"},
    )
    response = client.post("/chat/completions", json={**CHAT_BODY, "stream": True})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": {"message": "slow down"}}
    sim.behave(status=529)
    response = client.post("/messages", json=ANTHROPIC_BODY)
    assert response.status_code == 529
    assert response.json() == ANTHROPIC_ERROR_BODY


def test_close_connection_is_transport_error(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(close_connection=True, times=2)
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=CHAT_BODY)
    stream_body = {**CHAT_BODY, "stream": True}
    with (
        pytest.raises(httpx.TransportError),
        client.stream("POST", "/chat/completions", json=stream_body) as r,
    ):
        r.read()
    assert client.post("/chat/completions", json=CHAT_BODY).status_code == 200
    assert sim.request_count == 3


def test_stream_cut_after_three_chunks(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(stream_cut_after=3)
    lines, error = stream_lines(client, "/chat/completions", {**CHAT_BODY, "stream": True})
    assert isinstance(error, httpx.RemoteProtocolError)
    payloads = sse_data(lines)
    assert "[DONE]" not in payloads
    chunks = [json.loads(p) for p in payloads]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:]]
    assert contents == ["simulated ", "reply ", "from "]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_stream_malformed_and_stall(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(stream_malformed_after=2)
    lines, error = stream_lines(client, "/chat/completions", {**CHAT_BODY, "stream": True})
    assert error is None
    payloads = sse_data(lines)
    assert payloads[3] == "{not json"
    assert payloads[-1] == "[DONE]"

    sim.behave(stream_stall_s=0.3)
    start = time.monotonic()
    lines, error = stream_lines(client, "/chat/completions", {**CHAT_BODY, "stream": True})
    assert error is None and sse_data(lines)[-1] == "[DONE]"
    assert time.monotonic() - start >= 0.3


def test_delay(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(delay_s=0.2, times=1)
    start = time.monotonic()
    assert client.post("/chat/completions", json=CHAT_BODY).status_code == 200
    assert time.monotonic() - start >= 0.2


def test_omit_usage(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(omit_usage=True)
    data = client.post("/chat/completions", json=CHAT_BODY).json()
    assert "usage" not in data
    assert data["choices"][0]["finish_reason"] == "stop"
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    lines, error = stream_lines(client, "/chat/completions", body)
    assert error is None
    payloads = sse_data(lines)
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in json.loads(p) for p in payloads[:-1])
    assert "usage" not in client.post("/messages", json=ANTHROPIC_BODY).json()


def test_anthropic_non_stream(client: httpx.Client) -> None:
    response = client.post("/messages", json=ANTHROPIC_BODY)
    assert response.status_code == 200
    data = response.json()
    assert data["id"].startswith("msg_")
    assert data["type"] == "message"
    assert data["role"] == "assistant"
    assert data["model"] == "claude-sim"
    assert data["content"] == [{"type": "text", "text": "simulated reply from ext-a: hi claude"}]
    assert data["stop_reason"] == "end_turn"
    # input: "be brief" (2) + "hi claude" (2); output: 6 words
    assert data["usage"] == {"input_tokens": 4, "output_tokens": 6}

    missing = {k: v for k, v in ANTHROPIC_BODY.items() if k != "max_tokens"}
    assert client.post("/messages", json=missing).status_code == 400
    truncated = client.post("/messages", json={**ANTHROPIC_BODY, "max_tokens": 2}).json()
    assert truncated["stop_reason"] == "max_tokens"
    assert truncated["content"][0]["text"] == "simulated reply"


def test_anthropic_stream_event_order(client: httpx.Client) -> None:
    lines, error = stream_lines(client, "/messages", {**ANTHROPIC_BODY, "stream": True})
    assert error is None
    events = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(p) for p in sse_data(lines)]
    assert len(events) == len(payloads)
    assert [p["type"] for p in payloads] == events
    assert events == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 6,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert payloads[0]["message"]["usage"]["input_tokens"] == 4
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == "simulated reply from ext-a: hi claude"
    assert all(p["delta"]["type"] == "text_delta" for p in payloads if p["type"] == "content_block_delta")
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
    assert payloads[-2]["usage"] == {"output_tokens": 6}


def test_anthropic_stream_cut(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.behave(stream_cut_after=2)
    lines, error = stream_lines(client, "/messages", {**ANTHROPIC_BODY, "stream": True})
    assert isinstance(error, httpx.RemoteProtocolError)
    events = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]


def test_embeddings_and_models(client: httpx.Client) -> None:
    data = client.post("/embeddings", json={"model": "emb", "input": ["a b", "c"]}).json()
    assert data["object"] == "list"
    assert [d["index"] for d in data["data"]] == [0, 1]
    vectors = [d["embedding"] for d in data["data"]]
    assert all(len(v) == EMBEDDING_DIM for v in vectors)
    assert vectors[0] != vectors[1]
    again = client.post("/embeddings", json={"model": "emb", "input": "a b"}).json()
    assert again["data"][0]["embedding"] == vectors[0]
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}

    models = client.get("/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "sim-model"


def test_requests_are_recorded(sim: ProviderSimulator, client: httpx.Client) -> None:
    client.post(
        "/chat/completions?trace=1",
        json=CHAT_BODY,
        headers={"Authorization": "Bearer sk-test", "X-Custom": "yes"},
    )
    sim.behave(status=500)
    client.post("/messages", json=ANTHROPIC_BODY, headers={"x-api-key": "ak"})
    recorded = sim.requests
    assert len(recorded) == 2
    first, second = recorded
    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    assert first.query == "trace=1"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["x-custom"] == "yes"
    assert first.json == CHAT_BODY
    assert json.loads(first.body) == CHAT_BODY
    assert second.path == "/v1/messages"
    assert second.headers["x-api-key"] == "ak"
    assert sim.last_request == second
    sim.reset()
    assert sim.requests == [] and sim.request_count == 0 and sim.behaviour is None
