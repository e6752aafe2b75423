"""Encrypted prompt capture as a policy obligation: tenants that opt in get their prompts
sealed to the auditors' X25519 key in the record (the gateway cannot read them back); a policy
that demands capture without a configured key fails closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.capture import open_capture
from tests.conftest import OTHER_TENANT_KEY, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "capture me: order 42"}]


def _doc(sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str) -> dict[str, object]:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    doc["tenants"]["acme-eu"]["capture_prompts"] = True  # type: ignore[index]
    return doc


def test_opted_in_tenant_prompts_are_sealed_to_the_auditor_key(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
    tmp_path: Path,
) -> None:
    auditor = X25519PrivateKey.generate()
    pub = tmp_path / "capture-public.pem"
    pub.write_bytes(auditor.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    doc = _doc(sim_a, sim_b, llama)
    doc["audit"] = {"capture_public_key_file": str(pub)}
    gw = start_gateway(doc)

    r = gw.post(CHAT, json={"model": "external", "messages": MESSAGES})
    assert r.status_code == 200, r.text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["obligations"] == {"capture_prompt": True}
    sealed = rec["prompt_capture"]
    assert "order 42" not in json.dumps(rec)
    assert json.loads(open_capture(auditor, sealed)) == MESSAGES
    with pytest.raises(Exception):  # noqa: B017 - any failure: wrong key cannot open it
        open_capture(X25519PrivateKey.generate(), sealed)

    other = gw.post(CHAT, key=OTHER_TENANT_KEY, json={"model": "external", "messages": MESSAGES})
    rec = gw.record(other.headers["x-request-id"])
    assert rec["obligations"] == {} and rec["prompt_capture"] is None


def test_capture_obligation_without_a_key_fails_closed(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    gw = start_gateway(_doc(sim_a, sim_b, llama))
    r = gw.post(CHAT, json={"model": "external", "messages": MESSAGES})
    assert r.status_code == 503 and "capture" in r.json()["error"]["message"]
    assert sim_a.requests == [] and sim_b.requests == []
    assert gw.record(r.headers["x-request-id"])["status"] == "denied"
