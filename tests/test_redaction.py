"""Redaction as a policy obligation: spans of the tenant's chosen labels are replaced by typed
placeholders before data reaches an external deployment, and restored for the client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.classify import BuiltinDetector
from gateway.classify.redact import Restorer, redact_body
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.sim_gateway import CARD, IBAN_COMPACT, leaked, sim_config

CHAT = "/v1/chat/completions"
EMAIL = "jane.roe@example.org"
IBAN = "DE89 3704 0044 0532 0130 00"


def test_redact_body_uses_one_placeholder_per_value_and_only_wanted_labels() -> None:
    body = {
        "messages": [
            {"role": "system", "content": f"Reply to {EMAIL}"},
            {"role": "user", "content": [{"type": "text", "text": f"{EMAIL} pays with {IBAN}"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "mail", "arguments": json.dumps({"to": EMAIL})}}
            ]},
        ]
    }  # fmt: skip
    sent, redaction = redact_body(body, BuiltinDetector(), ["pii.email"])
    text = json.dumps(sent)
    assert EMAIL not in text and IBAN in text
    assert sent["messages"][0]["content"] == "Reply to [EMAIL_1]"
    assert sent["messages"][1]["content"][0]["text"].startswith("[EMAIL_1] pays with")
    assert redaction.mapping == {"[EMAIL_1]": EMAIL}
    assert redaction.counts["pii.email"] == 3
    assert body["messages"][0]["content"] == f"Reply to {EMAIL}", "the client's body is not modified"


@pytest.mark.parametrize("cuts", [[3], [1, 5], [9], [2, 4, 6, 8]])
def test_restorer_handles_placeholders_split_across_stream_chunks(cuts: list[int]) -> None:
    answer = "Sent to [EMAIL_1] and [IBAN_1]. [NOT_A_PLACEHOLDER] stays."
    restorer = Restorer({"[EMAIL_1]": EMAIL, "[IBAN_1]": IBAN})
    pieces, at = [], 0
    for cut in [c * 3 for c in cuts] + [len(answer)]:
        pieces.append(answer[at:cut])
        at = cut
    out = "".join(restorer.feed(p) for p in pieces) + restorer.flush()
    assert out == f"Sent to {EMAIL} and {IBAN}. [NOT_A_PLACEHOLDER] stays."


def _doc(sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str, restore: bool) -> dict[str, Any]:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    tenant = doc["tenants"]["acme-eu"]
    tenant["allowed"]["confidential"] = {"jurisdictions": ["EU"]}  # EU externals may take confidential data
    tenant["redact_external"] = ["pii.email"]
    tenant["restore_redacted"] = restore
    return doc


@pytest.mark.parametrize("stream", [False, True])
def test_external_deployment_receives_placeholders_and_client_gets_originals(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
    stream: bool,
) -> None:
    gw = start_gateway(_doc(sim_a, sim_b, llama, restore=True))
    r = gw.post(
        CHAT,
        json={"model": "external", "stream": stream, "messages": [{"role": "user", "content": f"mail {EMAIL} now"}]},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "ext-cheap"
    received = json.dumps(sim_a.requests[-1].json)
    assert EMAIL not in received and "[EMAIL_1]" in received
    if stream:
        lines = [x[6:] for x in r.text.splitlines() if x.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, lines[:-1]) if c.get("choices")
        )
    else:
        text = r.json()["choices"][0]["message"]["content"]
    assert EMAIL in text and "[EMAIL_1]" not in text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["obligations"]["redact"] == {"ext-cheap": ["pii.email"]}
    assert rec["redacted"] == {"pii.email": 1} and rec["data_level"] == "confidential"
    assert EMAIL not in json.dumps(rec)
    assert sim_b.requests == []


def test_without_restore_the_client_sees_placeholders(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    gw = start_gateway(_doc(sim_a, sim_b, llama, restore=False))
    r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
    assert r.status_code == 200 and "[EMAIL_1]" in r.json()["choices"][0]["message"]["content"]
    # a local deployment gets no redaction obligation
    r = gw.post(
        CHAT,
        json={"model": "local-smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": f"mail {EMAIL}"}]},
    )
    rec = gw.record(r.headers["x-request-id"])
    assert r.status_code == 200 and "redact" not in rec["obligations"] and rec["redacted"] is None


def test_records_count_matches_per_label_without_values(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    gw = start_gateway(_doc(sim_a, sim_b, llama, restore=True))
    text = f"{EMAIL}, bob@example.com and {IBAN}"
    r = gw.post(CHAT, json={"model": "external", "messages": [{"role": "user", "content": text}]})
    rec = gw.record(r.headers["x-request-id"])
    assert rec["label_counts"] == {"pii.email": 2, "pii.iban": 1}
    assert EMAIL not in json.dumps(rec) and "bob@example.com" not in json.dumps(rec)


# --- every string the provider receives is redacted, keys and numbers included ---------------

REDACTED_LABELS = ["pii.email", "pii.iban", "pii.payment_card"]


@pytest.fixture(scope="module")
def redacting_gw(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> GatewayUnderTest:
    """Simulators only; confidential data may go to the EU external (ext-cheap, sim_a) with
    emails, IBANs and card numbers redacted."""
    doc = sim_config(local=sim_local, ext_eu=sim_a, ext_us=sim_b)
    tenant = doc["tenants"]["acme-eu"]
    tenant["allowed"]["confidential"] = {"jurisdictions": ["EU"]}
    tenant["redact_external"] = REDACTED_LABELS
    return start_gateway(doc)


def _ext(messages: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": "external",
        "max_tokens": 8,
        "messages": messages or [{"role": "user", "content": "Say hi"}],
        **extra,
    }


def _schema(key: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "string"}}}


def _deep(depth: int, leaf: Any) -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"n": value}
    return value  # type: ignore[no-any-return]


_TOOL_TURN = [
    {"role": "user", "content": "Pay."},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": IBAN_COMPACT, "type": "function", "function": {"name": "pay", "arguments": json.dumps({EMAIL: "a\nb"})}}
    ]},
    {"role": "tool", "tool_call_id": IBAN_COMPACT, "content": "done"},
]  # fmt: skip

REDACTED_EVERYWHERE = [
    pytest.param(_ext([{"role": "user", "name": EMAIL, "content": "Say hi"}]), ["pii.email"], id="message-name"),
    pytest.param(
        _ext(
            [
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": "", "refusal": EMAIL},
                {"role": "user", "content": "Again"},
            ]
        ),
        ["pii.email"],
        id="assistant-refusal",
    ),
    pytest.param(
        _ext([{"role": "user", "content": f"data: card {CARD}, mail {EMAIL}"}]),
        ["pii.email", "pii.payment_card"],
        id="data-prefixed-content",
    ),
    pytest.param(
        _ext(tools=[{"type": "function", "function": {"name": "pay", "parameters": _schema(EMAIL)}}]),
        ["pii.email"],
        id="tool-schema-key",
    ),
    pytest.param(_ext(metadata={EMAIL: "x"}), ["pii.email"], id="metadata-key"),
    pytest.param(_ext(logit_bias={CARD: 1}), ["pii.payment_card"], id="logit-bias-key"),
    pytest.param(_ext(_TOOL_TURN), ["pii.email", "pii.iban"], id="tool-call-id-and-escaped-arguments-key"),
    pytest.param(
        _ext(
            tools=[{"type": "function", "function": {"name": "pay", "parameters": _schema("a")}}],
            tool_choice={"type": "function", "function": {"name": IBAN_COMPACT}},
        ),
        ["pii.iban"],
        id="tool-choice-name",
    ),
    pytest.param(_ext(service_tier=EMAIL, seed=int(CARD)), ["pii.email", "pii.payment_card"], id="top-level-fields"),
    pytest.param(_ext(metadata=_deep(40, EMAIL)), ["pii.email"], id="deep-metadata"),
    pytest.param(_ext(metadata={"c": float(CARD)}), ["pii.payment_card"], id="float"),
]


@pytest.mark.parametrize(("body", "labels"), REDACTED_EVERYWHERE)
def test_every_string_the_provider_receives_is_redacted(
    redacting_gw: GatewayUnderTest,
    sim_local: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    body: dict[str, Any],
    labels: list[str],
) -> None:
    r = redacting_gw.post(CHAT, json=body)
    rec = redacting_gw.record(r.headers["x-request-id"])
    assert set(labels) <= set(rec["labels"]) and rec["data_level"] == "confidential", rec["labels"]
    assert r.headers.get("x-gateway-deployment") == "ext-cheap", r.text
    assert len(sim_a.requests) == 1 and sim_b.requests == [] and sim_local.requests == []
    assert leaked(sim_a, EMAIL, CARD, IBAN_COMPACT, IBAN) == [], "a redacted value reached the provider"
    assert set(labels) <= set(rec["redacted"] or {}), rec["redacted"]
    assert "[" in json.dumps(sim_a.requests[0].json)  # placeholders were sent instead
    assert r.status_code == 200, r.text


def test_a_redacted_schema_key_comes_back_restored_in_the_tool_call(
    redacting_gw: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    """The model sees ``[EMAIL_1]`` as the property name and answers with it; the client gets
    its own key back in the tool-call arguments."""
    sim_a.behave(
        body={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "cheap-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "notify", "arguments": '{"[EMAIL_1]": "yes"}'}}],
            }}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        },
        times=1,
    )  # fmt: skip
    body = _ext(tools=[{"type": "function", "function": {"name": "notify", "parameters": _schema(EMAIL)}}])
    r = redacting_gw.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    sent = sim_a.requests[-1].json
    assert list(sent["tools"][0]["function"]["parameters"]["properties"]) == ["[EMAIL_1]"]
    assert leaked(sim_a, EMAIL) == []
    call = r.json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {EMAIL: "yes"}


def test_redact_body_reaches_keys_ids_numbers_and_decoded_arguments() -> None:
    image = "data:image/png;name=" + EMAIL + ";base64," + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB" * 4
    body: dict[str, Any] = {
        "messages": [
            {"role": "user", "name": EMAIL, "content": [{"type": "image_url", "image_url": {"url": image}}]},
            {"role": "assistant", "refusal": EMAIL, "content": "", "tool_calls": [
                {"id": IBAN_COMPACT, "type": "function",
                 "function": {"name": "pay", "arguments": json.dumps({EMAIL: "a\nb", "n": int(CARD)})}}
            ]},
            {"role": "tool", "tool_call_id": IBAN_COMPACT, "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "pay", "parameters": _schema(EMAIL)}}],
        "metadata": {"f": float(CARD), "deep": _deep(500, EMAIL)},
        "seed": int(CARD),
    }  # fmt: skip
    sent, redaction = redact_body(body, BuiltinDetector(), REDACTED_LABELS)
    text = json.dumps(sent)
    assert EMAIL not in text and CARD not in text and IBAN_COMPACT not in text
    user, assistant, tool = sent["messages"]
    assert user["name"] == "[EMAIL_1]" and assistant["refusal"] == "[EMAIL_1]"
    assert user["content"][0]["image_url"]["url"] == image.replace(EMAIL, "[EMAIL_1]"), "payload untouched"
    call = assistant["tool_calls"][0]
    assert call["id"] == tool["tool_call_id"] == "[IBAN_1]", "an id and its reference get the same placeholder"
    assert json.loads(call["function"]["arguments"]) == {"[EMAIL_1]": "a\nb", "n": "[CARD_1]"}
    assert list(sent["tools"][0]["function"]["parameters"]["properties"]) == ["[EMAIL_1]"]
    assert sent["metadata"]["f"] == "[CARD_1].0" and sent["seed"] == "[CARD_1]"
    assert redaction.mapping == {"[EMAIL_1]": EMAIL, "[IBAN_1]": IBAN_COMPACT, "[CARD_1]": CARD}
    assert body["messages"][0]["name"] == EMAIL and body["seed"] == int(CARD), "the client's body is not modified"
    restored = Restorer(redaction.mapping).text(call["function"]["arguments"])
    assert json.loads(restored) == {EMAIL: "a\nb", "n": CARD}


def test_redact_body_refuses_a_key_that_would_merge_with_another() -> None:
    body = {"metadata": {EMAIL: "1", "[EMAIL_1]": "2"}}
    with pytest.raises(ValueError, match="collides"):
        redact_body(body, BuiltinDetector(), ["pii.email"])


def test_redact_body_keeps_binary_payloads_and_token_ids() -> None:
    audio = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=" * 2
    body = {"prompt": [1, 2, 3], "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}]}  # fmt: skip
    sent, redaction = redact_body(body, BuiltinDetector(), REDACTED_LABELS)
    assert sent == body and not redaction.mapping


PEM_LIKE = '-----BEGIN KEY-----\nab"c\\d\n-----END KEY-----'


def test_restored_tool_call_arguments_stay_valid_json() -> None:
    """A restored value is JSON-escaped inside tool-call arguments (a PEM key's newlines, a
    quote, a backslash), non-stream and streamed with the placeholder split across deltas."""
    from gateway.classify.redact import Restorer
    from gateway.service import _restore_response, _restored_chunks

    mapping = {"[SECRET_1]": PEM_LIKE, "[EMAIL_1]": EMAIL}
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"k": "[SECRET_1]", "[EMAIL_1]": 1}'}},
    ]}}]}  # fmt: skip
    _restore_response(response, Restorer(mapping))
    args = response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"k": PEM_LIKE, EMAIL: 1}

    restorer = Restorer(mapping)
    fragments = ['{"k": "[SEC', 'RET_1]", "[EM', 'AIL_1]": 1}']
    chunks = [
        {
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                        ]
                    },
                }
            ],
        }
    ]
    chunks += [
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": f}}]}}],
        }
        for f in fragments
    ]
    chunks.append({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})  # noqa: E501  # fmt: skip
    relayed = [out for c in chunks for out in _restored_chunks(c, restorer)]
    text = "".join(
        call["function"].get("arguments", "")
        for c in relayed
        for ch in c["choices"]
        for call in ch.get("delta", {}).get("tool_calls") or []
    )
    assert json.loads(text) == {"k": PEM_LIKE, EMAIL: 1}
    assert relayed[-1]["choices"][0]["finish_reason"] == "tool_calls"
