"""gateway/routing.py: ordering the policy's eligible deployments into a fallback plan."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.config import DeploymentConfig, Price
from gateway.routing import estimated_cost_usd, plan

STRATEGIES = ("cost", "weighted", "ordered")


def dep(dep_id: str, *, inp: float = 1.0, out: float = 1.0, weight: float = 1.0) -> DeploymentConfig:
    return DeploymentConfig(
        id=dep_id,
        adapter="openai_compat",
        model="some-model",
        api_base="http://127.0.0.1:9/v1",
        locality="external",
        jurisdiction="EU",
        region="eu-1",
        context_window=8192,
        price=Price(input_per_mtok=inp, output_per_mtok=out),
        weight=weight,
    )


def ids(deployments: list[DeploymentConfig]) -> list[str]:
    return [d.id for d in deployments]


def run_plan(
    candidates: list[DeploymentConfig],
    eligible: list[str],
    strategy: str,
    *,
    est_input_tokens: int = 1000,
    max_output_tokens: int = 100,
    seed: int = 0,
) -> list[str]:
    return ids(
        plan(
            candidates,
            eligible,
            strategy=strategy,
            est_input_tokens=est_input_tokens,
            max_output_tokens=max_output_tokens,
            rng=random.Random(seed),
        )
    )


def weighted(candidates: list[DeploymentConfig], eligible: list[str], rng: random.Random) -> list[str]:
    """One weighted plan drawn from ``rng`` (shared across draws)."""
    return ids(plan(candidates, eligible, strategy="weighted", est_input_tokens=1, max_output_tokens=1, rng=rng))


# --- cost -----------------------------------------------------------------------------------


def test_estimated_cost_uses_input_and_output_prices_per_million_tokens() -> None:
    d = dep("a", inp=1.0, out=10.0)

    assert estimated_cost_usd(d, input_tokens=1000, output_tokens=100) == pytest.approx(0.002)
    assert estimated_cost_usd(d, input_tokens=0, output_tokens=0) == 0.0


def test_cost_orders_cheapest_estimated_cost_first() -> None:
    # est 1000 in / 100 out: a = 1000*1 + 100*10 = 2000; b = 3000*1 = 3000; c = 500 + 2000 = 2500
    candidates = [dep("b", inp=3.0, out=0.0), dep("c", inp=0.5, out=20.0), dep("a", inp=1.0, out=10.0)]

    assert run_plan(candidates, ["a", "b", "c"], "cost") == ["a", "c", "b"]


def test_cost_weighs_max_output_tokens_with_the_output_price() -> None:
    # cheap input / pricey output vs the reverse: which is cheaper depends on the token mix.
    input_heavy = dep("input-cheap", inp=0.1, out=50.0)
    output_cheap = dep("output-cheap", inp=5.0, out=0.1)
    candidates = [input_heavy, output_cheap]

    long_prompt = run_plan(candidates, ["input-cheap", "output-cheap"], "cost", est_input_tokens=10_000)
    long_answer = run_plan(
        candidates, ["input-cheap", "output-cheap"], "cost", est_input_tokens=10, max_output_tokens=4000
    )

    assert long_prompt == ["input-cheap", "output-cheap"]
    assert long_answer == ["output-cheap", "input-cheap"]


def test_cost_ties_keep_alias_order() -> None:
    candidates = [dep("z", inp=1.0, out=1.0), dep("pricey", inp=9.0, out=9.0), dep("a", inp=1.0, out=1.0)]

    assert run_plan(candidates, ["a", "pricey", "z"], "cost") == ["z", "a", "pricey"]


def test_cost_free_local_deployment_goes_first() -> None:
    candidates = [dep("ext", inp=0.15, out=0.6), dep("local", inp=0.0, out=0.0)]

    assert run_plan(candidates, ["ext", "local"], "cost") == ["local", "ext"]


# --- ordered --------------------------------------------------------------------------------


def test_ordered_keeps_alias_order_whatever_the_eligible_order() -> None:
    candidates = [dep("first", inp=9.0), dep("second", inp=0.0), dep("third", inp=5.0)]

    assert run_plan(candidates, ["third", "second", "first"], "ordered") == ["first", "second", "third"]


def test_ordered_skips_ineligible_candidates() -> None:
    candidates = [dep("first"), dep("second"), dep("third")]

    assert run_plan(candidates, ["third", "first"], "ordered") == ["first", "third"]


# --- weighted -------------------------------------------------------------------------------


def test_weighted_returns_each_eligible_deployment_exactly_once() -> None:
    candidates = [dep("a", weight=3.0), dep("b", weight=1.0), dep("c", weight=2.0), dep("x", weight=5.0)]
    rng = random.Random(7)

    for _ in range(200):
        order = weighted(candidates, ["a", "b", "c"], rng)
        assert sorted(order) == ["a", "b", "c"]


def test_weighted_first_pick_follows_weights() -> None:
    candidates = [dep("heavy", weight=3.0), dep("light", weight=1.0)]
    rng = random.Random(20240611)
    draws = 2000

    firsts = Counter(weighted(candidates, ["heavy", "light"], rng)[0] for _ in range(draws))

    share = firsts["heavy"] / draws
    assert 0.70 <= share <= 0.80, share
    assert firsts["heavy"] + firsts["light"] == draws


def test_weighted_three_way_first_pick_shares() -> None:
    candidates = [dep("a", weight=6.0), dep("b", weight=3.0), dep("c", weight=1.0)]
    rng = random.Random(99)
    draws = 2000

    firsts = Counter(weighted(candidates, ["a", "b", "c"], rng)[0] for _ in range(draws))

    assert 0.55 <= firsts["a"] / draws <= 0.65
    assert 0.25 <= firsts["b"] / draws <= 0.35
    assert 0.05 <= firsts["c"] / draws <= 0.15


def test_weighted_zero_weight_deployment_is_tried_last() -> None:
    candidates = [dep("never-first", weight=0.0), dep("a", weight=1.0), dep("b", weight=1.0)]
    rng = random.Random(3)

    for _ in range(200):
        order = weighted(candidates, ["never-first", "a", "b"], rng)
        assert order[-1] == "never-first"


def test_weighted_is_reproducible_with_the_same_seed() -> None:
    candidates = [dep(f"d{i}", weight=float(i + 1)) for i in range(6)]
    eligible = [d.id for d in candidates]

    assert run_plan(candidates, eligible, "weighted", seed=42) == run_plan(candidates, eligible, "weighted", seed=42)


# --- every strategy -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plan_never_contains_an_id_outside_eligible(strategy: str) -> None:
    candidates = [dep("a", inp=0.0), dep("b", inp=1.0, weight=100.0), dep("c", inp=2.0), dep("d", inp=3.0)]
    eligible = ["c", "a", "ghost"]  # "ghost" is not a candidate; b and d are not eligible

    for seed in range(50):
        order = run_plan(candidates, eligible, strategy, seed=seed)
        assert set(order) == {"a", "c"}
        assert len(order) == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plan_with_nothing_eligible_is_empty(strategy: str) -> None:
    assert run_plan([dep("a"), dep("b")], [], strategy) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plan_with_no_candidates_is_empty(strategy: str) -> None:
    assert run_plan([], ["a"], strategy) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plan_returns_the_deployment_config_objects(strategy: str) -> None:
    a, b = dep("a"), dep("b")

    result = plan([a, b], ["a", "b"], strategy=strategy, est_input_tokens=1, max_output_tokens=1, rng=random.Random(0))

    assert all(any(r is c for c in (a, b)) for r in result)


def test_unknown_strategy_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy 'fastest'"):
        run_plan([dep("a")], ["a"], "fastest")
