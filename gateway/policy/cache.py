"""Bounded decision cache in front of a policy engine.

Key: (active policy revision, canonical JSON of the policy input without ``request.id``).
A decision is a pure function of the input and the bundle (modules + data, both covered by the
revision), so a hit returns the same decision the engine would give; an activation changes the
revision and so never serves a stale decision. Engine errors and timeouts are not cached (they
raise PolicyUnavailable every time). Policies that read the clock or randomness
(``time.now_ns``, ``rand.intn``) must run with the cache off (``policy.cache_size: 0``).

LRU eviction at ``size`` entries; hit/miss counters and cumulative evaluation time are kept for
``/healthz`` and the benchmark.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any

import orjson

from gateway.context import Decision
from gateway.policy import PolicyBundle, PolicyEngine

__all__ = ["CacheStats", "CachedEngine", "cache_key"]


def cache_key(revision: str, policy_input: dict[str, Any]) -> bytes:
    """``revision`` + canonical input with ``request.id`` removed (the one per-request field),
    as bytes: JSON with sorted keys (orjson), so equal inputs give equal keys."""
    request = policy_input.get("request")
    if isinstance(request, dict) and "id" in request:
        policy_input = {**policy_input, "request": {k: v for k, v in request.items() if k != "id"}}
    return revision.encode() + b"\n" + orjson.dumps(policy_input, option=orjson.OPT_SORT_KEYS)


@dataclasses.dataclass
class CacheStats:
    """Counters since start: ``hits``, ``misses``, ``evictions``, ``miss_ms`` (total engine
    time of misses, ms), ``hit_ms`` (total lookup time of hits, ms), ``size`` (entries)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    miss_ms: float = 0.0
    hit_ms: float = 0.0
    size: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form with the hit rate (0 to 1) and mean times (ms)."""
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "size": self.size,
            "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            "mean_miss_ms": round(self.miss_ms / self.misses, 4) if self.misses else None,
            "mean_hit_ms": round(self.hit_ms / self.hits, 4) if self.hits else None,
        }


class CachedEngine:
    """A :class:`~gateway.policy.PolicyEngine` that answers repeated inputs from an LRU.

    ``inner``: the engine asked on a miss; ``size``: maximum entries (≥ 1).
    """

    def __init__(self, inner: PolicyEngine, *, size: int) -> None:
        if size < 1:
            raise ValueError("cache size must be at least 1")
        self.inner = inner
        self.name = inner.name
        self._size = size
        self._entries: OrderedDict[bytes, Decision] = OrderedDict()
        self.stats = CacheStats()

    @property
    def revision(self) -> str:
        """The inner engine's active revision."""
        return self.inner.revision

    @property
    def bundle(self) -> PolicyBundle:
        """The inner engine's active bundle."""
        return self.inner.bundle

    async def activate(self, bundle: PolicyBundle) -> None:
        """Activate on the inner engine; entries of other revisions can no longer match and
        are dropped. Raises what the inner engine raises (the active revision stays)."""
        await self.inner.activate(bundle)
        self._entries.clear()
        self.stats.size = 0

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        """Cached decision for ``policy_input``; see the module docstring. Raises
        PolicyUnavailable when the inner engine does (nothing cached then)."""
        started = time.perf_counter()
        key = cache_key(self.inner.revision, policy_input)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            elapsed = (time.perf_counter() - started) * 1000.0
            self.stats.hits += 1
            self.stats.hit_ms += elapsed
            return dataclasses.replace(found, eval_ms=elapsed, cached=True)
        decision = await self.inner.decide(policy_input)
        self.stats.misses += 1
        self.stats.miss_ms += decision.eval_ms
        if not key.startswith(decision.revision.encode() + b"\n"):
            return decision  # activated while evaluating: don't file it under the old revision
        self._entries[key] = decision
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
        self.stats.size = len(self._entries)
        return decision

    async def aclose(self) -> None:
        """Close the inner engine."""
        await self.inner.aclose()
