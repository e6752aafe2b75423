"""Circuit breaker per deployment, feeding ``healthy`` into the policy input.

After ``failures`` consecutive retryable failures (connect errors, timeouts, 5xx, 429,
malformed answers) a deployment is open — reported to the policy as not healthy, so no request
goes there — for ``cooldown_s`` seconds. After the cooldown requests may try it again
(half-open): success closes the breaker, failure opens it again at once. A client error (other 4xx) is
the request's fault and does not count. In-process state, one breaker per gateway process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CircuitBreaker"]


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
