"""The embedded regopy engine and the policy library in policies/, evaluated for real.

Covers the routing policy's rules (table-driven), the fail-closed handling of every malformed
decision shape, load-time refusal of bundles the engine cannot run, engine errors and timeouts
(PolicyUnavailable, 503), bundle revisions and concurrent evaluation on the thread pool.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
from regopy import Interpreter

from gateway.config import DeploymentConfig, Price
from gateway.context import Classification, DataLevel, Decision, Principal
from gateway.errors import PolicyUnavailable
from gateway.policy import ENTRYPOINT, PolicyBundle, build_input, load_bundle, parse_decision
from gateway.policy.embedded import EmbeddedEngine, PolicyLoadError, check_bundle

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policies"

# ---------------------------------------------------------------------------------------------
# Input builders
# ---------------------------------------------------------------------------------------------

TENANT_ALLOWED: dict[str, dict[str, Any]] = {
    "restricted": {"locality": ["local"]},
    "confidential": {"locality": ["local"]},
    "internal": {"jurisdictions": ["EU"]},
    "public": {"any": True},
}

UNHEALTHY = (
    "deployment is unhealthy (circuit breaker open after repeated failures) or not configured (its API key is not set)"
)
DEPLOYMENT_ORDER = ("local-eu", "ext-eu", "ext-us")


_PLACES: dict[str, tuple[Literal["local", "external"], str]] = {
    "local-eu": ("local", "EU"),
    "ext-eu": ("external", "EU"),
    "ext-us": ("external", "US"),
}


def _deployment(dep_id: str) -> dict[str, Any]:
    locality, jurisdiction = _PLACES[dep_id]
    config = DeploymentConfig(
        id=dep_id,
        adapter="openai_compat",
        model="some-model",
        api_base="http://127.0.0.1:9/v1",
        locality=locality,
        jurisdiction=jurisdiction,
        region=f"{jurisdiction.lower()}-1",
        capabilities=("tools", "json"),
        context_window=32768,
        price=Price(input_per_mtok=1.0, output_per_mtok=2.0),
    )
    return config.policy_view(healthy=True)


def make_input(
    *,
    level: str = "public",
    allowed: dict[str, dict[str, Any]] | None = None,
    request: dict[str, Any] | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
    order: tuple[str, ...] = DEPLOYMENT_ORDER,
) -> dict[str, Any]:
    """The policy input for tenant ``acme-eu``: ``deployments`` maps id → field overrides."""
    overrides = deployments or {}
    views = [{**_deployment(dep_id), **overrides.get(dep_id, {})} for dep_id in order]
    req: dict[str, Any] = {
        "id": "req_test",
        "endpoint": "chat.completions",
        "model": "auto",
        "needs": [],
        "est_input_tokens": 100,
        "max_output_tokens": 100,
        **(request or {}),
    }
    data_level = DataLevel.parse(level)
    return build_input(
        principal=Principal(tenant="acme-eu", key_id="k_test", roles=("app",), home_region="eu"),
        tenant={"floor": "internal", "allowed": TENANT_ALLOWED if allowed is None else allowed},
        request=req,
        classification=Classification(level=data_level, detected=data_level, declared=None),
        deployments=views,
    )


@pytest.fixture(scope="module")
def routing_engine() -> Iterator[EmbeddedEngine]:
    """The shipped policies/ bundle on a 2-thread embedded engine."""
    engine = EmbeddedEngine(load_bundle(POLICY_DIR), timeout_ms=5000.0, threads=2)
    yield engine
    asyncio.run(engine.aclose())


def bundle_of(source: str) -> PolicyBundle:
    return PolicyBundle({"x.rego": source})


async def decide_with(source: str, policy_input: dict[str, Any] | None = None, **kwargs: Any) -> Decision:
    """Evaluate a one-module bundle (package gateway.routing) on a fresh engine."""
    engine = EmbeddedEngine(bundle_of(source), **kwargs)
    try:
        return await engine.decide(policy_input if policy_input is not None else make_input())
    finally:
        await engine.aclose()


# ---------------------------------------------------------------------------------------------
# the policy library, table-driven
# ---------------------------------------------------------------------------------------------


class Case(TypedDict, total=False):
    name: str
    level: str
    allowed: dict[str, dict[str, Any]]
    request: dict[str, Any]
    deployments: dict[str, dict[str, Any]]
    order: tuple[str, ...]
    eligible: list[str]
    # id → substrings, one per expected reason (the deployment has exactly that many reasons)
    excluded: dict[str, list[str]]


LOCALITY_CONF = "locality external is not allowed for confidential data"
NO_RULE_INTERNAL = "tenant acme-eu has no residency rule for internal data, so nothing may receive it"

CASES: list[Case] = [
    {
        "name": "public_any_true_allows_every_deployment",
        "level": "public",
        "eligible": ["local-eu", "ext-eu", "ext-us"],
        "excluded": {},
    },
    {
        "name": "confidential_locality_rule_keeps_local_only",
        "level": "confidential",
        "eligible": ["local-eu"],
        "excluded": {"ext-eu": [LOCALITY_CONF], "ext-us": [LOCALITY_CONF]},
    },
    {
        "name": "restricted_locality_rule_keeps_local_only",
        "level": "restricted",
        "eligible": ["local-eu"],
        "excluded": {
            "ext-eu": ["locality external is not allowed for restricted data"],
            "ext-us": ["locality external is not allowed for restricted data"],
        },
    },
    {
        "name": "internal_jurisdiction_rule_keeps_eu_only",
        "level": "internal",
        "eligible": ["local-eu", "ext-eu"],
        "excluded": {"ext-us": ['jurisdiction US is not allowed for internal data (allowed: ["EU"])']},
    },
    {
        "name": "no_rule_for_level_excludes_every_deployment",
        "level": "internal",
        "allowed": {"public": {"any": True}},
        "eligible": [],
        "excluded": {"local-eu": [NO_RULE_INTERNAL], "ext-eu": [NO_RULE_INTERNAL], "ext-us": [NO_RULE_INTERNAL]},
    },
    {
        "name": "empty_locality_list_excludes_every_deployment",
        "level": "confidential",
        "allowed": {"confidential": {"locality": []}},
        "eligible": [],
        "excluded": {
            "local-eu": ["locality local is not allowed for confidential data (allowed: [])"],
            "ext-eu": [LOCALITY_CONF],
            "ext-us": [LOCALITY_CONF],
        },
    },
    {
        "name": "trains_on_data_allowed_for_public",
        "level": "public",
        "deployments": {"ext-eu": {"trains_on_data": True}},
        "eligible": ["local-eu", "ext-eu", "ext-us"],
        "excluded": {},
    },
    {
        "name": "trains_on_data_excluded_for_internal",
        "level": "internal",
        "deployments": {"ext-eu": {"trains_on_data": True}},
        "eligible": ["local-eu"],
        "excluded": {
            "ext-eu": ["deployment trains on submitted data, which is not allowed for internal data"],
            "ext-us": ["jurisdiction US"],
        },
    },
    {
        "name": "trains_on_data_excluded_for_confidential",
        "level": "confidential",
        "deployments": {"local-eu": {"trains_on_data": True}},
        "eligible": [],
        "excluded": {
            "local-eu": ["trains on submitted data, which is not allowed for confidential data"],
            "ext-eu": [LOCALITY_CONF],
            "ext-us": [LOCALITY_CONF],
        },
    },
    {
        "name": "retains_data_allowed_for_internal",
        "level": "internal",
        "deployments": {"ext-eu": {"retains_data": True}},
        "eligible": ["local-eu", "ext-eu"],
        "excluded": {"ext-us": ["jurisdiction US"]},
    },
    {
        "name": "retains_data_excluded_for_confidential",
        "level": "confidential",
        "deployments": {"local-eu": {"retains_data": True}},
        "eligible": [],
        "excluded": {
            "local-eu": ["deployment retains submitted data, which is not allowed for confidential data"],
            "ext-eu": [LOCALITY_CONF],
            "ext-us": [LOCALITY_CONF],
        },
    },
    {
        "name": "retains_data_excluded_for_restricted",
        "level": "restricted",
        "deployments": {"local-eu": {"retains_data": True}},
        "eligible": [],
        "excluded": {
            "local-eu": ["retains submitted data, which is not allowed for restricted data"],
            "ext-eu": ["locality external"],
            "ext-us": ["locality external"],
        },
    },
    {
        "name": "missing_capability_excluded",
        "level": "public",
        "request": {"needs": ["vision"]},
        "deployments": {"ext-us": {"capabilities": ["tools", "json", "vision"]}},
        "eligible": ["ext-us"],
        "excluded": {
            "local-eu": ["deployment lacks the required capability vision"],
            "ext-eu": ["deployment lacks the required capability vision"],
        },
    },
    {
        "name": "each_missing_capability_is_its_own_reason",
        "level": "public",
        "request": {"needs": ["tools", "vision", "audio"]},
        "deployments": {"ext-us": {"capabilities": ["tools", "json", "vision", "audio"]}},
        "eligible": ["ext-us"],
        "excluded": {
            "local-eu": ["required capability audio", "required capability vision"],
            "ext-eu": ["required capability audio", "required capability vision"],
        },
    },
    {
        "name": "context_window_too_small_excluded",
        "level": "public",
        "request": {"est_input_tokens": 4000, "max_output_tokens": 256},
        "deployments": {"local-eu": {"context_window": 4096}},
        "eligible": ["ext-eu", "ext-us"],
        "excluded": {
            "local-eu": ["context window of 4096 tokens is smaller than the request's estimated 4256 tokens"],
        },
    },
    {
        "name": "context_window_exactly_filled_is_eligible",
        "level": "public",
        "request": {"est_input_tokens": 3840, "max_output_tokens": 256},
        "deployments": {"local-eu": {"context_window": 4096}},
        "eligible": ["local-eu", "ext-eu", "ext-us"],
        "excluded": {},
    },
    {
        "name": "unhealthy_deployment_excluded",
        "level": "public",
        "deployments": {"ext-eu": {"healthy": False}},
        "eligible": ["local-eu", "ext-us"],
        "excluded": {"ext-eu": [UNHEALTHY]},
    },
    {
        "name": "several_reasons_on_one_deployment",
        "level": "confidential",
        "request": {"needs": ["vision"], "est_input_tokens": 900, "max_output_tokens": 200},
        "deployments": {
            "local-eu": {"capabilities": ["vision"]},
            "ext-us": {"retains_data": True, "trains_on_data": True, "healthy": False, "context_window": 1000},
        },
        "order": ("local-eu", "ext-us"),
        "eligible": ["local-eu"],
        "excluded": {
            "ext-us": [
                "context window of 1000 tokens is smaller than the request's estimated 1100 tokens",
                "unhealthy",
                "lacks the required capability vision",
                "retains submitted data",
                "trains on submitted data",
                LOCALITY_CONF,
            ],
        },
    },
    {
        "name": "eligible_keeps_the_input_order",
        "level": "public",
        "order": ("ext-us", "local-eu", "ext-eu"),
        "eligible": ["ext-us", "local-eu", "ext-eu"],
        "excluded": {},
    },
    {
        "name": "eligible_keeps_the_input_order_after_exclusions",
        "level": "internal",
        "order": ("ext-eu", "ext-us", "local-eu"),
        "eligible": ["ext-eu", "local-eu"],
        "excluded": {"ext-us": ["jurisdiction US"]},
    },
]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_routing_policy_case(routing_engine: EmbeddedEngine, case: Case) -> None:
    policy_input = make_input(
        level=case.get("level", "public"),
        allowed=case.get("allowed"),
        request=case.get("request"),
        deployments=case.get("deployments"),
        order=case.get("order", DEPLOYMENT_ORDER),
    )
    decision = await routing_engine.decide(policy_input)

    assert list(decision.eligible) == case["eligible"]
    assert decision.allow is bool(case["eligible"])
    assert set(decision.excluded) == set(case["excluded"])
    for dep_id, expected in case["excluded"].items():
        reasons = decision.excluded[dep_id]
        assert len(reasons) == len(expected), (dep_id, reasons)
        for fragment in expected:
            assert sum(fragment in r for r in reasons) == 1, (dep_id, fragment, reasons)
        assert reasons == sorted(reasons), "reasons per deployment are sorted"
    # No id is both eligible and excluded, and every offered id is one or the other.
    offered = {d["id"] for d in policy_input["deployments"]}
    assert set(decision.eligible).isdisjoint(decision.excluded)
    assert set(decision.eligible) | set(decision.excluded) == offered


async def test_routing_policy_full_decision_text_for_confidential_data(routing_engine: EmbeddedEngine) -> None:
    decision = await routing_engine.decide(make_input(level="confidential"))

    assert decision.allow is True
    assert decision.eligible == ("local-eu",)
    assert decision.excluded == {
        "ext-eu": ['locality external is not allowed for confidential data (allowed: ["local"])'],
        "ext-us": ['locality external is not allowed for confidential data (allowed: ["local"])'],
    }
    assert decision.obligations == {}
    assert decision.reasons == ("1 of 3 deployments eligible for confidential data",)
    assert decision.engine == "embedded"
    assert decision.revision == routing_engine.revision
    assert decision.eval_ms > 0


async def test_routing_policy_denies_with_readable_reason_when_nothing_is_eligible(
    routing_engine: EmbeddedEngine,
) -> None:
    decision = await routing_engine.decide(make_input(level="internal", allowed={"public": {"any": True}}))

    assert decision.allow is False
    assert decision.eligible == ()
    assert decision.reasons == ("no deployment is eligible for this request",)
    assert decision.excluded["ext-us"] == [NO_RULE_INTERNAL]


@pytest.mark.parametrize("rule", [{"any": False}, {}], ids=["any_false", "empty"])
async def test_residency_rule_without_constraints_fails_closed(
    routing_engine: EmbeddedEngine, rule: dict[str, Any]
) -> None:
    decision = await routing_engine.decide(make_input(level="restricted", allowed={"restricted": rule}))

    assert decision.allow is False and "ext-us" not in decision.eligible
    assert "lists no allowed locality or jurisdiction" in decision.excluded["ext-us"][0]


async def test_routing_policy_with_no_deployments_denies(routing_engine: EmbeddedEngine) -> None:
    decision = await routing_engine.decide(make_input(order=()))

    assert decision.allow is False
    assert decision.excluded == {}
    assert decision.reasons == ("no deployment is eligible for this request",)


# ---------------------------------------------------------------------------------------------
# Fail closed: every malformed decision is a deny naming its cause
# ---------------------------------------------------------------------------------------------

HEADER = "package gateway.routing\n"

MALFORMED_POLICIES: list[tuple[str, str, str]] = [
    # (id, decision source, expected reason fragment)
    ("bare_false", "decision := false", "policy decision is a bool, not an object"),
    ("bare_true", "decision := true", "policy decision is a bool, not an object"),
    ("undefined_no_decision_rule", "other := 1", "policy decision is undefined"),
    ("undefined_rule_body_fails", 'decision := {"allow": true} if { 1 == 2 }', "policy decision is undefined"),
    ("string", 'decision := "allow"', "policy decision is a str, not an object"),
    ("array", 'decision := ["ext-eu"]', "policy decision is a list, not an object"),
    ("number", "decision := 1", "policy decision is a int, not an object"),
    ("allow_missing", 'decision := {"eligible": ["ext-eu"]}', "policy decision has no boolean 'allow'"),
    ("allow_string", 'decision := {"allow": "true", "eligible": ["ext-eu"]}', "no boolean 'allow'"),
    ("allow_number", 'decision := {"allow": 1, "eligible": ["ext-eu"]}', "no boolean 'allow'"),
    (
        "eligible_not_offered",
        'decision := {"allow": true, "eligible": ["ext-eu", "ghost"]}',
        "policy decision names deployments that were not offered: ['ghost']",
    ),
    (
        "allow_with_empty_eligible",
        'decision := {"allow": true, "eligible": []}',
        "policy allowed the request but listed no eligible deployment",
    ),
    ("allow_without_eligible_key", 'decision := {"allow": true}', "listed no eligible deployment"),
    (
        "eligible_not_a_list",
        'decision := {"allow": true, "eligible": "ext-eu"}',
        "policy decision 'eligible' is not a list of deployment ids",
    ),
    (
        "excluded_not_an_object",
        'decision := {"allow": false, "excluded": ["ext-us"]}',
        "policy decision 'excluded' is not an object of reason lists",
    ),
    (
        "excluded_reasons_not_strings",
        'decision := {"allow": false, "excluded": {"ext-us": [1]}}',
        "'excluded' is not an object of reason lists",
    ),
    (
        "reasons_not_a_list",
        'decision := {"allow": true, "eligible": ["ext-eu"], "reasons": "fine"}',
        "'reasons' or 'obligations' is malformed",
    ),
]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [pytest.param(body, fragment, id=case_id) for case_id, body, fragment in MALFORMED_POLICIES],
)
async def test_malformed_decision_from_rego_is_a_deny_naming_the_cause(body: str, fragment: str) -> None:
    decision = await decide_with(HEADER + body)

    assert decision.allow is False
    assert decision.eligible == ()
    assert len(decision.reasons) == 1
    assert fragment in decision.reasons[0]
    assert decision.reasons[0].endswith("(treated as deny)")
    assert decision.engine == "embedded"
    assert decision.revision == bundle_of(HEADER + body).revision


async def test_policy_in_another_package_is_undefined_and_denied() -> None:
    decision = await decide_with('package other\ndecision := {"allow": true, "eligible": ["ext-eu"]}')

    assert decision.allow is False
    assert decision.reasons == ("policy decision is undefined (treated as deny)",)


async def test_well_formed_custom_decision_is_accepted() -> None:
    body = (
        'decision := {"allow": true, "eligible": ["ext-eu"], "excluded": {"ext-us": ["no"]},'
        ' "obligations": {"redact": true}, "reasons": ["ok"]}'
    )
    decision = await decide_with(HEADER + body)

    assert decision.allow is True
    assert decision.eligible == ("ext-eu",)
    assert decision.excluded == {"ext-us": ["no"]}
    assert decision.obligations == {"redact": True}
    assert decision.reasons == ("ok",)


async def test_deny_with_eligible_ids_drops_them() -> None:
    decision = await decide_with(HEADER + 'decision := {"allow": false, "eligible": ["ext-eu"], "reasons": ["no"]}')

    assert decision.allow is False
    assert decision.eligible == ()
    assert decision.reasons == ("no",)


def test_regopy_bare_query_of_false_rule_is_undefined_but_bundle_entrypoint_returns_false() -> None:
    """Pins the regopy trait from DESIGN.md and how it differs for the bundle entrypoint."""
    rego = Interpreter()
    rego.add_module("x.rego", HEADER + "decision := false")
    assert str(rego.query("data.gateway.routing.decision")).strip() == "undefined"

    bundle = rego.build(None, [ENTRYPOINT])
    rego.set_input_term("{}")
    output = rego.query_bundle_entrypoint(bundle, ENTRYPOINT)
    assert output.ok()
    assert str(output) == '{"expressions":[false]}'


def _parse(raw: Any, offered: tuple[str, ...] = ("a", "b")) -> Decision:
    return parse_decision(raw, offered=offered, engine="test", revision="sha256:" + "0" * 64, eval_ms=1.5)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param(None, "policy decision is undefined", id="none"),
        pytest.param(False, "is a bool, not an object", id="false"),
        pytest.param(0.5, "is a float, not an object", id="float"),
        pytest.param("unparseable engine output", "is a str, not an object", id="string"),
        pytest.param([{"allow": True}], "is a list, not an object", id="list"),
        pytest.param({}, "no boolean 'allow'", id="empty_object"),
        pytest.param({"allow": None, "eligible": ["a"]}, "no boolean 'allow'", id="allow_null"),
        pytest.param({"allow": 1, "eligible": ["a"]}, "no boolean 'allow'", id="allow_int"),
        pytest.param({"allow": True, "eligible": None}, "'eligible' is not a list", id="eligible_null"),
        pytest.param({"allow": True, "eligible": ["a", 2]}, "'eligible' is not a list", id="eligible_non_string"),
        pytest.param({"allow": True, "eligible": ("a",)}, "'eligible' is not a list", id="eligible_tuple"),
        pytest.param({"allow": False, "excluded": None}, "'excluded' is not an object", id="excluded_null"),
        pytest.param({"allow": False, "excluded": {"a": "x"}}, "'excluded' is not an object", id="excluded_str"),
        pytest.param({"allow": False, "reasons": [1]}, "'reasons' or 'obligations'", id="reasons_non_string"),
        pytest.param({"allow": False, "obligations": []}, "'reasons' or 'obligations'", id="obligations_list"),
        pytest.param({"allow": True, "eligible": ["a", "c"]}, "not offered: ['c']", id="eligible_not_offered"),
        pytest.param({"allow": True, "eligible": []}, "listed no eligible deployment", id="allow_empty"),
    ],
)
def test_parse_decision_fails_closed_naming_the_cause(raw: Any, fragment: str) -> None:
    decision = _parse(raw)

    assert decision.allow is False
    assert decision.eligible == ()
    assert decision.excluded == {}
    assert decision.obligations == {}
    assert len(decision.reasons) == 1
    assert fragment in decision.reasons[0]
    assert decision.reasons[0].endswith("(treated as deny)")
    assert (decision.engine, decision.revision, decision.eval_ms) == ("test", "sha256:" + "0" * 64, 1.5)


def test_parse_decision_exact_texts() -> None:
    assert _parse(None).reasons == ("policy decision is undefined (treated as deny)",)
    assert _parse(False).reasons == ("policy decision is a bool, not an object (treated as deny)",)
    assert _parse({"allow": True, "eligible": ["x"]}).reasons == (
        "policy decision names deployments that were not offered: ['x'] (treated as deny)",
    )


def test_parse_decision_accepts_the_contract_shape_and_fills_defaults() -> None:
    decision = _parse({"allow": True, "eligible": ["b", "a"]})

    assert decision.allow is True
    assert decision.eligible == ("b", "a")
    assert decision.excluded == {}
    assert decision.obligations == {}
    assert decision.reasons == ()


def test_parse_decision_with_nothing_offered_denies_any_eligible() -> None:
    decision = _parse({"allow": True, "eligible": ["a"]}, offered=())

    assert decision.allow is False
    assert "not offered" in decision.reasons[0]


# ---------------------------------------------------------------------------------------------
# Load-time refusal
# ---------------------------------------------------------------------------------------------


def test_policy_calling_unimplemented_builtin_is_refused_naming_it() -> None:
    source = HEADER + 'decision := {"allow": net.cidr_contains("10.0.0.0/8", input.ip)}'

    with pytest.raises(PolicyLoadError, match=r"does not implement: \['net\.cidr_contains'\]"):
        EmbeddedEngine(bundle_of(source))


def test_every_unimplemented_builtin_is_named_once() -> None:
    source = HEADER + (
        'a := net.cidr_contains("10.0.0.0/8", input.ip)\n'
        'b := net.cidr_contains("10.0.0.0/8", input.other)\n'
        'c := http.send({"method": "get", "url": "http://x"})\n'
        'decision := {"allow": a == b}'
    )
    with pytest.raises(PolicyLoadError) as info:
        check_bundle(bundle_of(source))

    assert "['http.send', 'net.cidr_contains']" in str(info.value)


def test_policy_that_does_not_compile_is_refused() -> None:
    with pytest.raises(PolicyLoadError, match="policy does not compile"):
        EmbeddedEngine(bundle_of(HEADER + 'decision := {"allow": true'))


def test_policy_load_error_is_a_value_error() -> None:
    assert issubclass(PolicyLoadError, ValueError)


async def test_policy_defining_and_calling_its_own_function_is_accepted() -> None:
    source = HEADER + (
        "double(x) := y if {\n\ty := x * 2\n}\n"
        "f(x) := x + 1\n"
        'decision := {"allow": true, "eligible": ["ext-eu"], "reasons": [sprintf("%d", [f(double(2))])]}'
    )
    decision = await decide_with(source)

    assert decision.allow is True
    assert decision.reasons == ("5",)


async def test_policy_calling_a_function_by_its_data_path_is_accepted() -> None:
    bundle = PolicyBundle(
        {
            "lib.rego": "package lib\n\ninc(x) := x + 1\n",
            "x.rego": HEADER + 'decision := {"allow": data.lib.inc(1) == 2, "eligible": ["ext-eu"]}',
        }
    )
    engine = EmbeddedEngine(bundle)
    try:
        decision = await engine.decide(make_input())
    finally:
        await engine.aclose()

    assert decision.allow is True


def test_function_names_in_strings_and_comments_do_not_count() -> None:
    source = HEADER + (
        "# net.cidr_contains(a, b) would not be evaluated by regopy\n"
        'note := "call http.send(x) here"\n'
        "raw := `net.cidr_merge(x)`\n"
        'escaped := "quote \\" then net.lookup_ip_addr(x)"\n'
        'decision := {"allow": false, "reasons": [note, raw, escaped]}  # trailing graph.parse(x)\n'
    )
    check_bundle(bundle_of(source))  # does not raise


async def test_shipped_routing_policy_loads() -> None:
    bundle = load_bundle(POLICY_DIR)
    check_bundle(bundle)
    assert {"decision.rego", "residency.rego", "killswitch.rego"} <= set(bundle.modules)
    assert bundle.data["killswitch"] == {"external_egress_blocked": False}


# ---------------------------------------------------------------------------------------------
# Engine errors and timeouts: PolicyUnavailable (503)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            'decision := {"allow": true, "eligible": ["ext-eu"]} if true\ndecision := {"allow": false} if true',
            id="complete_rule_conflict",
        ),
        pytest.param('decision := {"allow": x}\nx := 1 if true\nx := 2 if true', id="helper_rule_conflict"),
        pytest.param('decision := {k: v | some v in [1, 2]; k := "a"}', id="object_key_conflict"),
    ],
)
async def test_runtime_conflict_makes_output_not_ok_and_raises_policy_unavailable(body: str) -> None:
    # regopy answers a conflict with output.ok() == False and str(output) == "<error>".
    with pytest.raises(PolicyUnavailable, match=r"policy evaluation failed \(denied\): <error>") as info:
        await decide_with(HEADER + body)

    assert info.value.status == 503
    assert info.value.code == "policy_unavailable"
    assert info.value.outcome == "denied"


async def test_runtime_error_term_in_result_raises_policy_unavailable() -> None:
    # regopy 1.5.2: 1/0 leaves ok() True but an "(error ...)" term inside the printed JSON, which
    # regopy's own Output() fails to parse (JSONDecodeError) -> engine error -> 503, not an allow.
    with pytest.raises(PolicyUnavailable, match="policy evaluation failed"):
        await decide_with(HEADER + 'decision := {"allow": 1 / 0, "eligible": ["ext-eu"]}')


async def test_tiny_timeout_raises_policy_unavailable() -> None:
    # The policy takes ~200 ms, so the 1 us deadline passes first even on a loaded machine (a
    # trivial policy could finish in the worker thread before the loop ran the deadline timer,
    # and a result that is there by then is used).
    source = HEADER + 'decision := {"allow": count([x | some x in numbers.range(1, 20000); x % 7 == 0]) < 0}'
    with pytest.raises(PolicyUnavailable, match=r"policy evaluation exceeded 0\.001 ms \(denied\)") as info:
        await decide_with(source, timeout_ms=0.001)

    assert info.value.status == 503


async def test_slow_policy_times_out_and_raises_policy_unavailable() -> None:
    # ~200 ms of evaluation (numbers.range comprehension) against a 20 ms deadline.
    source = HEADER + 'decision := {"allow": count([x | some x in numbers.range(1, 20000); x % 7 == 0]) < 0}'
    with pytest.raises(PolicyUnavailable, match=r"exceeded 20 ms") as info:
        await decide_with(source, timeout_ms=20.0, threads=1)

    assert info.value.status == 503


# ---------------------------------------------------------------------------------------------
# Revisions and bundle loading
# ---------------------------------------------------------------------------------------------

REVISION = re.compile(r"^sha256:[0-9a-f]{64}$")


def test_revision_is_sha256_and_stable_for_the_same_files(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text(HEADER + "x := 1\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.rego").write_text("package lib\ny := 2\n", encoding="utf-8")

    first = load_bundle(tmp_path)
    second = load_bundle(tmp_path)

    assert REVISION.match(first.revision)
    assert first.revision == second.revision
    assert set(first.modules) == {"a.rego", str(Path("sub") / "b.rego")}
    # Insertion order of modules does not matter.
    assert (
        PolicyBundle({"b.rego": "B", "a.rego": "A"}).revision == PolicyBundle({"a.rego": "A", "b.rego": "B"}).revision
    )


def test_revision_changes_when_one_byte_changes(tmp_path: Path) -> None:
    policy = tmp_path / "a.rego"
    policy.write_text(HEADER + "x := 1\n", encoding="utf-8")
    before = load_bundle(tmp_path).revision
    policy.write_text(HEADER + "x := 2\n", encoding="utf-8")
    after = load_bundle(tmp_path).revision

    assert REVISION.match(after)
    assert before != after


def test_revision_covers_file_names() -> None:
    assert PolicyBundle({"a.rego": "same"}).revision != PolicyBundle({"b.rego": "same"}).revision
    # name/source boundaries are delimited: moving bytes between them changes the revision
    assert PolicyBundle({"ab": "c"}).revision != PolicyBundle({"a": "bc"}).revision


def test_load_bundle_ignores_rego_test_files(tmp_path: Path) -> None:
    (tmp_path / "routing.rego").write_text(HEADER + "x := 1\n", encoding="utf-8")
    without_tests = load_bundle(tmp_path).revision
    (tmp_path / "routing_test.rego").write_text("package gateway.routing_test\ntest_x if true\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not rego", encoding="utf-8")

    bundle = load_bundle(tmp_path)

    assert list(bundle.modules) == ["routing.rego"]
    assert bundle.revision == without_tests


def test_load_bundle_without_policies_raises_value_error(tmp_path: Path) -> None:
    (tmp_path / "only_test.rego").write_text("package x\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"no \.rego files"):
        load_bundle(tmp_path)


def test_engine_revision_is_the_bundle_revision() -> None:
    bundle = load_bundle(POLICY_DIR)
    engine = EmbeddedEngine(bundle)
    try:
        assert engine.revision == bundle.revision
        assert REVISION.match(engine.revision)
        assert engine.name == "embedded"
    finally:
        asyncio.run(engine.aclose())


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


async def test_fifty_concurrent_decisions_on_two_threads_agree() -> None:
    engine = EmbeddedEngine(load_bundle(POLICY_DIR), timeout_ms=10_000.0, threads=2)
    policy_input = make_input(level="internal", deployments={"ext-eu": {"retains_data": True}})
    try:
        decisions = await asyncio.gather(*(engine.decide(policy_input) for _ in range(50)))
    finally:
        await engine.aclose()

    assert len(decisions) == 50
    views = {(d.allow, d.eligible, repr(d.excluded), d.reasons, d.revision) for d in decisions}
    assert len(views) == 1
    first = decisions[0]
    assert first.allow is True
    assert first.eligible == ("local-eu", "ext-eu")
    assert set(first.excluded) == {"ext-us"}


async def test_concurrent_decisions_on_different_inputs_do_not_mix(routing_engine: EmbeddedEngine) -> None:
    levels = ["public", "internal", "confidential"] * 10
    decisions = await asyncio.gather(*(routing_engine.decide(make_input(level=lv)) for lv in levels))

    expected = {
        "public": ("local-eu", "ext-eu", "ext-us"),
        "internal": ("local-eu", "ext-eu"),
        "confidential": ("local-eu",),
    }
    for level, decision in zip(levels, decisions, strict=True):
        assert decision.eligible == expected[level]
        assert decision.reasons[0].endswith(f"eligible for {level} data")


# ---------------------------------------------------------------------------------------------
# Undefined values exclude, never include (an overflowing token count once made the context
# rule undefined and let a 2,048-token model take a request of 2^63 tokens).


@pytest.mark.parametrize("max_output", [2**63 - 1, 2**64 + 5, 10**30])
async def test_token_estimate_out_of_range_excludes_every_deployment(
    routing_engine: EmbeddedEngine, max_output: int
) -> None:
    decision = await routing_engine.decide(make_input(request={"max_output_tokens": max_output}))

    assert decision.allow is False
    for reasons in decision.excluded.values():
        assert any("missing or out of range" in r or "is smaller than the request's estimated" in r for r in reasons)


@pytest.mark.parametrize(
    "field", ["trains_on_data", "retains_data", "healthy", "context_window", "locality", "jurisdiction", "capabilities"]
)
async def test_missing_deployment_attribute_excludes_it(routing_engine: EmbeddedEngine, field: str) -> None:
    level = "internal" if field == "jurisdiction" else "confidential"
    inp = make_input(level=level, request={"needs": ["stream"]})
    local = next(d for d in inp["deployments"] if d["locality"] == "local")
    local["capabilities"] = ["stream"]
    del local[field]

    decision = await routing_engine.decide(inp)

    assert local["id"] not in decision.eligible
    assert decision.excluded[local["id"]]


async def test_unknown_data_level_excludes_every_deployment(routing_engine: EmbeddedEngine) -> None:
    inp = make_input()
    inp["data"]["level"] = "top-secret"

    decision = await routing_engine.decide(inp)

    assert decision.allow is False
    assert all(any("data level is unknown" in r for r in rs) for rs in decision.excluded.values())
