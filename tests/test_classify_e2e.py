"""Classification drives the route, end to end through the real HTTP API: the built-in detector
finds regulated data in any part of a request (here a tool-call argument), the level it implies
keeps the request on the local model (real SmolLM2 via llama.cpp), the external simulators
receive nothing, and the audit record names the labels — never the values."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from gateway.classify import Classifier
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

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
