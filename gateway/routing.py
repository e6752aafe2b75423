"""Route stage: order the policy's eligible deployments into a fallback plan.

Strategies (per alias in gateway.yaml):

* ``cost`` — cheapest estimated cost first: ``est_input_tokens * input price +
  max_output_tokens * output price`` (USD per million tokens), ties in alias order;
* ``weighted`` — random order drawn by ``weight`` (without replacement);
* ``ordered`` — alias order.

Only eligible deployments ever enter a plan; the executor never steps outside it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gateway.config import DeploymentConfig

__all__ = ["estimated_cost_usd", "plan"]


def estimated_cost_usd(dep: DeploymentConfig, *, input_tokens: int, output_tokens: int) -> float:
    """Cost in USD of ``input_tokens`` + ``output_tokens`` at the deployment's prices."""
    return (input_tokens * dep.price.input_per_mtok + output_tokens * dep.price.output_per_mtok) / 1_000_000


def plan(
    candidates: Sequence[DeploymentConfig],
    eligible: Sequence[str],
    *,
    strategy: str,
    est_input_tokens: int,
    max_output_tokens: int,
    rng: random.Random,
) -> list[DeploymentConfig]:
    """The eligible candidates in the order to try them.

    ``candidates`` are the alias's deployments in alias order; ``eligible`` the policy's ids.
    Raises ValueError for an unknown strategy.
    """
    allowed = set(eligible)
    pool = [d for d in candidates if d.id in allowed]
    if strategy == "ordered":
        return pool
    if strategy == "cost":
        return sorted(
            pool,
            key=lambda d: estimated_cost_usd(d, input_tokens=est_input_tokens, output_tokens=max_output_tokens),
        )
    if strategy == "weighted":
        ordered: list[DeploymentConfig] = []
        remaining = list(pool)
        while remaining:
            weights = [max(d.weight, 1e-9) for d in remaining]
            pick = rng.choices(range(len(remaining)), weights=weights)[0]
            ordered.append(remaining.pop(pick))
        return ordered
    raise ValueError(f"unknown routing strategy {strategy!r}")
