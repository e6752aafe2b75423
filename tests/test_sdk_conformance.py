"""SDK conformance: the official ``openai`` and ``anthropic`` Python SDKs as clients of a
running gateway, on every endpoint, stream and non-stream — against the provider simulators
and, for a few cheap calls, the real SmolLM2 model behind llama.cpp. Each SDK's HTTP client
counts its requests into the gateway's tally, so requests sent == audit records written."""

from __future__ import annotations

import json
from collections.abc import Callable

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.conftest import APP_KEY, AUDITOR_KEY, GatewayUnderTest
from tests.support.provider_sim import ProviderSimulator
from tests.support.sim_gateway import EMAIL, IBAN, SECRET_PROMPT, leaked, sim_config


@pytest.fixture(scope="module")
def gw(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> GatewayUnderTest:
    return start_gateway(sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b))


def _count(gut: GatewayUnderTest) -> Callable[[httpx.Request | httpx2.Request], None]:
    def count(request: httpx.Request | httpx2.Request) -> None:
        if request.method != "GET":
            gut.sent += 1

    return count


def oai(gut: GatewayUnderTest, key: str = APP_KEY) -> openai.OpenAI:
    """The openai SDK on the gateway; its HTTP client counts POSTs into the gateway's tally."""
    http = httpx.Client(timeout=180, event_hooks={"request": [_count(gut)]})
    return openai.OpenAI(base_url=gut.url + "/v1", api_key=key, max_retries=0, http_client=http)


def ant(gut: GatewayUnderTest, key: str = APP_KEY) -> anthropic.Anthropic:
    """The anthropic SDK (which runs on httpx2) on the gateway, counting likewise."""
    http = httpx2.Client(timeout=180, event_hooks={"request": [_count(gut)]})
    return anthropic.Anthropic(base_url=gut.url, api_key=key, max_retries=0, http_client=http)


# ---------------------------------------------------------------- openai SDK, simulators


def test_openai_chat(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    client = oai(gw)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hello SDK"}], max_tokens=20, n=2, stop=["zzz"]
    )
    completion = raw.parse()
    assert [c.message.content for c in completion.choices] == ["simulated reply from ext-cheap: Hello SDK"] * 2
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["endpoint"] == "chat.completions" and rec["status"] == "ok"


def test_openai_chat_stream_with_usage(gw: GatewayUnderTest) -> None:
    stream = oai(gw).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Stream SDK"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "simulated reply from ext-cheap: Stream SDK"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_openai_chat_tools_and_json_mode(gw: GatewayUnderTest) -> None:
    client = oai(gw)
    tools: list[openai.types.chat.ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "find x"}], tools=tools
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"text": "find x"}  # type: ignore[union-attr]
    completion = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "as json"}], response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "")["reply"]
    # streamed tool calls, accumulated by the SDK's helper
    with client.chat.completions.stream(
        model="auto", messages=[{"role": "user", "content": "find y"}], tools=tools
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index]


def test_openai_completions(gw: GatewayUnderTest) -> None:
    client = oai(gw)
    completion = client.completions.create(model="auto", prompt="Once upon a time", max_tokens=30)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "simulated reply from ext-cheap: Once upon a time"
    chunks = list(client.completions.create(model="auto", prompt=["a b", "c d"], stream=True))
    by_index: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            by_index[choice.index] = by_index.get(choice.index, "") + choice.text
    assert by_index == {0: "simulated reply from ext-cheap: a b", 1: "simulated reply from ext-cheap: c d"}


def test_openai_embeddings(gw: GatewayUnderTest) -> None:
    client = oai(gw)
    result = client.embeddings.create(model="auto", input=["one", "two"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 2
    result = client.embeddings.create(model="auto", input="three", encoding_format="float")
    assert len(result.data[0].embedding) == 8


def test_openai_responses(gw: GatewayUnderTest) -> None:
    client = oai(gw)
    response = client.responses.create(model="auto", input="Explain SSE", instructions="Be short.")
    assert response.status == "completed"
    assert response.output_text == "simulated reply from ext-cheap: Explain SSE"
    assert response.usage is not None and response.usage.output_tokens == 6
    events = list(client.responses.create(model="auto", input="Stream it", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "simulated reply from ext-cheap: Stream it"
    with client.responses.stream(model="auto", input="Helper stream") as stream:
        final = stream.get_final_response()
    assert final.output_text == "simulated reply from ext-cheap: Helper stream"


def test_openai_errors_are_typed(gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator) -> None:
    client = oai(gw)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="auto", prompt=[], max_tokens=5)
    assert bad.value.param == "prompt"  # type: ignore[attr-defined]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.responses.create(model="external", input=SECRET_PROMPT)
    assert denied.value.code == "policy_denied"  # type: ignore[attr-defined]
    with pytest.raises(openai.PermissionDeniedError):
        client.embeddings.create(model="external", input=[SECRET_PROMPT])
    with pytest.raises(openai.AuthenticationError):
        oai(gw, key="sk-wrong").chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.PermissionDeniedError):
        oai(gw, key=AUDITOR_KEY).embeddings.create(model="auto", input="x")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")
    assert leaked(sim_a, IBAN, EMAIL) == [] and leaked(sim_b, IBAN, EMAIL) == []


# ---------------------------------------------------------------- anthropic SDK, simulators


def test_anthropic_messages(gw: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    client = ant(gw)
    raw = client.messages.with_raw_response.create(
        model="auto",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "simulated reply from ext-cheap: Hello Claude"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 6
    assert sim_a.requests[-1].path == "/v1/chat/completions"
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["endpoint"] == "messages" and rec["status"] == "ok"


def test_anthropic_messages_stream(gw: GatewayUnderTest) -> None:
    client = ant(gw)
    with client.messages.stream(
        model="auto", max_tokens=64, messages=[{"role": "user", "content": "Stream Claude"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "simulated reply from ext-cheap: Stream Claude"
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 6
    events = list(
        client.messages.create(
            model="auto", max_tokens=64, stream=True, messages=[{"role": "user", "content": "raw events"}]
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds


def test_anthropic_tool_use(gw: GatewayUnderTest) -> None:
    client = ant(gw)
    tool: anthropic.types.ToolParam = {"name": "get_weather", "input_schema": {"type": "object"}}
    message = client.messages.create(
        model="auto", max_tokens=64, tools=[tool], messages=[{"role": "user", "content": "Oslo weather"}]
    )
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"text": "Oslo weather"}
    assert message.stop_reason == "tool_use"
    with client.messages.stream(
        model="auto", max_tokens=64, tools=[tool], messages=[{"role": "user", "content": "Oslo weather"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"text": "Oslo weather"}


def test_anthropic_errors_are_typed(gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator) -> None:
    client = ant(gw)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="auto", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in bad.value.message
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(model="external", max_tokens=8, messages=[{"role": "user", "content": SECRET_PROMPT}])
    with pytest.raises(anthropic.AuthenticationError):
        ant(gw, key="sk-wrong").messages.create(model="auto", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    sim_a.behave(stream_cut_after=2, times=1)
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model="ext-cheap", max_tokens=64, messages=[{"role": "user", "content": "a b c d"}]
        ) as stream,
    ):
        "".join(stream.text_stream)
    assert leaked(sim_a, IBAN, EMAIL) == [] and leaked(sim_b, IBAN, EMAIL) == []


# ---------------------------------------------------------------- the real local model (SmolLM2)

CONFIDENTIAL = {"x-data-classification": "confidential"}  # local only: the real model answers


def test_openai_sdk_against_the_real_local_model(gateway: GatewayUnderTest) -> None:
    client = oai(gateway)
    completion = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=8,
        temperature=0,
        extra_headers=CONFIDENTIAL,
    )
    assert completion.choices[0].message.content and "simulated" not in completion.choices[0].message.content
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=CONFIDENTIAL,
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    text = client.completions.create(
        model="local-smollm2", prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert text.choices[0].text
    parts = list(client.completions.create(model="local-smollm2", prompt="One, two,", max_tokens=6, stream=True))
    assert "".join(ch.text for p in parts for ch in p.choices)
    response = client.responses.create(model="auto", input="Say hi.", max_output_tokens=8, extra_headers=CONFIDENTIAL)
    assert response.output_text
    # 8 tokens usually cut SmolLM2 short: the stream then ends with response.incomplete (as
    # OpenAI's does), which the SDK's get_final_response() refuses, so read the events
    events = list(
        client.responses.create(
            model="auto", input="Say hi.", max_output_tokens=8, stream=True, extra_headers=CONFIDENTIAL
        )
    )
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[-1].response.output[0].content[0].text  # type: ignore[union-attr]


def test_anthropic_sdk_against_the_real_local_model(gateway: GatewayUnderTest) -> None:
    client = ant(gateway)
    message = client.messages.create(
        model="local-smollm2", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens > 0
    with client.messages.stream(
        model="local-smollm2", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}]
    ) as stream:
        assert "".join(stream.text_stream)
        assert stream.get_final_message().usage.output_tokens > 0


def test_openai_responses_function_calls(gw: GatewayUnderTest) -> None:
    client = oai(gw)
    tools: list[openai.types.responses.ToolParam] = [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}
    ]
    response = client.responses.create(model="auto", input="Weather in Rome?", tools=tools)
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"text": "Weather in Rome?"}
    with client.responses.stream(model="auto", input="Weather in Rome?", tools=tools) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"text": "Weather in Rome?"}
