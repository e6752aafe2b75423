"""Classification drives the route, end to end through the real HTTP API: the built-in detector
finds regulated data in any part of a request (here a tool-call argument), the level it implies
keeps the request on the local model (real SmolLM2 via llama.cpp), the external simulators
receive nothing, and the audit record names the labels — never the values."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from gateway.classify import Classifier
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.sim_gateway import CARD, IBAN_COMPACT, leaked, sim_config

CHAT = "/v1/chat/completions"
IBAN = "DE89 3704 0044 0532 0130 00"
EMAIL = "jane.roe@example.org"


def _tool_call_body(iban: str | None) -> dict[str, Any]:
    args = {"amount_eur": 120, "reference": "invoice 2024-117"}
    if iban is not None:
        args["iban"] = iban
    return {
        "model": "auto",
        "max_tokens": 8,
        "temperature": 0,
        "messages": [
            {"role": "user", "content": "Pay the open invoice."},
            {
                "role": "assistant",
                "content": "",  # llama-cpp-python's server rejects content null
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "make_payment", "arguments": json.dumps(args)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "payment queued"},
            {"role": "user", "content": "Confirm in one word."},
        ],
    }


def test_iban_in_a_tool_call_argument_keeps_the_request_local(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    r = gateway.post(CHAT, json=_tool_call_body(IBAN))
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["data_level"] == "confidential" and rec["declared_level"] is None
    assert rec["labels"] == ["pii.iban"]
    assert rec["eligible"] == ["local-smollm2"]
    assert any("locality external is not allowed for confidential data" in m for m in rec["excluded"]["ext-cheap"])
    assert sim_a.requests == [] and sim_b.requests == [], "an IBAN reached an external provider"
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "local-smollm2"
    assert rec["chosen_deployment"] == "local-smollm2"


def test_same_tool_call_without_the_iban_goes_to_the_cheapest_external(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    r = gateway.post(CHAT, json=_tool_call_body(None))
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "ext-cheap"
    assert len(sim_a.requests) == 1 and sim_b.requests == []
    sent = json.dumps(sim_a.requests[0].json)
    assert "make_payment" in sent and "DE89" not in sent
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["data_level"] == "public" and rec["labels"] == []


def test_declared_public_cannot_lower_detected_confidential_and_record_has_no_values(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    # shared/cases/policy.yaml declared-level-only-raises: a message declared "public" that holds
    # a valid IBAN and an email. "external" has no local deployment, so the policy must deny.
    body = {
        "model": "external",
        "messages": [{"role": "user", "content": f"Refund to {IBAN.lower().replace(' ', '')}, confirm to {EMAIL}"}],
    }
    r = gateway.post(CHAT, json=body, headers={"x-data-classification": "public"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "policy_denied"
    assert sim_a.requests == [] and sim_b.requests == []
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["data_level"] == "confidential" and rec["declared_level"] == "public"
    assert rec["labels"] == ["pii.email", "pii.iban"]
    dumped = json.dumps(rec)
    for value in (IBAN, IBAN.replace(" ", ""), IBAN.lower().replace(" ", ""), "0532", EMAIL, "jane.roe", "example.org"):
        assert value not in dumped, f"the audit record holds a matched value: {value!r}"


class _Exploding:
    name = "exploding"

    def detect(self, texts: Sequence[str]) -> set[str]:
        raise RuntimeError("detector bug")


def test_detector_crash_is_restricted_local_only_and_audited_with_the_cause(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    gut = start_gateway(make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama))
    app: Any = gut.server._server.config.app  # the running app; swap in a classifier whose detector fails
    app.state.gateway.classifier = Classifier([_Exploding()])
    r = gut.post(CHAT, json={"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi"}]})
    rec = gut.record(r.headers["x-request-id"])
    assert rec["data_level"] == "restricted" and rec["eligible"] == ["local-smollm2"]
    assert "classifier error (treated as restricted): exploding: RuntimeError" in rec["reasons"]
    assert sim_a.requests == [] and sim_b.requests == []
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "local-smollm2"


# --- nothing the provider would receive goes unscanned (sim gateway: local-sim takes what is
# confidential; the external simulators must receive nothing) -------------------------------

COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
DATA_TEXT = f"data: my card is 4111 1111 1111 1111 and my IBAN {IBAN}, mail {EMAIL}"
ALL_THREE = ["pii.email", "pii.iban", "pii.payment_card"]


@pytest.fixture(scope="module")
def sim_gw(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> GatewayUnderTest:
    return start_gateway(sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b))


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi"}], **extra}


def _messages(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi"}], **extra}


def _responses(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "max_output_tokens": 8, "input": "Say hi", **extra}


def _schema(key: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "string"}}}


def _nested(depth: int, leaf: Any) -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"n": value}
    return value  # type: ignore[no-any-return]


def _tool_turn(call_id: str, arguments: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Pay the invoice."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "pay", "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "done"},
    ]


def _anthropic_tool_turn(tool_id: str, tool_input: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Pay the invoice."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "pay", "input": tool_input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "done"}]},
    ]


_PAY_TOOL = {"type": "function", "function": {"name": "pay", "parameters": _schema("amount")}}
_ESCAPED_ARGS = json.dumps({EMAIL: "a\nb"})  # a key, in arguments that hold escapes

UNSCANNED = [
    # 1. strings starting with "data:" that are no base64 data URL
    pytest.param(CHAT, _chat(messages=[{"role": "user", "content": DATA_TEXT}]), ALL_THREE, id="data-chat-content"),
    pytest.param(MESSAGES, _messages(system=DATA_TEXT), ALL_THREE, id="data-messages-system"),
    pytest.param(COMPLETIONS, {"model": "auto", "max_tokens": 8, "prompt": DATA_TEXT}, ALL_THREE, id="data-prompt"),
    pytest.param(EMBEDDINGS, {"model": "auto", "input": DATA_TEXT}, ALL_THREE, id="data-embeddings"),
    pytest.param(RESPONSES, _responses(input=DATA_TEXT), ALL_THREE, id="data-responses-input"),
    # 2. object keys
    pytest.param(
        CHAT,
        _chat(tools=[{"type": "function", "function": {"name": "pay", "parameters": _schema(EMAIL)}}]),
        ["pii.email"],
        id="key-chat-tool-parameters",
    ),
    pytest.param(
        MESSAGES,
        _messages(tools=[{"name": "pay", "input_schema": _schema(EMAIL)}]),
        ["pii.email"],
        id="key-messages-input-schema",
    ),
    pytest.param(
        CHAT,
        _chat(response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": _schema(EMAIL)}}),
        ["pii.email"],
        id="key-chat-response-format",
    ),
    pytest.param(
        RESPONSES,
        _responses(text={"format": {"type": "json_schema", "name": "r", "schema": _schema(EMAIL)}}),
        ["pii.email"],
        id="key-responses-text-format",
    ),
    pytest.param(CHAT, _chat(metadata={EMAIL: "x"}), ["pii.email"], id="key-chat-metadata"),
    # a card number glued to letters, as identifiers glue them (second new-user trial)
    pytest.param(
        CHAT, _chat(messages=[{"role": "user", "content": "x" + CARD}]), ["pii.payment_card"], id="glued-chat-content"
    ),
    pytest.param(
        CHAT,
        _chat(tools=[{"type": "function", "function": {"name": "f" + CARD}}]),
        ["pii.payment_card"],
        id="glued-tool-name",
    ),
    pytest.param(CHAT, _chat(metadata={"x" + CARD: "1"}), ["pii.payment_card"], id="glued-metadata-key"),
    pytest.param(
        CHAT,
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": "data:text/plain;base64," + base64.b64encode(("mail " + EMAIL).encode()).decode(),
                }
            ]
        ),
        ["pii.email"],
        id="text-data-url",
    ),
    pytest.param(CHAT, _chat(logit_bias={CARD: 1}), ["pii.payment_card"], id="key-chat-logit-bias"),
    pytest.param(
        CHAT, _chat(messages=_tool_turn("call_1", _ESCAPED_ARGS)), ["pii.email"], id="key-chat-escaped-arguments"
    ),
    pytest.param(
        RESPONSES,
        _responses(
            input=[
                {"role": "user", "content": "Pay the invoice."},
                {"type": "function_call", "call_id": "c1", "name": "pay", "arguments": _ESCAPED_ARGS},
                {"type": "function_call_output", "call_id": "c1", "output": "done"},
            ]
        ),
        ["pii.email"],
        id="key-responses-escaped-arguments",
    ),
    pytest.param(
        MESSAGES,
        _messages(messages=_anthropic_tool_turn("toolu_1", {EMAIL: "x"})),
        ["pii.email"],
        id="key-messages-tool-use-input",
    ),
    # 3. identifier-like fields
    pytest.param(
        CHAT,
        _chat(tools=[_PAY_TOOL], tool_choice={"type": "function", "function": {"name": IBAN_COMPACT}}),
        ["pii.iban"],
        id="id-chat-tool-choice",
    ),
    pytest.param(
        RESPONSES,
        _responses(
            tools=[{"type": "function", "name": "pay", "parameters": _schema("amount")}],
            tool_choice={"type": "function", "name": IBAN_COMPACT},
        ),
        ["pii.iban"],
        id="id-responses-tool-choice",
    ),
    pytest.param(
        MESSAGES,
        _messages(
            tools=[{"name": "pay", "input_schema": _schema("amount")}],
            tool_choice={"type": "tool", "name": IBAN_COMPACT},
        ),
        ["pii.iban"],
        id="id-messages-tool-choice",
    ),
    pytest.param(CHAT, _chat(messages=_tool_turn(IBAN_COMPACT, "{}")), ["pii.iban"], id="id-chat-tool-call-id"),
    pytest.param(
        MESSAGES, _messages(messages=_anthropic_tool_turn(IBAN_COMPACT, {})), ["pii.iban"], id="id-messages-tool-use-id"
    ),
    pytest.param(
        RESPONSES,
        _responses(
            input=[
                {"role": "user", "content": "Pay the invoice."},
                {"type": "function_call", "call_id": IBAN_COMPACT, "name": "pay", "arguments": "{}"},
                {"type": "function_call_output", "call_id": IBAN_COMPACT, "output": "done"},
            ]
        ),
        ["pii.iban"],
        id="id-responses-call-id",
    ),
    *[
        pytest.param(
            CHAT,
            _chat(messages=[{"role": "user", "content": "Say hi", key: EMAIL}]),
            ["pii.email"],
            id=f"id-message-{key}",
        )
        for key in ("status", "object", "model", "signature", "format", "file_id", "detail")
    ],
    pytest.param(
        CHAT,
        _chat(messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi", "detail": EMAIL}]}]),
        ["pii.email"],
        id="id-content-part-detail",
    ),
    # 4. top-level fields forwarded but outside the old allow-list
    *[
        pytest.param(CHAT, _chat(**{name: value}), [label], id=f"top-{name}")
        for name, value, label in (
            ("service_tier", EMAIL, "pii.email"),
            ("reasoning_effort", EMAIL, "pii.email"),
            ("verbosity", EMAIL, "pii.email"),
            ("seed", int(CARD), "pii.payment_card"),
            ("modalities", ["text", EMAIL], "pii.email"),
            ("audio", {"voice": EMAIL, "format": "wav"}, "pii.email"),
        )
    ],
    # 5. depth and numbers
    pytest.param(CHAT, _chat(metadata=_nested(40, EMAIL)), ["pii.email"], id="deep-metadata-40"),
    pytest.param(CHAT, _chat(metadata={"c": float(CARD)}), ["pii.payment_card"], id="float-card"),
    # a value split across text parts that the wire format sends joined
    pytest.param(
        MESSAGES,
        _messages(system=[{"type": "text", "text": "card 4111 1111 "}, {"type": "text", "text": "1111 1111"}]),
        ["pii.payment_card"],
        id="split-messages-system-blocks",
    ),
    pytest.param(
        CHAT,
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "card 4111 1111 "}, {"type": "text", "text": "1111 1111"}],
                }
            ]
        ),
        ["pii.payment_card"],
        id="split-chat-text-parts",
    ),
]


@pytest.mark.parametrize(("path", "body", "labels"), UNSCANNED)
def test_every_forwarded_string_is_classified_and_stays_local(
    sim_gw: GatewayUnderTest,
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    path: str,
    body: dict[str, Any],
    labels: list[str],
) -> None:
    r = sim_gw.post(path, json=body)
    rec = sim_gw.record(r.headers["x-request-id"])
    assert rec["data_level"] == "confidential", (rec["data_level"], rec["labels"])
    assert set(labels) <= set(rec["labels"]), rec["labels"]
    assert rec["eligible"] == ["local-sim"]
    assert sim_a.requests == [] and sim_b.requests == [], "regulated data reached an external provider"
    assert leaked(sim_a, EMAIL, CARD, IBAN_COMPACT) == [] and leaked(sim_b, EMAIL, CARD, IBAN_COMPACT) == []
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "local-sim" and len(sim_local.requests) == 1
    for value in (EMAIL, CARD, IBAN_COMPACT, IBAN):
        assert value not in json.dumps(rec), "the audit record holds a matched value"


def test_a_real_data_url_payload_is_not_scanned_but_its_header_is(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> None:
    config = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    for dep in config["deployments"]:
        dep["capabilities"].append("vision")
    sim_gw = start_gateway(config)
    image = "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA" * 4
    body = _chat(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": image}}],
            }
        ]
    )
    r = sim_gw.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    rec = sim_gw.record(r.headers["x-request-id"])
    assert rec["labels"] == [] and rec["data_level"] == "public"
    assert len(sim_a.requests) == 1 and image in json.dumps(sim_a.requests[0].json), "the payload is forwarded as is"
    named = image.replace("data:image/png;", f"data:image/png;name={EMAIL};")
    body["messages"][0]["content"][1]["image_url"]["url"] = named
    r = sim_gw.post(CHAT, json=body)
    rec = sim_gw.record(r.headers["x-request-id"])
    assert rec["labels"] == ["pii.email"] and r.headers["x-gateway-deployment"] == "local-sim"
    assert leaked(sim_a, EMAIL) == [] and leaked(sim_b, EMAIL) == []
