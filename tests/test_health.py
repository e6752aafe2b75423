"""Background health checks: a deployment whose health probe fails is reported to the policy as
not healthy and excluded with a reason — found by the probes alone, no request traffic needed —
and comes back when its probe succeeds again. Probes go through the real adapters to the
provider simulator (``fail_health`` makes its ``GET /v1/models`` answer 503)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from adapters.litellm import LiteLLMAdapter
from adapters.openai_compat import OpenAICompatAdapter
from gateway.config import parse_config
from gateway.health import HealthMonitor
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"
REQ = {"model": "external", "messages": [{"role": "user", "content": "hi"}]}
NO_LLAMA = "http://127.0.0.1:9/v1"  # these tests use the "external" alias only: no local model needed


def _deployments(sim_a: ProviderSimulator, sim_b: ProviderSimulator) -> list:  # type: ignore[type-arg]
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=NO_LLAMA)
    return [d for d in parse_config(doc).deployments if d.id in ("ext-cheap", "ext-pricey")]


def _wait_for_probes(sim: ProviderSimulator, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sim.health_probes < count:
        assert time.monotonic() < deadline, f"only {sim.health_probes} health probes reached {sim.name}"
        time.sleep(0.02)


async def test_failed_probes_make_a_deployment_unhealthy_and_one_success_brings_it_back(
    sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    adapter = OpenAICompatAdapter()
    monitor = HealthMonitor(_deployments(sim_a, sim_b), {"openai_compat": adapter}, timeout_s=1, failures=2)
    try:
        sim_a.fail_health(503)
        await monitor.probe_all()
        assert monitor.healthy("ext-cheap"), "one failed probe is below the threshold"
        await monitor.probe_all()
        assert not monitor.healthy("ext-cheap") and monitor.healthy("ext-pricey")
        state = monitor.state("ext-cheap")
        assert state["consecutive_failures"] == 2 and "503" in state["last_error"]
        sim_a.heal()
        await monitor.probe_all()
        assert monitor.healthy("ext-cheap") and monitor.state("ext-cheap")["last_error"] is None
        assert sim_a.requests and all(r.method == "GET" and r.path == "/v1/models" for r in sim_a.requests)
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("fault", ["timeout", "connection_closed", "key_refused"])
async def test_slow_dropped_or_refused_probes_fail(
    sim_a: ProviderSimulator, sim_b: ProviderSimulator, fault: str
) -> None:
    adapter = OpenAICompatAdapter()
    monitor = HealthMonitor(_deployments(sim_a, sim_b), {"openai_compat": adapter}, timeout_s=0.3, failures=1)
    try:
        if fault == "timeout":
            sim_a.fail_health(None, delay_s=2)
        elif fault == "connection_closed":
            sim_a.fail_health(None, close_connection=True)
        else:
            sim_a.fail_health(401)
        started = time.monotonic()
        await monitor.probe_all()
        assert time.monotonic() - started < 1.5
        assert not monitor.healthy("ext-cheap") and monitor.healthy("ext-pricey")
    finally:
        await adapter.aclose()


async def test_a_404_model_list_still_means_the_server_is_up(
    sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    adapter = OpenAICompatAdapter()
    monitor = HealthMonitor(_deployments(sim_a, sim_b), {"openai_compat": adapter}, timeout_s=1, failures=1)
    try:
        sim_a.fail_health(404)
        await monitor.probe_all()
        assert monitor.healthy("ext-cheap")
    finally:
        await adapter.aclose()


async def test_litellm_adapter_probes_the_anthropic_model_list(sim_a: ProviderSimulator) -> None:
    from adapters import Target

    adapter = LiteLLMAdapter()
    target = Target("claude", "anthropic/claude-3-5-haiku-latest", sim_a.url, "sk-ant-test", 1.0)
    try:
        await adapter.health(target)
        probe = sim_a.last_request
        assert probe is not None and probe.path == "/v1/models"
        assert probe.headers["x-api-key"] == "sk-ant-test" and probe.headers["anthropic-version"]
        sim_a.fail_health(503)
        with pytest.raises(Exception, match="503"):
            await adapter.health(target)
    finally:
        await adapter.aclose()


def test_unhealthy_deployment_is_excluded_with_a_reason_and_comes_back(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=NO_LLAMA)
    doc["server"]["health"] = {"enabled": True, "interval_s": 0.1, "timeout_s": 1, "failures": 2}
    sim_a.fail_health(503)
    gw = start_gateway(doc)
    _wait_for_probes(sim_a, 3)  # two failures make it unhealthy; the third confirms the state held
    assert not [r for r in sim_a.requests if r.method == "POST"], "no request traffic was needed"

    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    assert not [x for x in sim_a.requests if x.method == "POST"], "an unhealthy deployment got a request"
    rec = gw.record(r.headers["x-request-id"])
    assert "ext-cheap" in rec["excluded"] and "unhealthy" in str(rec["excluded"]["ext-cheap"])
    assert [a["deployment"] for a in rec["attempts"]] == ["ext-pricey"]

    sim_a.heal()
    seen = sim_a.health_probes
    _wait_for_probes(sim_a, seen + 2)  # a successful probe has completed
    r = gw.post(CHAT, json=REQ)
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-cheap", "cheapest is back"
    rec = gw.record(r.headers["x-request-id"])
    assert "ext-cheap" not in rec["excluded"]


def test_health_checks_can_be_turned_off(start_gateway: Callable[..., GatewayUnderTest]) -> None:
    # own simulators: the gateway of the test above keeps probing the shared ones
    with ProviderSimulator(name="off-a") as sim_a, ProviderSimulator(name="off-b") as sim_b:
        doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=NO_LLAMA)
        doc["server"]["health"] = {"enabled": False, "interval_s": 0.05}
        sim_a.fail_health(503)
        gw = start_gateway(doc)
        time.sleep(0.3)
        assert sim_a.health_probes == 0
        r = gw.post(CHAT, json=REQ)
        assert r.headers["x-gateway-deployment"] == "ext-cheap"
