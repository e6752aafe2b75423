"""Circuit breaker state shared in Redis (the ``limits_store`` Redis): a breaker opened by one
gateway is open in another; with Redis down each gateway keeps its own breaker (never
weaker). Real Redis on 127.0.0.1:6379, keys under a prefix unique to this run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.breaker import SharedCircuitBreaker
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.redis_keys import REDIS_URL, drop_keys, run_prefix
from tests.support.servers import free_port

CHAT = "/v1/chat/completions"
REQ = {"model": "external", "messages": [{"role": "user", "content": "hi"}]}
RUN = run_prefix("breaker")
NO_LLAMA = "http://127.0.0.1:9/v1"  # the "external" alias only: no local model needed


def _prefix() -> str:
    return f"{RUN}{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="module", autouse=True)
def _cleanup_redis() -> Iterator[None]:
    yield
    drop_keys(RUN)


def _pair(prefix: str, **kw: Any) -> tuple[SharedCircuitBreaker, SharedCircuitBreaker]:
    opts: dict[str, Any] = {"deployments": ["a", "b"], "prefix": prefix, "failures": 2, "cooldown_s": 30, **kw}
    return SharedCircuitBreaker(REDIS_URL, **opts), SharedCircuitBreaker(REDIS_URL, **opts)


async def test_a_breaker_opened_in_one_replica_is_open_in_the_other() -> None:
    one, two = _pair(_prefix())
    try:
        one.failure("a")
        await one.sync()
        await two.sync()
        assert two.healthy("a"), "one failure is below the threshold"
        two.failure("a")  # the second consecutive failure, seen by the other replica
        await two.sync()
        await one.sync()
        assert not one.healthy("a") and one.state("a") == "open"
        assert not two.healthy("a") and one.healthy("b") and two.healthy("b")
        assert one.available and two.available
    finally:
        await one.aclose()
        await two.aclose()


async def test_the_shared_open_state_expires_with_the_cooldown_and_a_success_resets_the_count() -> None:
    one, two = _pair(_prefix(), cooldown_s=0.3)
    try:
        for _ in range(2):
            one.failure("a")
        await one.sync()
        await two.sync()
        assert not two.healthy("a")
        await asyncio.sleep(0.4)
        await two.sync()
        assert two.healthy("a"), "half-open after the cooldown"
        two.success("a")
        await two.sync()
        await one.sync()
        one.failure("a")  # a success anywhere reset the shared count: one failure is not enough
        await one.sync()
        await two.sync()
        assert two.healthy("a")
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_down_falls_back_to_the_local_breaker() -> None:
    dead = SharedCircuitBreaker(
        f"redis://127.0.0.1:{free_port()}/0", deployments=["a"], failures=2, cooldown_s=30, timeout_s=0.2
    )
    try:
        dead.failure("a")
        dead.failure("a")
        started = time.monotonic()
        await dead.sync()  # never raises
        assert time.monotonic() - started < 2
        assert not dead.available
        assert not dead.healthy("a"), "the local breaker still opens: a Redis outage never weakens it"
        dead.success("a")
        assert dead.healthy("a")
    finally:
        await dead.aclose()


async def test_background_task_shares_a_failure_without_an_explicit_sync() -> None:
    one, two = _pair(_prefix(), sync_interval_s=0.05)
    one.start()
    two.start()
    try:
        one.failure("b")
        one.failure("b")
        deadline = time.monotonic() + 3
        while two.healthy("b"):
            assert time.monotonic() < deadline, "the other replica never saw the open breaker"
            await asyncio.sleep(0.02)
    finally:
        await one.aclose()
        await two.aclose()


def test_two_gateways_sharing_redis_share_the_open_breaker(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=NO_LLAMA)
    doc["server"]["breaker"] = {"failures": 2, "cooldown_s": 60, "sync_interval_s": 0.1}
    doc["limits_store"] = {"kind": "redis", "url": REDIS_URL, "key_prefix": _prefix()}
    first, second = start_gateway(doc), start_gateway(doc)
    sim_a.behave(status=503)
    for _ in range(2):  # ext-cheap (cheapest) fails twice on the first gateway; ext-pricey serves
        assert first.post(CHAT, json=REQ).headers["x-gateway-deployment"] == "ext-pricey"
    assert len(sim_a.requests) == 2
    time.sleep(0.6)  # a few sync intervals
    r = second.post(CHAT, json=REQ)
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "ext-pricey"
    assert len(sim_a.requests) == 2, "the second gateway sent a request to a deployment whose breaker is open"
    rec = second.record(r.headers["x-request-id"])
    assert "ext-cheap" in rec["excluded"] and "unhealthy" in str(rec["excluded"]["ext-cheap"])
    assert [a["deployment"] for a in rec["attempts"]] == ["ext-pricey"]
