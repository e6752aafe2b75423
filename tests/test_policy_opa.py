"""The OPA engine: the shared corpus on both engines, OPA's Data API contract, fail-closed
answers (policy.yaml ``undefined-is-deny``), config and the HTTP API with ``engine: opa``.

The contract tests run against a real OPA server when ``OPA_URL`` is set (its policies are
pushed with ``PUT /v1/policies``), otherwise against ``tests/support/fake_opa.FakeOpa``; the
test ids start with ``real-opa`` or ``fake-opa`` and each records the server in the
``opa_server`` property (JUnit XML). Fail-closed tests need misbehaviour, so they always use
the fake.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError, PolicyUnavailable
from gateway.policy import ENTRYPOINT, PolicyBundle, load_bundle
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.opa import OpaEngine, opa_address
from tests.conftest import GatewayUnderTest, make_config
from tests.policy_corpus import CORPUS, CorpusItem, decision_view, make_input
from tests.support.fake_opa import FakeOpa
from tests.support.provider_sim import ProviderSimulator
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = load_bundle(ROOT / "policies")
OPA_URL = os.environ.get("OPA_URL", "").rstrip("/")
OPA_KIND = "real-opa" if OPA_URL else "fake-opa"


class OpaTarget:
    """The OPA server the contract tests talk to: ``url``, ``kind`` and a description."""

    def __init__(self, url: str, kind: str, fake: FakeOpa | None) -> None:
        self.url = url
        self.kind = kind
        self.fake = fake
        self.description = f"real OPA at {url}" if kind == "real-opa" else f"fake OPA (regopy) at {url}"


def _push(url: str, policy_id: str, source: str) -> httpx.Response:
    return httpx.put(f"{url}/v1/policies/{policy_id}", content=source, headers={"content-type": "text/plain"})


@pytest.fixture(scope="module")
def opa_target() -> Iterator[OpaTarget]:
    """A real OPA (``OPA_URL``) or a fake one, holding policies/ pushed via the Policy API."""
    fake = None if OPA_URL else FakeOpa().start()
    url = OPA_URL or (fake.url if fake else "")
    prefix = f"sgw-test-{uuid.uuid4().hex[:8]}"
    pushed = []
    try:
        # OPA compiles each pushed module against those already loaded, so modules that use
        # rules of modules not yet pushed are retried in later rounds (the library is acyclic).
        waiting = dict(BUNDLE.modules)
        while waiting:
            failed: dict[str, str] = {}
            for name, source in waiting.items():
                response = _push(url, f"{prefix}/{name}", source)
                if response.status_code == 200:
                    pushed.append(f"{prefix}/{name}")
                else:
                    failed[name] = response.text
            assert len(failed) < len(waiting), f"modules never compile on {OPA_KIND}: {failed}"
            waiting = {name: BUNDLE.modules[name] for name in failed}
        for key, value in BUNDLE.data.items():
            response = httpx.put(f"{url}/v1/data/{key}", json=value)
            assert response.status_code == 204, response.text
        print(f"\npolicy contract tests run against: {OPA_KIND} ({url})")
        yield OpaTarget(url, OPA_KIND, fake)
    finally:
        for policy_id in pushed:
            httpx.delete(f"{url}/v1/policies/{policy_id}")
        if fake is not None:
            fake.stop()


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(BUNDLE, timeout_ms=10_000.0, threads=2)
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture
async def opa_engine(opa_target: OpaTarget) -> AsyncIterator[OpaEngine]:
    engine = OpaEngine(BUNDLE, url=opa_target.url, timeout_ms=10_000.0, push=False)  # the fixture pushed it
    yield engine
    await engine.aclose()


# ---------------------------------------------------------------------------------------------
# The shared corpus: both engines, identical decisions, equal to the expected ones
# ---------------------------------------------------------------------------------------------


def test_corpus_has_at_least_fifty_distinct_items_with_both_outcomes() -> None:
    assert len(CORPUS) >= 50
    assert len({item.id for item in CORPUS}) == len(CORPUS)
    outcomes = [item.expect["allow"] for item in CORPUS]
    assert outcomes.count(True) >= 10 and outcomes.count(False) >= 10


@pytest.mark.parametrize("item", CORPUS, ids=[f"{OPA_KIND}-{item.id}" for item in CORPUS])
async def test_corpus_item_gets_the_same_decision_on_both_engines(
    item: CorpusItem,
    embedded: EmbeddedEngine,
    opa_engine: OpaEngine,
    opa_target: OpaTarget,
    record_property: Callable[[str, object], None],
) -> None:
    record_property("opa_server", opa_target.description)
    local = await embedded.decide(item.input)
    remote = await opa_engine.decide(item.input)
    local_view = decision_view(local.allow, local.eligible, local.excluded, local.obligations, local.reasons)
    remote_view = decision_view(remote.allow, remote.eligible, remote.excluded, remote.obligations, remote.reasons)

    assert local_view == item.expect
    assert (local.engine, remote.engine) == ("embedded", "opa")
    assert local.revision == remote.revision == BUNDLE.revision
    expected = item.expect
    if opa_target.kind == "real-opa" and item.opa_text_may_differ:
        # rego-cpp cannot add past 2**63 (its reason says "out of range"); OPA can: ids only.
        remote_view, expected = (
            {**v, "excluded": sorted(v["excluded"]), "reasons": None} for v in (remote_view, expected)
        )
    assert remote_view == expected, f"{opa_target.description} disagrees with the corpus on {item.id}"


# ---------------------------------------------------------------------------------------------
# OPA Data API semantics (the fake must behave like OPA; against OPA_URL this checks OPA itself)
# ---------------------------------------------------------------------------------------------


def test_data_api_answers_result_false_and_an_empty_object_for_undefined(
    opa_target: OpaTarget, record_property: Callable[[str, object], None]
) -> None:
    record_property("opa_server", opa_target.description)
    package = f"sgw_contract_{uuid.uuid4().hex[:8]}"
    policy_id = f"{package}.rego"
    source = f'package {package}\n\nis_false := false\n\nobj := {{"x": input.x}}\n\nonly_if := 1 if input.x == 2\n'
    assert _push(opa_target.url, policy_id, source).status_code == 200
    try:

        def ask(rule: str, body: dict[str, Any]) -> httpx.Response:
            return httpx.post(f"{opa_target.url}/v1/data/{package}/{rule}", json=body)

        assert ask("is_false", {"input": {}}).json() == {"result": False}
        assert ask("obj", {"input": {"x": 7}}).json() == {"result": {"x": 7}}
        undefined = ask("only_if", {"input": {"x": 3}})
        assert undefined.status_code == 200
        assert "result" not in undefined.json()
        assert "result" not in ask("no_such_rule", {"input": {}}).json()
    finally:
        httpx.delete(f"{opa_target.url}/v1/policies/{policy_id}")


def test_policy_api_refuses_a_module_that_does_not_compile(opa_target: OpaTarget) -> None:
    response = _push(opa_target.url, f"sgw-broken-{uuid.uuid4().hex[:8]}.rego", "package broken\n\nx := {\n")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"


def test_data_api_answers_an_evaluation_error_with_500_and_opas_error_shape(opa_target: OpaTarget) -> None:
    package = f"sgw_conflict_{uuid.uuid4().hex[:8]}"
    policy_id = f"{package}.rego"
    source = f"package {package}\n\nx := 1 if true\n\nx := 2 if true\n"
    assert _push(opa_target.url, policy_id, source).status_code == 200
    try:
        response = httpx.post(f"{opa_target.url}/v1/data/{package}/x", json={"input": {}})
    finally:
        httpx.delete(f"{opa_target.url}/v1/policies/{policy_id}")

    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.json()["message"]


# ---------------------------------------------------------------------------------------------
# Fail closed (policy.yaml undefined-is-deny), through the engine, against the fake
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_opa() -> Iterator[FakeOpa]:
    with FakeOpa() as opa:  # empty: the engines push the bundle (sovereign-gateway/<file>) at first use
        yield opa


@pytest.fixture
async def fake_engine(fake_opa: FakeOpa) -> AsyncIterator[OpaEngine]:
    fake_opa.reset()
    engine = OpaEngine(BUNDLE, url=fake_opa.url, timeout_ms=2000.0)
    yield engine
    await engine.aclose()
    fake_opa.reset()


async def test_opa_engine_posts_the_input_to_the_decision_path(fake_opa: FakeOpa, fake_engine: OpaEngine) -> None:
    policy_input = make_input(level="confidential")

    decision = await fake_engine.decide(policy_input)

    assert fake_opa.queries == [(ENTRYPOINT, {"input": policy_input})]
    assert decision.allow is True and decision.eligible == ("local-eu",)
    assert decision.engine == "opa" and decision.revision == BUNDLE.revision and decision.eval_ms > 0


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        pytest.param({}, "policy decision is undefined (treated as deny)", id="undefined_empty_object"),
        pytest.param({"decision_id": "d-1"}, "policy decision is undefined (treated as deny)", id="undefined_with_id"),
        pytest.param({"result": None}, "policy decision is undefined (treated as deny)", id="result_null"),
        pytest.param({"result": False}, "policy decision is a bool, not an object (treated as deny)", id="false"),
        pytest.param({"result": True}, "policy decision is a bool, not an object (treated as deny)", id="true"),
        pytest.param({"result": {"allow": "yes"}}, "no boolean 'allow'", id="allow_not_bool"),
        pytest.param(
            {"result": {"allow": True, "eligible": ["not-offered"]}}, "not offered: ['not-offered']", id="not_offered"
        ),
    ],
)
async def test_opa_undefined_false_or_malformed_decision_is_a_deny_naming_the_cause(
    fake_opa: FakeOpa, fake_engine: OpaEngine, body: dict[str, Any], cause: str
) -> None:
    fake_opa.behave(body=body)

    decision = await fake_engine.decide(make_input())

    assert decision.allow is False and decision.eligible == ()
    assert len(decision.reasons) == 1 and cause in decision.reasons[0]
    assert decision.engine == "opa"


async def test_opa_allow_false_is_a_deny_with_the_policys_reasons(fake_opa: FakeOpa, fake_engine: OpaEngine) -> None:
    fake_opa.behave(body={"result": {"allow": False, "eligible": [], "reasons": ["kill switch is on"]}})

    decision = await fake_engine.decide(make_input())

    assert decision.allow is False and decision.eligible == ()
    assert decision.reasons == ("kill switch is on",)


async def test_opa_policy_without_the_decision_rule_is_undefined_and_denies() -> None:
    other = PolicyBundle({"x.rego": "package gateway.routing\n\nsomething_else := 1\n"})
    with FakeOpa(other.modules) as opa:
        engine = OpaEngine(other, url=opa.url, timeout_ms=2000.0, push=False)
        try:
            decision = await engine.decide(make_input())
        finally:
            await engine.aclose()

    assert decision.allow is False
    assert decision.reasons == ("policy decision is undefined (treated as deny)",)


async def test_opa_evaluation_error_raises_policy_unavailable_503() -> None:
    conflict = PolicyBundle({"x.rego": "package gateway.routing\n\ndecision := {\"allow\": x}\n\nx := true if true\n"
                                       "\nx := false if true\n"})  # fmt: skip
    with FakeOpa(conflict.modules) as opa:
        engine = OpaEngine(conflict, url=opa.url, timeout_ms=2000.0, push=False)
        try:
            with pytest.raises(PolicyUnavailable, match=r"OPA answered HTTP 500") as info:
                await engine.decide(make_input())
        finally:
            await engine.aclose()

    assert info.value.status == 503 and info.value.code == "policy_unavailable" and info.value.outcome == "denied"


@pytest.mark.parametrize("status", [400, 404, 500, 502, 503])
async def test_opa_non_200_answer_raises_policy_unavailable_once(
    fake_opa: FakeOpa, fake_engine: OpaEngine, status: int
) -> None:
    fake_opa.behave(status=status)

    with pytest.raises(PolicyUnavailable, match=rf"OPA answered HTTP {status} .*\(denied\)"):
        await fake_engine.decide(make_input())

    assert len(fake_opa.queries) == 1, "no retry after an error answer"


async def test_opa_body_that_is_not_an_object_raises_policy_unavailable(
    fake_opa: FakeOpa, fake_engine: OpaEngine
) -> None:
    fake_opa.behave(body=["not", "an", "object"])

    with pytest.raises(PolicyUnavailable, match="not a JSON object"):
        await fake_engine.decide(make_input())


async def test_slow_opa_times_out_within_the_deadline_and_raises_policy_unavailable(fake_opa: FakeOpa) -> None:
    fake_opa.reset()
    fake_opa.behave(delay_s=1.0)
    engine = OpaEngine(BUNDLE, url=fake_opa.url, timeout_ms=100.0)
    started = time.perf_counter()
    try:
        with pytest.raises(PolicyUnavailable, match=r"OPA did not answer within 100 ms \(denied\)") as info:
            await engine.decide(make_input())
    finally:
        await engine.aclose()
        fake_opa.reset()

    assert time.perf_counter() - started < 0.9
    assert info.value.status == 503


@pytest.mark.parametrize("push", [False, True])
async def test_unreachable_opa_raises_policy_unavailable(push: bool) -> None:
    engine = OpaEngine(BUNDLE, url=f"http://127.0.0.1:{free_port()}", timeout_ms=2000.0, push=push)
    try:
        with pytest.raises(PolicyUnavailable, match=r"unreachable") as info:
            await engine.decide(make_input())
    finally:
        await engine.aclose()
    assert "(denied)" in info.value.message


async def test_opa_engine_recovers_after_a_failure(fake_opa: FakeOpa, fake_engine: OpaEngine) -> None:
    fake_opa.behave(status=500, times=1)
    with pytest.raises(PolicyUnavailable):
        await fake_engine.decide(make_input())

    decision = await fake_engine.decide(make_input())

    assert decision.allow is True


async def test_concurrent_opa_decisions_do_not_mix(fake_engine: OpaEngine) -> None:
    levels = ["public", "internal", "confidential"] * 8
    decisions = await asyncio.gather(*(fake_engine.decide(make_input(level=lv)) for lv in levels))

    for level, decision in zip(levels, decisions, strict=True):
        assert decision.reasons[0].endswith(f"eligible for {level} data")


# ---------------------------------------------------------------------------------------------
# Address and config
# ---------------------------------------------------------------------------------------------


def test_opa_address_parses_host_port_and_tls() -> None:
    assert opa_address("http://127.0.0.1:8181") == ("127.0.0.1", 8181, False)
    assert opa_address("https://opa.internal/") == ("opa.internal", 8181, True)


@pytest.mark.parametrize("url", ["ftp://opa:8181", "http://", "http://opa:8181/v1", "http://opa:8181?x=1", "opa:8181"])
def test_opa_address_refuses_what_the_client_cannot_reach(url: str) -> None:
    with pytest.raises(ValueError, match="OPA URL"):
        opa_address(url)


def _config(policy: dict[str, Any]) -> dict[str, Any]:
    doc = make_config(sim_a_url="http://127.0.0.1:9/v1", sim_b_url="http://127.0.0.1:9/v1", llama_url="http://x/v1")
    doc["policy"].update(policy)
    return doc


def test_config_opa_engine_without_url_names_policy_url() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config({"engine": "opa"}), source="g.yaml")

    assert info.value.path == "policy.url"
    assert "required when policy.engine is opa" in str(info.value)


def test_config_opa_url_with_a_path_names_policy_url() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config({"engine": "opa", "url": "http://opa:8181/v1/data"}), source="g.yaml")

    assert info.value.path == "policy.url"


def test_config_accepts_opa_engine_with_url_and_keeps_embedded_default() -> None:
    config = parse_config(_config({"engine": "opa", "url": "http://127.0.0.1:8181"}))
    assert (config.policy.engine, config.policy.url) == ("opa", "http://127.0.0.1:8181")
    assert parse_config(_config({})).policy.engine == "embedded"


def test_config_refuses_an_unknown_engine() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config({"engine": "cedar"}))

    assert info.value.path == "policy.engine"


# ---------------------------------------------------------------------------------------------
# Through the HTTP API: engine: opa pointed at the fake
# ---------------------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
REQ = {"model": "external", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def opa_gateway(
    start_gateway: Callable[..., GatewayUnderTest],
    fake_opa: FakeOpa,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
) -> GatewayUnderTest:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=sim_a.base_url)
    # No decision cache: each request must reach OPA, which these tests tell to misbehave;
    # for the same reason its records (answers OPA was told to give) are not replayed by explain.
    doc["policy"].update({"engine": "opa", "url": fake_opa.url, "timeout_ms": 300, "cache_size": 0})
    return start_gateway(doc, check_explain=False)


def test_gateway_with_opa_engine_routes_an_allowed_request(
    opa_gateway: GatewayUnderTest, fake_opa: FakeOpa, sim_a: ProviderSimulator
) -> None:
    fake_opa.reset()
    r = opa_gateway.post(CHAT, json=REQ)

    assert r.status_code == 200, r.text
    assert len(fake_opa.queries) == 1
    rec = opa_gateway.record(r.headers["x-request-id"])
    assert rec["policy_engine"] == "opa" and rec["policy_revision"] == BUNDLE.revision


@pytest.mark.parametrize(
    ("behaviour", "status", "fragment"),
    [
        pytest.param({"body": {}}, 403, "policy decision is undefined (treated as deny)", id="undefined"),
        pytest.param({"body": {"result": False}}, 403, "not an object (treated as deny)", id="false"),
        pytest.param({"status": 500}, 503, "OPA answered HTTP 500", id="evaluation_error"),
        pytest.param({"delay_s": 1.0}, 503, "OPA did not answer within 300 ms", id="timeout"),
    ],
)
def test_gateway_with_opa_engine_fails_closed_and_sends_nothing_upstream(
    opa_gateway: GatewayUnderTest,
    fake_opa: FakeOpa,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    behaviour: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    fake_opa.reset()
    fake_opa.behave(**behaviour)
    try:
        r = opa_gateway.post(CHAT, json=REQ)
    finally:
        fake_opa.reset()

    assert r.status_code == status, r.text
    error = r.json()["error"]
    text = " ".join([error["message"], *error.get("reasons", [])])
    assert fragment in text
    assert sim_a.requests == [] and sim_b.requests == []
    rec = opa_gateway.record(r.headers["x-request-id"])
    assert rec["status"] == "denied" and rec["chosen_deployment"] is None and rec["http_status"] == status


ADMIN_KEY = "sk-test-opa-admin"


def test_opa_mode_activation_pushes_the_version_and_a_refused_one_changes_nothing(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """policy.yaml policy-load-fails-closed in OPA mode: the gateway pushes each activated
    version to OPA; a version OPA refuses to compile is not activated, OPA gets the previous
    modules back and decisions keep being made (and recorded) under the active revision."""
    from gateway.auth import hash_key
    from gateway.policy.opa import PUSH_PREFIX

    with FakeOpa() as opa:
        doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=sim_a.base_url)
        admin = {"id": "k_opa_admin", "hash": hash_key(ADMIN_KEY), "tenant": "acme-eu", "roles": ["admin"]}
        doc["keys"].append({**admin, "all_tenants": True})
        doc["policy"].update({"engine": "opa", "url": opa.url, "cache_size": 0})
        gw = start_gateway(doc)
        assert gw.post(CHAT, json=REQ).status_code == 200
        assert {PUSH_PREFIX + name for name in BUNDLE.modules} == set(opa.modules)

        # A version that passes the embedded check but that OPA refuses.
        marked = {**BUNDLE.modules, "extra.rego": "package gateway.routing\n\n# opa-refuses-this\nextra_rule := 1\n"}
        opa.refuse_modules("opa-refuses-this")
        r = gw.post(
            "/v1/admin/policies", key=ADMIN_KEY, json={"modules": marked, "data": BUNDLE.data, "activate": True}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "policy_invalid" and "OPA refused" in r.json()["error"]["message"]
        assert set(opa.modules) == {PUSH_PREFIX + name for name in BUNDLE.modules}
        ok = gw.post(CHAT, json=REQ)
        assert ok.status_code == 200 and gw.record(ok.headers["x-request-id"])["policy_revision"] == BUNDLE.revision

        # Kill switch through the admin API: OPA gets the new data; decisions follow at once.
        opa.refuse_modules(None)
        switched = gw.post("/v1/admin/policies/killswitch", key=ADMIN_KEY, json={"blocked": True})
        assert switched.status_code == 200, switched.text
        denied = gw.post(CHAT, json=REQ)
        assert denied.status_code == 403
        rec = gw.record(denied.headers["x-request-id"])
        assert rec["policy_engine"] == "opa" and rec["policy_revision"] == switched.json()["to"]
        assert rec["excluded_rules"]["ext-cheap"] == ["external_egress_blocked"]
