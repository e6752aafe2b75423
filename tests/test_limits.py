"""Rate limits and budgets (issue 6, ../shared/cases/admission.yaml): the admit stage reserves
the worst case atomically before any byte leaves, settles the actual use, releases failures —
on the in-process store and on a real Redis (127.0.0.1:6379), with the same tests.

Through the real HTTP API with provider simulators; "never reached the provider" is asserted
on what the simulator received. Redis keys live under a prefix unique to this run and are
deleted at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.limits import Hold, MemoryStore, RedisStore, StoreUnavailable
from gateway.limits.rules import Rule, window
from gateway.limits.stores import LimitStore
from tests.conftest import APP_KEY, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.redis_keys import REDIS_URL, drop_keys, run_prefix
from tests.support.servers import free_port

CHAT = "/v1/chat/completions"
RUN = run_prefix("limits")
_seq = itertools.count()


def _prefix() -> str:
    return f"{RUN}{next(_seq)}:"


@pytest.fixture(scope="module", autouse=True)
def _cleanup_redis() -> Iterator[None]:
    yield
    drop_keys(RUN)


def _store_config(kind: str, **extra: Any) -> dict[str, Any]:
    if kind == "memory":
        return {"kind": "memory", **extra}
    return {"kind": "redis", "url": REDIS_URL, "key_prefix": _prefix(), **extra}


def _fresh_minute(margin_s: float = 6.0) -> None:
    """Minute windows are fixed: start a per-minute test well inside one minute."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)


def _config(
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    store: dict[str, Any],
    *,
    key_limits: dict[str, Any] | None = None,
    tenant_limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The test config with ext-cheap priced at 10 USD per million output tokens (input free)."""
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    doc["limits_store"] = store
    for dep in doc["deployments"]:
        if dep["id"] == "ext-cheap":
            dep["price"] = {"input_per_mtok": 0.0, "output_per_mtok": 10.0}
    if key_limits is not None:
        doc["keys"][0]["limits"] = key_limits
    if tenant_limits is not None:
        doc["tenants"]["acme-eu"]["limits"] = tenant_limits
    return doc


def _body(content: str = "hello there", model: str = "ext-cheap", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def _burst_async(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {APP_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post(CHAT, json=b, headers=headers) for b in bodies))


def burst(gws: list[GatewayUnderTest], bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send ``bodies`` at the same instant, spread round-robin over ``gws``; counts them as sent."""

    async def run() -> list[httpx.Response]:
        groups: list[list[dict[str, Any]]] = [bodies[i :: len(gws)] for i in range(len(gws))]
        results = await asyncio.gather(*(_burst_async(g.url, grp) for g, grp in zip(gws, groups, strict=True)))
        return [r for group in results for r in group]

    for i, gw in enumerate(gws):
        gw.sent += len(bodies[i :: len(gws)])
    return asyncio.run(run())


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- admission.yaml: concurrent-first-requests-budget ---------------------------------------


def test_concurrent_first_requests_against_a_tiny_budget_never_reach_the_provider(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), tenant_limits={"usd_per_day": 0.000001}))
    responses = burst([gw], [_body(max_tokens=64) for _ in range(8)])
    assert [r.status_code for r in responses] == [429] * 8
    assert sim_a.requests == [] and sim_b.requests == []
    for r in responses:
        err = r.json()["error"]
        assert err["code"] == "budget_exceeded" and err["type"] == "rate_limit_error"
        assert "tenant acme-eu: 0.000001 USD per day" in err["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 86_400
        rec = gw.record(r.headers["x-request-id"])
        assert rec["status"] == "rate_limited" and rec["http_status"] == 429
        assert rec["limits"]["refused"] == "tenant acme-eu: 0.000001 USD per day"
        assert rec["limits"]["reserved"] is None and rec["attempts"] == []


def test_budget_of_two_worst_cases_admits_at_most_two_of_eight_concurrent(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    # worst case per request: 64 output tokens x 10 USD/Mtok = 0.00064 USD; 3 x 0.00064 > 0.0015
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), tenant_limits={"usd_per_day": 0.0015}))
    sim_a.behave(delay_s=1.0)  # all 8 are in flight together; no settlement frees room early
    responses = burst([gw], [_body(max_tokens=64) for _ in range(8)])
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 2 + [429] * 6
    assert len(sim_a.requests) == 2 and sim_b.requests == []
    ok = [gw.record(r.headers["x-request-id"]) for r in responses if r.status_code == 200]
    for rec in ok:
        reserved = rec["limits"]["reserved"]
        assert reserved["requests"] == 1 and reserved["usd"] == pytest.approx(0.00064)
        assert rec["limits"]["settled"]["usd"] == pytest.approx(rec["cost_usd"])
    assert sum(rec["cost_usd"] for rec in ok) <= 0.0015


# --- admission.yaml: token-limit-overshoot ---------------------------------------------------


def test_parallel_500_token_requests_against_1000_tokens_per_minute_admit_at_most_two(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), key_limits={"tpm": 1000}))
    content = "word " * 320  # 1600 chars: estimate 400 + 4 prompt tokens; + 96 max_tokens = 500
    sim_a.behave(delay_s=1.0)
    _fresh_minute()
    responses = burst([gw], [_body(content, max_tokens=96) for _ in range(10)])
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) == 2 and len(refused) == 8 and len(sim_a.requests) == 2
    for r in refused:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert "key k_app: 1000 tokens per minute" in r.json()["error"]["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
    rec = gw.record(admitted[0].headers["x-request-id"])
    assert rec["limits"]["reserved"]["tokens"] == 500
    assert rec["limits"]["rules"] == ["key k_app: 1000 tokens per minute"]


# --- admission.yaml: limit-rule-needs-only-its-inputs ----------------------------------------


def test_rpm_only_rule_serves_a_request_without_max_tokens(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), key_limits={"rpm": 100}))
    r = gw.post(CHAT, json=_body())
    assert r.status_code == 200, r.text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["limits"]["rules"] == ["key k_app: 100 requests per minute"]
    assert rec["limits"]["reserved"]["requests"] == 1


def test_a_request_that_alone_exceeds_a_token_limit_is_400_not_a_429_to_retry(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), key_limits={"tpm": 2000}))
    r = gw.post(CHAT, json=_body(max_tokens=2000))
    assert r.status_code == 400 and "retry-after" not in r.headers
    err = r.json()["error"]
    assert err["code"] == "exceeds_limit" and err["param"] == "max_tokens"
    assert "key k_app: 2000 tokens per minute" in err["message"]
    assert sim_a.requests == []


def test_token_rule_without_max_tokens_is_400_naming_the_rule_and_sends_nothing(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(
        _config(sim_a, sim_b, _store_config(store_kind), key_limits={"tpm": 10_000}, tenant_limits={"usd_per_month": 5})
    )
    r = gw.post(CHAT, json=_body())
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "max_tokens_required" and err["param"] == "max_tokens"
    assert "key k_app: 10000 tokens per minute" in err["message"]
    assert sim_a.requests == []
    assert gw.record(r.headers["x-request-id"])["status"] == "invalid"
    # max_completion_tokens counts as a cap too
    r = gw.post(CHAT, json=_body(max_completion_tokens=16))
    assert r.status_code == 200, r.text


def test_usd_budget_needs_no_max_tokens_when_every_planned_output_is_free(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    doc = _config(sim_a, sim_b, _store_config(store_kind), key_limits={"usd_per_day": 1})
    for dep in doc["deployments"]:
        dep["price"] = {"input_per_mtok": 1.0, "output_per_mtok": 0.0}
    gw = start_gateway(doc)
    r = gw.post(CHAT, json=_body())
    assert r.status_code == 200, r.text


# --- settle and release ----------------------------------------------------------------------


def test_settlement_gives_back_the_unused_reservation(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), key_limits={"tpm": 1000}))
    _fresh_minute()
    for stream in (False, True, False):
        # each reserves ~604 tokens; two would not fit unless the previous one settled (~15)
        r = gw.post(CHAT, json=_body(max_tokens=600, stream=stream))
        assert r.status_code == 200, r.text
        _ = r.text
        rec = gw.record(r.headers["x-request-id"])
        limits = rec["limits"]
        assert limits["reserved"]["tokens"] > 600
        assert limits["settled"]["tokens"] == rec["prompt_tokens"] + rec["completion_tokens"] < 100
    assert len(sim_a.requests) == 3


def test_failed_upstream_releases_its_reservation(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    gw = start_gateway(
        _config(sim_a, sim_b, _store_config(store_kind), key_limits={"tpm": 1000}, tenant_limits={"usd_per_day": 0.007})
    )
    _fresh_minute()
    sim_a.behave(status=503, times=1)
    r = gw.post(CHAT, json=_body(max_tokens=600))  # worst case 0.006 USD, ~604 tokens
    assert r.status_code == 503
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "upstream_error"
    assert rec["limits"]["settled"] == {"requests": 1, "tokens": 0, "usd": 0}
    r = gw.post(CHAT, json=_body(max_tokens=600))
    assert r.status_code == 200, r.text


def test_budget_is_never_exceeded_by_sequential_requests(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, store_kind: str
) -> None:
    budget = 0.0015
    gw = start_gateway(_config(sim_a, sim_b, _store_config(store_kind), key_limits={"usd_per_day": budget}))
    spent, statuses = 0.0, []
    for _ in range(40):
        r = gw.post(CHAT, json=_body("tell me a story about a cat", max_tokens=64))
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
        spent += gw.record(r.headers["x-request-id"])["cost_usd"]
    assert statuses[-1] == 429 and statuses.count(200) >= 2
    assert spent <= budget


# --- Redis: shared across replicas, outage behaviour ----------------------------------------


def test_two_gateways_sharing_redis_admit_exactly_three_of_ten_at_three_rpm(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    doc = _config(sim_a, sim_b, _store_config("redis"), key_limits={"rpm": 3})
    first, second = start_gateway(doc), start_gateway(doc)
    _fresh_minute()
    responses = burst([first, second], [_body(max_tokens=8) for _ in range(10)])
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 7
    assert len(sim_a.requests) == 3
    for r in responses:
        if r.status_code == 429:
            assert "key k_app: 3 requests per minute" in r.json()["error"]["message"]


def test_redis_down_fail_closed_is_503_and_nothing_leaves(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    dead = {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "on_error": "closed"}
    gw = start_gateway(_config(sim_a, sim_b, dead, key_limits={"rpm": 100}))
    for stream in (False, True):
        r = gw.post(CHAT, json=_body(max_tokens=8, stream=stream))
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "limits_unavailable" and "limits store unavailable" in err["message"]
        assert gw.record(r.headers["x-request-id"])["status"] == "limits_unavailable"
    assert sim_a.requests == [] and sim_b.requests == []


def test_redis_down_fail_open_admits_and_records_that_limits_were_skipped(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    dead = {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "on_error": "open"}
    gw = start_gateway(_config(sim_a, sim_b, dead, key_limits={"rpm": 1}))
    for _ in range(2):
        r = gw.post(CHAT, json=_body(max_tokens=8))
        assert r.status_code == 200, r.text
        limits = gw.record(r.headers["x-request-id"])["limits"]
        assert "limits store unavailable" in limits["skipped"] and limits["reserved"] is None


def test_fail_open_never_weakens_the_policy(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    dead = {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "on_error": "open"}
    gw = start_gateway(_config(sim_a, sim_b, dead, key_limits={"rpm": 1}))
    r = gw.post(CHAT, json=_body(max_tokens=8), headers={"x-data-classification": "confidential"})
    assert r.status_code == 403 and sim_a.requests == []
    assert gw.record(r.headers["x-request-id"])["limits"] is None  # a denied request reserves nothing


# --- stores directly -------------------------------------------------------------------------


@pytest.fixture
async def store(store_kind: str) -> Any:
    s: LimitStore = MemoryStore() if store_kind == "memory" else RedisStore(REDIS_URL)
    yield s
    await s.aclose()


async def test_store_reserves_all_counters_or_none(store: LimitStore) -> None:
    p, now = _prefix(), time.time()
    a, b = Hold(p + "a", 1, 3, now + 60), Hold(p + "b", 0.4, 1.0, now + 60)
    assert await store.reserve([a, b], now=now) is None
    assert await store.reserve([a, b], now=now) is None
    assert await store.reserve([a, b], now=now) == 1  # b would reach 1.2 > 1.0
    assert await store.used(p + "a", now=now) == 2  # a was not touched by the refused attempt
    assert await store.used(p + "b", now=now) == pytest.approx(0.8)
    await store.adjust([(p + "b", -0.8, now + 60)], now=now)
    assert await store.used(p + "b", now=now) == pytest.approx(0.0)


async def test_store_admits_exactly_the_limit_under_concurrency(store: LimitStore) -> None:
    p, now = _prefix(), time.time()
    holds = [Hold(p + "rpm", 1, 3, now + 60), Hold(p + "usd", 0.00064, 0.0015, now + 60)]
    results = await asyncio.gather(*(store.reserve(holds, now=now) for _ in range(50)))
    assert sum(r is None for r in results) == 2  # the budget (2 x 0.00064) binds before rpm 3


async def test_redis_store_on_a_dead_port_raises_store_unavailable_quickly() -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="redis"):
        await dead.reserve([Hold("x", 1, 1, time.time() + 60)], now=time.time())
    assert time.monotonic() - started < 2
    await dead.aclose()


async def test_redis_counters_expire_with_their_window() -> None:
    from redis.asyncio import Redis

    store, p, now = RedisStore(REDIS_URL), _prefix(), time.time()
    await store.reserve([Hold(p + "w", 1, 5, now + 30)], now=now)
    client = Redis.from_url(REDIS_URL)
    try:
        assert 25_000 < await client.pttl(p + "w") <= 30_000
    finally:
        await client.aclose()
        await store.aclose()


# --- rules, windows, config ------------------------------------------------------------------


def test_rule_names_and_windows() -> None:
    assert Rule("key", "k_app", "requests", "minute", 3).name == "key k_app: 3 requests per minute"
    assert Rule("tenant", "acme", "usd", "day", 0.000001).name == "tenant acme: 0.000001 USD per day"
    dec31 = dt.datetime(2025, 12, 31, 23, 59, 30, tzinfo=dt.UTC).timestamp()
    month = window("month", dec31)
    assert month.id == "2025-12" and month.end == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    assert window("day", dec31).end - dec31 == 30
    assert window("minute", dec31).end - dec31 == 30


@pytest.mark.parametrize(
    ("store_doc", "limits", "path"),
    [
        ({"kind": "redis"}, {}, "limits_store"),
        ({"kind": "memory", "url": REDIS_URL}, {}, "limits_store"),
        ({"kind": "memory", "on_error": "maybe"}, {}, "limits_store.on_error"),
        ({"kind": "memory"}, {"rpm": -1}, "keys.0.limits.rpm"),
        ({"kind": "memory"}, {"rps": 5}, "keys.0.limits.rps"),
        ({"kind": "memory"}, {"usd_per_day": "nan"}, "keys.0.limits.usd_per_day"),
    ],
)
def test_limit_config_is_validated_strictly(store_doc: dict[str, Any], limits: dict[str, Any], path: str) -> None:
    doc = make_config(sim_a_url="http://a/v1", sim_b_url="http://b/v1", llama_url="http://c/v1")
    doc["limits_store"] = store_doc
    doc["keys"][0]["limits"] = limits
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.path == path


def test_no_limits_configured_reserves_nothing(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    gw = start_gateway(_config(sim_a, sim_b, {"kind": "memory"}))
    r = gw.post(CHAT, json=_body())
    assert r.status_code == 200
    limits = gw.record(r.headers["x-request-id"])["limits"]
    assert limits["rules"] == [] and limits["reserved"] is None


# --- Redis stopped and restarted during a run (a private redis-server, not the shared one) ---


@pytest.fixture
def private_redis() -> Iterator[Callable[[bool], str]]:
    """A redis-server of this test on a free port; call with False to stop it, True to
    (re)start it. Yields the control function; its URL is returned by every call."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    # .ci/run starts redis-server, so it is installed wherever the suite runs: fail, never skip
    assert binary is not None, "redis-server is not installed (the Redis outage test needs its own server)"
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc: list[subprocess.Popen[bytes]] = []

    def control(up: bool) -> str:
        if up and not proc:
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            proc.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.05)
        elif not up and proc:
            p = proc.pop()
            p.terminate()
            p.wait(timeout=10)
        return url

    control(True)
    try:
        yield control
    finally:
        control(False)


@pytest.mark.parametrize("on_error", ["closed", "open"])
def test_redis_stopped_and_restarted_mid_run(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    private_redis: Callable[[bool], str],
    on_error: str,
) -> None:
    url = private_redis(True)
    gw = start_gateway(
        _config(sim_a, sim_b, {"kind": "redis", "url": url, "on_error": on_error}, key_limits={"rpm": 1000})
    )
    assert gw.post(CHAT, json=_body(max_tokens=8)).status_code == 200
    private_redis(False)
    r = gw.post(CHAT, json=_body(max_tokens=8))
    limits = gw.record(r.headers["x-request-id"])["limits"]
    if on_error == "closed":
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable"
        assert len(sim_a.requests) == 1, "a request went upstream while its limits could not be checked"
    else:
        assert r.status_code == 200 and "limits store unavailable" in limits["skipped"]
        assert len(sim_a.requests) == 2
    private_redis(True)
    r = gw.post(CHAT, json=_body(max_tokens=8))
    assert r.status_code == 200, r.text
    assert gw.record(r.headers["x-request-id"])["limits"]["reserved"]["requests"] == 1


# --- the limiter directly --------------------------------------------------------------------


def _limiter(store: LimitStore, **limits: Any) -> Any:
    from gateway.config import Limits
    from gateway.limits import Limiter

    return Limiter(store, tenant_limits={}, key_limits={"k": Limits(**limits)}, prefix=_prefix())


def _ctx() -> Any:
    from gateway.context import Principal, RequestContext

    ctx = RequestContext(endpoint="chat.completions")
    ctx.principal = Principal(tenant="t", key_id="k", roles=("app",), home_region="eu")
    return ctx


def _dep() -> Any:
    doc = make_config(sim_a_url="http://a/v1", sim_b_url="http://b/v1", llama_url="http://c/v1")
    return parse_config(doc).deployment("ext-pricey")  # 5 USD/Mtok in, 15 USD/Mtok out


async def test_limiter_settle_and_release_are_idempotent_and_free_the_room(store: LimitStore) -> None:
    from gateway.errors import RateLimited

    limiter, dep = _limiter(store, tpm=1000), _dep()
    admit = {"planned": [dep], "est_input_tokens": 100, "max_output_tokens": 500, "output_capped": True}
    first = _ctx()
    await limiter.admit(first, **admit)
    assert first.admission.reserved.tokens == 600
    assert first.admission.reserved.usd == pytest.approx((100 * 5 + 500 * 15) / 1e6)
    with pytest.raises(RateLimited) as info:
        await limiter.admit(_ctx(), **admit)
    assert info.value.limit == "key k: 1000 tokens per minute" and info.value.headers()["Retry-After"].isdigit()
    first.prompt_tokens, first.completion_tokens, first.cost_usd = 100, 20, 0.0008
    await limiter.settle(first)
    await limiter.settle(first)
    await limiter.release(first)  # after settlement: no effect
    assert first.admission.settled.tokens == 120
    second = _ctx()
    await limiter.admit(second, **admit)  # 120 + 600 <= 1000
    await limiter.release(second)
    await limiter.release(second)
    third = _ctx()
    await limiter.admit(third, **admit)  # 120 + 600 again: the release gave 600 back


async def test_limiter_settlement_on_a_store_gone_away_is_recorded_not_raised() -> None:
    limiter, dep = _limiter(MemoryStore(), tpm=1000), _dep()
    ctx = _ctx()
    await limiter.admit(ctx, planned=[dep], est_input_tokens=10, max_output_tokens=10, output_capped=True)
    limiter.store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    ctx.prompt_tokens, ctx.completion_tokens, ctx.cost_usd = 10, 1, 0.0
    await limiter.settle(ctx)
    assert "redis" in ctx.admission.settle_error
    await limiter.store.aclose()


def test_gateway_redis_url_overrides_the_file_s_limits_store_url(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GATEWAY_REDIS_URL (a password from a secret, not the ConfigMap) replaces the file's
    limits_store.url: with the file's URL (nothing listens on port 9) the request would fail
    closed with 503 limits_unavailable."""
    monkeypatch.setenv("GATEWAY_REDIS_URL", REDIS_URL)
    store = {"kind": "redis", "url": "redis://127.0.0.1:9/0", "key_prefix": _prefix(), "timeout_s": 0.2}
    gw = start_gateway(_config(sim_a, sim_b, store, key_limits={"rpm": 100}))
    r = gw.post(CHAT, json=_body())
    assert r.status_code == 200, r.text
    assert gw.record(r.headers["x-request-id"])["limits"]["rules"] == ["key k_app: 100 requests per minute"]


@pytest.mark.parametrize(
    ("store", "url", "reason"),
    [
        ({"kind": "memory"}, REDIS_URL, "GATEWAY_REDIS_URL is set but the kind is not redis"),
        ({"kind": "redis", "url": REDIS_URL}, "http://127.0.0.1:6379", "kind redis needs url"),
    ],
)
def test_gateway_redis_url_that_would_do_nothing_or_is_no_redis_url_stops_start_up(
    sim_a: ProviderSimulator, sim_b: ProviderSimulator, store: dict[str, Any], url: str, reason: str
) -> None:
    from gateway.config import Settings, with_env_overrides

    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    doc["limits_store"] = store
    with pytest.raises(ConfigError, match=reason):
        with_env_overrides(parse_config(doc), Settings(redis_url=url))
