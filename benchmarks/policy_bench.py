"""Benchmark (not a test) of policy evaluation: time per decision on a decision-cache miss and
on a hit, with the shipped library (policies/), side by side in one run.

    .venv/bin/python -m benchmarks.policy_bench [--repeat 2000] [--deployments 3]

Rows (each ``--repeat`` timed calls after a warm-up; p50/p90/p99/max in ms):

* ``regopy evaluate``   the bare engine: ``Evaluator.evaluate`` on the calling thread (JSON
  input in, decoded decision out) — the floor of any embedded miss.
* ``engine miss``       ``EmbeddedEngine.decide`` from the event loop: thread-pool hop,
  evaluation, fail-closed parsing — what a request pays without the cache.
* ``cached miss``       ``CachedEngine.decide`` with a distinct input every call (key built,
  miss, inner engine, insert).
* ``cached hit``        ``CachedEngine.decide`` on inputs already cached (the request id
  differs each call, as in real traffic: it is not part of the key).
* ``cache key``         building the key alone (canonical JSON of the input).

Targets (issue 4): miss p99 ≤ 1 ms, hit p99 ≤ 50 µs. Inputs are the policy input of the
table tests (``policies/testdata/input.json``) with ``--deployments`` candidates, varied per
call (max_output_tokens) so misses really miss. Results are printed and written to
``benchmarks/results/policy_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.policy import load_bundle
from gateway.policy.cache import CachedEngine, cache_key
from gateway.policy.embedded import EmbeddedEngine, Evaluator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "policy_bench.json"


def _inputs(n: int, deployments: int) -> list[dict[str, Any]]:
    base = json.loads((ROOT / "policies" / "testdata" / "input.json").read_text())
    template = base["deployments"]
    base["deployments"] = [
        {**template[i % len(template)], "id": f"{template[i % len(template)]['id']}-{i}"} for i in range(deployments)
    ]
    base["data"]["level"] = "internal"
    out = []
    for i in range(n):
        item = json.loads(json.dumps(base))
        item["request"]["id"] = f"req_{i}"
        item["request"]["max_output_tokens"] = 64 + i
        out.append(item)
    return out


def _stats(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "p50_ms": round(statistics.median(ordered), 4),
        "p90_ms": round(pct(0.90), 4),
        "p99_ms": round(pct(0.99), 4),
        "max_ms": round(ordered[-1], 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
    }


def _time_sync(fn: Callable[[dict[str, Any]], Any], inputs: list[dict[str, Any]]) -> list[float]:
    out = []
    for item in inputs:
        started = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - started) * 1000.0)
    return out


async def _time_async(fn: Callable[[dict[str, Any]], Awaitable[Any]], inputs: list[dict[str, Any]]) -> list[float]:
    out = []
    for item in inputs:
        started = time.perf_counter()
        await fn(item)
        out.append((time.perf_counter() - started) * 1000.0)
    return out


async def run(repeat: int, deployments: int) -> dict[str, Any]:
    """Time every row; returns the JSON report."""
    bundle = load_bundle(ROOT / "policies")
    warm = _inputs(50, deployments)
    misses = _inputs(repeat, deployments)
    rows: dict[str, dict[str, float]] = {}

    evaluator = Evaluator(bundle)
    for item in warm:
        evaluator.evaluate(item)
    rows["regopy evaluate"] = _stats(_time_sync(evaluator.evaluate, misses))

    engine = EmbeddedEngine(bundle, threads=2)
    for item in warm:
        await engine.decide(item)
    rows["engine miss"] = _stats(await _time_async(engine.decide, misses))

    cached = CachedEngine(EmbeddedEngine(bundle, threads=2), size=repeat * 2)
    for item in warm:
        await cached.decide(item)
    rows["cached miss"] = _stats(await _time_async(cached.decide, misses))
    hits = [{**item, "request": {**item["request"], "id": f"req_again_{i}"}} for i, item in enumerate(misses)]
    rows["cached hit"] = _stats(await _time_async(cached.decide, hits))
    rows["cache key"] = _stats(_time_sync(lambda item: cache_key(bundle.revision, item), hits))
    stats = cached.stats.as_dict()
    await engine.aclose()
    await cached.aclose()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "revision": bundle.revision,
        "modules": len(bundle.modules),
        "deployments": deployments,
        "repeat": repeat,
        "rows": rows,
        "cache": stats,
        "targets": {
            "miss_p99_ms<=1": rows["cached miss"]["p99_ms"] <= 1.0,
            "hit_p99_ms<=0.05": rows["cached hit"]["p99_ms"] <= 0.05,
        },
    }


def main() -> None:
    """Parse options, run, print a markdown table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--deployments", type=int, default=3)
    args = parser.parse_args()
    report = asyncio.run(run(args.repeat, args.deployments))
    print(f"policy {report['revision'][:19]}… {report['modules']} modules, {args.deployments} deployments")
    print("| row | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, row in report["rows"].items():
        print(f"| {name} | {row['p50_ms']:.4f} | {row['p90_ms']:.4f} | {row['p99_ms']:.4f} | {row['max_ms']:.4f} |")
    print(f"cache: {report['cache']}")
    print(f"targets: {report['targets']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
