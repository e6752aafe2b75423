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
