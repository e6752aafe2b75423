"""Fail closed through the real HTTP API: an audit store that cannot commit, a policy that
times out, and a policy whose decision is undefined all mean no egress — and, except when the
store itself is down, a record of the refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"
REQ = {"model": "external", "messages": [{"role": "user", "content": "hello"}]}


def _config(sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str, **policy: Any) -> dict[str, Any]:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    doc["policy"].update(policy)
    return doc


def test_audit_store_unavailable_is_503_and_nothing_leaves(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
    tmp_path: Path,
) -> None:
    # The database exists but its table was never migrated: every write fails.
    gw = start_gateway(
        _config(sim_a, sim_b, llama),
        audit_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
        migrate=False,
        check_invariant=False,
    )
    for stream in (False, True):
        r = gw.post(CHAT, json={**REQ, "stream": stream})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "audit_unavailable"
    assert sim_a.requests == [] and sim_b.requests == []
    health = gw.client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "degraded"


def test_policy_timeout_is_503_denied_and_recorded(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, llama, timeout_ms=0.001))
    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 503 and r.json()["error"]["code"] == "policy_unavailable"
    assert "exceeded" in r.json()["error"]["message"]
    assert sim_a.requests == [] and sim_b.requests == []
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "denied" and rec["http_status"] == 503 and rec["chosen_deployment"] is None


def test_undefined_decision_is_403_with_the_cause_and_recorded(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
    tmp_path: Path,
) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    # A policy whose decision is a bare boolean rule that is false: regopy answers undefined.
    (policy_dir / "routing.rego").write_text("package gateway.routing\n\ndecision := false\n")
    gw = start_gateway(_config(sim_a, sim_b, llama, path=str(policy_dir)))
    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 403, r.text
    reasons = r.json()["error"]["reasons"]
    assert any("treated as deny" in x for x in reasons)
    assert sim_a.requests == [] and sim_b.requests == []
    rec = gw.record(r.headers["x-request-id"])
    assert rec["decision"] == "deny" and rec["status"] == "denied"
    assert any("treated as deny" in x for x in rec["reasons"])


def test_a_bug_inside_the_model_endpoint_hot_path_is_an_openai_shaped_500(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
    monkeypatch: Any,
) -> None:
    """The model endpoints are served by the ModelRoutes middleware ahead of FastAPI's routing:
    an unexpected exception in the pipeline is answered in the OpenAI error shape (no stack
    trace, the connection kept) and recorded like any failure — one record each — and nothing
    is sent upstream. Other methods on those paths still go to FastAPI (405)."""
    gw = start_gateway(_config(sim_a, sim_b, llama))
    gateway = gw.server.app.state.gateway
    sim_a.reset()

    async def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internals /srv/app.py line 12")

    monkeypatch.setattr(gateway, "handle", boom)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"):
        r = gw.post(path, json=REQ)
        assert r.status_code == 500, (path, r.text)
        if path == "/v1/messages":  # the Anthropic error shape on the Anthropic endpoint
            assert r.json() == {"type": "error", "error": {"type": "api_error", "message": "internal error"}}
        else:
            assert r.json() == {
                "error": {"message": "internal error", "type": "api_error", "param": None, "code": "internal_error"}
            }
        assert "secret" not in r.text and "Traceback" not in r.text
        record = gw.record(r.headers["x-request-id"])
        assert (record["status"], record["http_status"], record["error"]) == ("error", 500, "internal error")
    assert sim_a.requests == []
    r = gw.client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
