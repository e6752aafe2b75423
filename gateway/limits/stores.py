"""Counter stores behind one interface: :class:`MemoryStore` (this process) and
:class:`RedisStore` (shared by every replica).

A store holds float counters by key, each with an absolute expiry (epoch seconds). It knows
nothing about rules: the limiter hands it :class:`Hold` s — (counter key, amount, limit,
expiry) — and the store does two things atomically over all of them at once:

* :meth:`~LimitStore.reserve`: if *every* counter has room (``used + amount <= limit``), add
  every amount; otherwise add nothing and name the first counter without room;
* :meth:`~LimitStore.adjust`: add a (usually negative) delta to each counter — settlement of
  the actual use, or release of a failed request's reservation.

Atomicity: the memory store never awaits inside an operation, so on one event loop no other
request interleaves; the Redis store runs each operation as one Lua script, which Redis
executes without interleaving any other command — two gateway replicas sharing one Redis
cannot both take the last unit. Backend failures raise :class:`StoreUnavailable`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["EPSILON", "Hold", "LimitStore", "MemoryStore", "RedisStore", "StoreUnavailable"]

EPSILON = 1e-9
"""Tolerance of the ``used + amount <= limit`` check (absorbs float rounding of USD sums)."""


class StoreUnavailable(Exception):
    """The store's backend could not be reached or answered an error (message says which)."""


@dataclass(frozen=True)
class Hold:
    """One counter a request reserves on: ``key`` (store key), ``amount`` (requests, tokens or
    USD), ``limit`` (same unit), ``expire_at`` (epoch seconds the counter may be dropped)."""

    key: str
    amount: float
    limit: float
    expire_at: float


class LimitStore(Protocol):
    """What the limiter needs from a store. ``kind`` is ``"memory"`` or ``"redis"``."""

    kind: str

    async def reserve(self, holds: Sequence[Hold], *, now: float) -> int | None:
        """Atomically add every hold's amount if all fit; return None, or the index of the
        first hold that does not fit (then nothing was added). Raises StoreUnavailable."""
        ...

    async def adjust(self, deltas: Sequence[tuple[str, float, float]], *, now: float) -> None:
        """Add ``delta`` to each ``(key, delta, expire_at)`` counter. Raises StoreUnavailable."""
        ...

    async def used(self, key: str, *, now: float) -> float:
        """Current value of one counter (0 when absent or expired). Raises StoreUnavailable."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """Counters in a dict of this process: the embedded default (one replica only).

    Created in the app's lifespan; no module-level state. Expired counters are dropped on a
    sweep every ``sweep_every`` operations.
    """

    kind = "memory"

    def __init__(self, *, sweep_every: int = 1024) -> None:
        self._counters: dict[str, tuple[float, float]] = {}  # key -> (value, expire_at)
        self._ops = 0
        self._sweep_every = sweep_every

    def _value(self, key: str, now: float) -> float:
        value, expire_at = self._counters.get(key, (0.0, math.inf))
        return value if expire_at > now else 0.0

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % self._sweep_every == 0:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}

    async def reserve(self, holds: Sequence[Hold], *, now: float) -> int | None:
        """See :meth:`LimitStore.reserve`. No await inside: atomic on the event loop."""
        self._sweep(now)
        for i, hold in enumerate(holds):
            if self._value(hold.key, now) + hold.amount > hold.limit + EPSILON:
                return i
        for hold in holds:
            self._counters[hold.key] = (self._value(hold.key, now) + hold.amount, hold.expire_at)
        return None

    async def adjust(self, deltas: Sequence[tuple[str, float, float]], *, now: float) -> None:
        """See :meth:`LimitStore.adjust`. A counter whose window has passed is left alone."""
        for key, delta, expire_at in deltas:
            if expire_at > now and key in self._counters:
                self._counters[key] = (self._value(key, now) + delta, expire_at)

    async def used(self, key: str, *, now: float) -> float:
        """See :meth:`LimitStore.used`."""
        return self._value(key, now)

    async def aclose(self) -> None:
        """Nothing to release."""


_RESERVE_LUA = """
-- KEYS[i]: counters. ARGV: amount_1, limit_1, expire_at_ms_1, amount_2, ...; ARGV[#ARGV]: epsilon.
-- All fit: add every amount, return 0. Otherwise add nothing, return the first index without room.
local eps = tonumber(ARGV[#ARGV])
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) + eps then
    return i
  end
end
for i = 1, #KEYS do
  if tonumber(ARGV[3 * i - 2]) ~= 0 or redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[3 * i - 2])
  end
  redis.call('PEXPIREAT', KEYS[i], ARGV[3 * i])
end
return 0
"""

_ADJUST_LUA = """
-- KEYS[i]: counters. ARGV: delta_1, delta_2, ... Counters that expired are left absent.
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[i])
  end
end
return 0
"""


def _num(value: float) -> str:
    """A float as Redis INCRBYFLOAT and Lua ``tonumber`` both read it."""
    return repr(float(value))


class RedisStore:
    """Counters in Redis (redis-py asyncio), one Lua script per operation.

    ``url``: ``redis://host:port/db``. ``timeout_s`` bounds connecting and each command; a
    connection error is retried once (a pooled connection dropped by a Redis restart), then
    raises StoreUnavailable. Keys expire at the end of their window (``PEXPIREAT``). Redis
    Cluster is not supported (a request's counters would span hash slots).
    """

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._redis: Any = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._reserve = self._redis.register_script(_RESERVE_LUA)
        self._adjust = self._redis.register_script(_ADJUST_LUA)

    async def _call(self, script: Any, keys: list[str], args: list[str]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}"[:300]) from exc

    async def reserve(self, holds: Sequence[Hold], *, now: float) -> int | None:
        """See :meth:`LimitStore.reserve`; one Lua script over every counter."""
        if not holds:
            return None
        args: list[str] = []
        for hold in holds:
            args += [_num(hold.amount), _num(hold.limit), str(math.ceil(hold.expire_at * 1000))]
        result = int(await self._call(self._reserve, [h.key for h in holds], [*args, _num(EPSILON)]))
        return None if result == 0 else result - 1

    async def adjust(self, deltas: Sequence[tuple[str, float, float]], *, now: float) -> None:
        """See :meth:`LimitStore.adjust`; counters whose key already expired stay absent."""
        if deltas:
            await self._call(self._adjust, [d[0] for d in deltas], [_num(d[1]) for d in deltas])

    async def used(self, key: str, *, now: float) -> float:
        """See :meth:`LimitStore.used`."""
        from redis.exceptions import RedisError

        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}"[:300]) from exc
        return float(value) if value is not None else 0.0

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
