"""Circuit breaker per deployment: consecutive failures take a deployment out of the eligible
set (as not healthy in the policy input) until a cooldown passes."""

from __future__ import annotations

from collections.abc import Callable

from gateway.breaker import CircuitBreaker
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"
REQ = {"model": "external", "messages": [{"role": "user", "content": "hi"}]}


def test_breaker_opens_at_the_threshold_and_half_opens_after_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure("a")
    assert breaker.healthy("a") and breaker.state("a") == "closed"
    breaker.failure("a")
    assert not breaker.healthy("a") and breaker.state("a") == "open"
    now[0] = 10.5
    assert breaker.healthy("a") and breaker.state("a") == "half-open"
    breaker.failure("a")  # the probe failed: open again at once
    assert not breaker.healthy("a")
    now[0] = 21.0
    breaker.success("a")
    assert breaker.healthy("a") and breaker.state("a") == "closed"
    assert breaker.healthy("never-seen")


def test_open_breaker_excludes_the_deployment_without_calling_it(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    doc["server"] |= {"breaker": {"failures": 2, "cooldown_s": 60}}  # replaces the suite default
    gw = start_gateway(doc)
    sim_a.behave(status=503)
    for _ in range(2):  # ext-cheap fails twice, ext-pricey serves
        assert gw.post(CHAT, json=REQ).headers["x-gateway-deployment"] == "ext-pricey"
    assert len(sim_a.requests) == 2
    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    assert len(sim_a.requests) == 2, "an open breaker sends nothing to the deployment"
    rec = gw.record(r.headers["x-request-id"])
    assert "ext-cheap" in rec["excluded"] and any("unhealthy" in x for x in rec["excluded"]["ext-cheap"])
    assert [a["deployment"] for a in rec["attempts"]] == ["ext-pricey"]

    # Only ext-cheap may take EU-only (internal) data: its open breaker is an outage, not a
    # policy refusal — 503 with Retry-After, recorded as a deny naming the unhealthy deployment.
    internal = {**REQ, "messages": [{"role": "user", "content": "internal note"}]}
    r = gw.post(CHAT, json=internal, headers={"x-data-classification": "internal"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_deployment", r.text
    assert int(r.headers["retry-after"]) > 0 and any("unhealthy" in x for x in r.json()["error"]["reasons"])
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "denied" and rec["excluded_rules"]["ext-cheap"] == ["unhealthy"]
    assert len(sim_a.requests) == 2


def test_a_request_the_upstream_refuses_as_invalid_with_a_500_does_not_count_against_it(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    """llama-cpp-python's server answers a request its schema refuses with 500 and pydantic's
    "N validation errors:" text. That is the request's fault: the client gets it as a 422 with
    the upstream's reason, no other deployment is tried, and the breaker stays closed — five
    such requests must not take the deployment out for everyone."""
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    doc["server"] |= {"breaker": {"failures": 2, "cooldown_s": 60}}
    gw = start_gateway(doc)
    refusal = {"error": {"message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'x')}\n\n"
                                    '  File "/srv/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", '
                                    "line 376, in create_chat_completion\n    POST /v1/chat/completions",
                         "type": "internal_server_error", "param": None, "code": None}}  # fmt: skip
    sim_a.behave(status=500, body=refusal, times=3)
    for _ in range(3):
        r = gw.post(CHAT, json=REQ)
        assert r.status_code == 422 and "validation error" in r.json()["error"]["message"], r.text
        assert "app.py" not in r.text  # the report without the server's trace
        rec = gw.record(r.headers["x-request-id"])
        assert [(a["deployment"], a["status"]) for a in rec["attempts"]] == [("ext-cheap", 422)]
    assert sim_b.requests == []
    r = gw.post(CHAT, json=REQ)  # still closed: the next request goes to ext-cheap and succeeds
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    sim_a.behave(status=500, body={"error": {"message": "CUDA error", "type": "internal_server_error"}})
    for _ in range(2):  # a plain 500 is the deployment's fault: retried elsewhere, counted
        assert gw.post(CHAT, json=REQ).headers["x-gateway-deployment"] == "ext-pricey"
    requests = len(sim_a.requests)
    assert gw.post(CHAT, json=REQ).headers["x-gateway-deployment"] == "ext-pricey"
    assert len(sim_a.requests) == requests, "two plain 500s opened the breaker"


def test_retries_stay_on_the_deployment_with_backoff_and_the_deadline_ends_the_request(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> None:
    import time

    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    doc["server"] |= {"breaker": {"failures": 1000}, "deadline_s": 1.5}
    for dep in doc["deployments"]:
        if dep["id"] == "ext-cheap":
            dep["retries"] = 2
    gw = start_gateway(doc)

    sim_a.behave(status=503, times=2)  # fails twice, then answers: the third try on ext-cheap
    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap"
    rec = gw.record(r.headers["x-request-id"])
    assert [(a["deployment"], a["status"]) for a in rec["attempts"]] == [
        ("ext-cheap", 503),
        ("ext-cheap", 503),
        ("ext-cheap", 200),
    ]
    assert sim_b.requests == []

    sim_a.reset()
    sim_a.behave(delay_s=5)  # slower than the whole request's deadline
    started = time.monotonic()
    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 4
    rec = gw.record(r.headers["x-request-id"])
    assert rec["attempts"][0]["error"].startswith("timeout") and rec["status"] == "upstream_error"
