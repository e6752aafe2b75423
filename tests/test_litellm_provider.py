"""Providers with their own wire format go through litellm: Anthropic Messages, spoken by the
provider simulator on loopback. Importing litellm makes no network call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def anthropic_sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(name="anthropic") as sim:
        yield sim


@pytest.fixture(scope="module")
def gw(
    start_gateway: Callable[..., GatewayUnderTest],
    anthropic_sim: ProviderSimulator,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
) -> Iterator[GatewayUnderTest]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test-123")
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    doc["deployments"].append(
        {
            "id": "claude-eu",
            "adapter": "litellm",
            "model": "anthropic/claude-3-5-haiku-latest",
            "api_base": anthropic_sim.url,
            "api_key_env": "TEST_ANTHROPIC_KEY",
            "locality": "external",
            "jurisdiction": "EU",
            "region": "eu-west",
            "capabilities": ["stream"],
            "context_window": 200000,
            "price": {"input_per_mtok": 0.8, "output_per_mtok": 4.0},
            "timeout_s": 5,
        }
    )
    doc["aliases"]["claude"] = {"strategy": "ordered", "deployments": ["claude-eu", "ext-cheap"]}
    yield start_gateway(doc)
    mp.undo()


def test_anthropic_deployment_answers_in_openai_format(gw: GatewayUnderTest, anthropic_sim: ProviderSimulator) -> None:
    anthropic_sim.reset()
    r = gw.post(CHAT, json={"model": "claude", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "claude-eu"
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "simulated reply from anthropic: hello there"
    received = anthropic_sim.requests[-1]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == "sk-ant-test-123"
    assert received.json["model"] == "claude-3-5-haiku-latest"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["prompt_tokens"] == 2 and rec["completion_tokens"] == 6 and not rec["tokens_estimated"]


def test_anthropic_stream_is_relayed_as_openai_sse(gw: GatewayUnderTest, anthropic_sim: ProviderSimulator) -> None:
    r = gw.post(
        CHAT,
        json={"model": "claude", "stream": True, "messages": [{"role": "user", "content": "stream me please"}]},
    )
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, events[:-1]) if c.get("choices")
    )
    assert text == "simulated reply from anthropic: stream me please"
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "ok" and rec["completion_tokens"] == 7


def test_anthropic_overload_falls_over_to_next_eligible(
    gw: GatewayUnderTest, anthropic_sim: ProviderSimulator, sim_a: ProviderSimulator
) -> None:
    anthropic_sim.behave(status=529, times=1)
    r = gw.post(CHAT, json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    rec = gw.record(r.headers["x-request-id"])
    assert [a["deployment"] for a in rec["attempts"]] == ["claude-eu", "ext-cheap"]


def test_anthropic_bad_request_is_returned_with_its_reason(
    gw: GatewayUnderTest, anthropic_sim: ProviderSimulator, sim_a: ProviderSimulator
) -> None:
    anthropic_sim.behave(
        status=400, body={"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}
    )
    r = gw.post(CHAT, json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "prompt is too long" in r.json()["error"]["message"]
    assert sim_a.requests == []
    anthropic_sim.reset()


def test_importing_litellm_makes_no_network_call() -> None:
    probe = textwrap.dedent(
        """
        import sys
        calls = []
        def hook(event, args):
            if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
                calls.append((event, str(args)[:120]))
        sys.addaudithook(hook)
        from adapters.litellm import import_litellm
        import_litellm()
        import gateway.main
        print(len(calls), calls[:3])
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("0 "), f"network calls during import: {out.stdout}"


def test_messages_and_completions_endpoints_reach_an_anthropic_provider_through_litellm(
    gw: GatewayUnderTest, anthropic_sim: ProviderSimulator
) -> None:
    """Anthropic wire format in (/v1/messages) → chat → litellm → Anthropic wire format out;
    a legacy completion too (litellm turns it into a Messages call)."""
    anthropic_sim.reset()
    body = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hello claude"}]}
    r = gw.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "simulated reply from anthropic: hello claude"}]
    assert r.json()["usage"] == {"input_tokens": 2, "output_tokens": 6}
    assert anthropic_sim.requests[-1].path == "/v1/messages"
    assert anthropic_sim.requests[-1].json["max_tokens"] == 20
    r = gw.post("/v1/messages", json={**body, "stream": True})
    assert r.status_code == 200 and "event: message_stop" in r.text
    assert "simulated" in r.text
    r = gw.post("/v1/completions", json={"model": "claude", "prompt": "hello text", "max_tokens": 20})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "simulated reply from anthropic: hello text"
    assert gw.record(r.headers["x-request-id"])["endpoint"] == "completions"
