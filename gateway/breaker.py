"""Circuit breaker per deployment, feeding ``healthy`` into the policy input.

After ``failures`` consecutive retryable failures (connect errors, timeouts, 5xx, 429,
malformed answers) a deployment is open — reported to the policy as not healthy, so no request
goes there — for ``cooldown_s`` seconds. After the cooldown requests may try it again
(half-open): success closes the breaker, failure opens it again at once. A client error (other 4xx) is
the request's fault and does not count.

Two implementations, one interface (``healthy`` / ``success`` / ``failure`` / ``state``, plus
``start`` / ``sync`` / ``aclose`` for the lifespan):

* :class:`CircuitBreaker` — in-process state, one breaker per gateway process (the default).
* :class:`SharedCircuitBreaker` — the state is shared by every replica through Redis (the
  ``limits_store`` Redis when ``limits_store.kind`` is ``redis``; no config section of its
  own). Per deployment Redis holds the consecutive-failure count
  (``<prefix>breaker:<id>:failures``, dropped after a day without failures) and an *open* key
  (``<prefix>breaker:<id>:open``) that expires when the cooldown ends — a TTL, so replicas
  need no synchronised clocks. The per-request check (:meth:`healthy`) never touches Redis:
  it reads this replica's own breaker and a local copy of the shared state, which one
  background task keeps fresh — it writes each failure (and each success after failures) to
  Redis at once, one Lua script / command per event, and re-reads every deployment's shared
  state every ``sync_interval_s`` seconds in one pipelined round trip.

  A deployment is healthy only if *neither* this replica's breaker *nor* the shared one is
  open, so sharing can only exclude more, never less. If Redis cannot be reached, the replica
  logs it once and goes on with its own breaker and the last shared state it read (which
  still expires with its cooldown): the policy is never weakened by a Redis outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CircuitBreaker", "SharedCircuitBreaker"]

log = logging.getLogger(__name__)


@dataclass
class _State:
    consecutive: int = 0
    open_until: float = 0.0


class CircuitBreaker:
    """``failures``: consecutive failures that open the breaker; ``cooldown_s``: seconds it
    stays open; ``clock``: monotonic seconds (injectable for tests)."""

    def __init__(
        self, *, failures: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._states: dict[str, _State] = {}

    def healthy(self, deployment: str) -> bool:
        """False while the breaker is open (no side effects)."""
        state = self._states.get(deployment)
        return state is None or self._clock() >= state.open_until

    def success(self, deployment: str) -> None:
        """A completed answer: close the breaker."""
        self._states.pop(deployment, None)

    def failure(self, deployment: str) -> None:
        """A retryable failure. At the threshold the breaker opens; after the cooldown the
        count is still at the threshold, so the next failure (the half-open probe) reopens it."""
        state = self._states.setdefault(deployment, _State())
        state.consecutive += 1
        if state.consecutive >= self._failures:
            state.open_until = self._clock() + self._cooldown_s

    def state(self, deployment: str) -> str:
        """``closed``, ``open`` or ``half-open`` (for health endpoints and metrics)."""
        state = self._states.get(deployment)
        if state is None or state.consecutive < self._failures:
            return "closed"
        return "open" if self._clock() < state.open_until else "half-open"

    def start(self) -> None:
        """Start background work (none for the in-process breaker)."""

    async def sync(self) -> None:
        """Exchange state with the shared store (nothing to do in-process)."""

    async def aclose(self) -> None:
        """Stop background work and release connections (none in-process)."""


_FAILURE_LUA = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
end
return {n, redis.call('PTTL', KEYS[2])}
"""
"""KEYS: failures counter, open key. ARGV: threshold, cooldown ms, counter TTL ms.
Returns {consecutive failures, open key's remaining ms (-2 when closed)}."""

COUNTER_TTL_MS = 86_400_000
"""A failure count with no failure for a day is dropped (keys do not pile up)."""


class SharedCircuitBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` whose state is also shared through Redis (module docstring).

    ``url``: ``redis://host:port/db``; ``deployments``: the ids whose shared state is read;
    ``prefix``: key prefix (``limits_store.key_prefix``); ``sync_interval_s``: seconds between
    reads of the shared state; ``timeout_s``: bound of each Redis call (seconds); ``redis``:
    an existing redis.asyncio client (tests), else one is created from ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        deployments: Sequence[str],
        prefix: str = "sgw:limits:",
        failures: int = 5,
        cooldown_s: float = 30.0,
        sync_interval_s: float = 1.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        redis: Any = None,
    ) -> None:
        super().__init__(failures=failures, cooldown_s=cooldown_s, clock=clock)
        if redis is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            redis = Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        self._redis: Any = redis
        self._failure_script = self._redis.register_script(_FAILURE_LUA)
        self._deployments = tuple(deployments)
        self._prefix = prefix
        self._sync_interval_s = sync_interval_s
        self._pending: list[tuple[str, bool]] = []  # (deployment, failed), oldest first
        self._shared_open_until: dict[str, float] = {}  # local clock
        self._shared_count: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.available = True
        """Whether the last exchange with Redis succeeded (False: running on local state)."""

    def _keys(self, deployment: str) -> list[str]:
        base = f"{self._prefix}breaker:{deployment}"
        return [f"{base}:failures", f"{base}:open"]

    def _shared_open(self, deployment: str) -> bool:
        return self._clock() < self._shared_open_until.get(deployment, 0.0)

    def healthy(self, deployment: str) -> bool:
        """False while this replica's breaker or the shared one is open (no I/O)."""
        return super().healthy(deployment) and not self._shared_open(deployment)

    def success(self, deployment: str) -> None:
        """Close this replica's breaker; reset the shared count if it is not already zero."""
        super().success(deployment)
        if self._shared_count.get(deployment, 0) or self._shared_open(deployment):
            self._queue(deployment, failed=False)

    def failure(self, deployment: str) -> None:
        """Count the failure here at once and in Redis from the background task."""
        super().failure(deployment)
        self._queue(deployment, failed=True)

    def state(self, deployment: str) -> str:
        """``open`` if either breaker is open, else this replica's state."""
        return "open" if self._shared_open(deployment) else super().state(deployment)

    def _queue(self, deployment: str, *, failed: bool) -> None:
        self._pending.append((deployment, failed))
        self._wake.set()

    async def sync(self) -> None:
        """Write the queued events to Redis, then read every deployment's shared state.

        Never raises: when Redis fails, the events not written stay counted only in this
        replica's breaker, the last shared state read is kept, and the outage is logged once.
        """
        from redis.exceptions import RedisError

        try:
            while self._pending:
                deployment, failed = self._pending[0]
                keys = self._keys(deployment)
                if failed:
                    count, ttl_ms = await self._failure_script(
                        keys=keys, args=[self._failures, int(self._cooldown_s * 1000), COUNTER_TTL_MS]
                    )
                    self._apply(deployment, int(count), int(ttl_ms))
                else:
                    await self._redis.delete(*keys)
                    self._apply(deployment, 0, -2)
                self._pending.pop(0)
            if self._deployments:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for deployment in self._deployments:
                        counter, open_key = self._keys(deployment)
                        pipe.get(counter)
                        pipe.pttl(open_key)
                    answers = await pipe.execute()
                for i, deployment in enumerate(self._deployments):
                    self._apply(deployment, int(answers[2 * i] or 0), int(answers[2 * i + 1]))
        except (RedisError, OSError) as exc:
            self._pending.clear()  # counted locally already; never replayed late into Redis
            if self.available:
                log.warning("circuit breaker: Redis unavailable, each replica uses its own breaker: %s", exc)
            self.available = False
            return
        if not self.available:
            log.warning("circuit breaker: Redis reachable again, breaker state is shared")
        self.available = True

    def _apply(self, deployment: str, count: int, ttl_ms: int) -> None:
        """Record the shared state read from Redis: failure count and open key's TTL (ms;
        negative when absent)."""
        self._shared_count[deployment] = count
        self._shared_open_until[deployment] = self._clock() + ttl_ms / 1000 if ttl_ms > 0 else 0.0

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sync_interval_s)
            self._wake.clear()
            await self.sync()

    def start(self) -> None:
        """Start the background sync task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-breaker-sync")

    async def aclose(self) -> None:
        """Stop the sync task and close the Redis connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose()
