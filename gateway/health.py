"""Background health checks per deployment, feeding ``healthy`` into the policy input.

Every ``interval_s`` seconds one asyncio task probes every deployment at once through its
adapter (:meth:`adapters.base.Adapter.health`: a cheap ``GET .../models``, no prompt, no
tokens), each probe bounded by ``timeout_s``. After ``failures`` consecutive failed probes a
deployment is *unhealthy*: the service reports it to the policy as ``healthy: false`` and the
policy excludes it with a reason, so no request goes there. The first successful probe
brings it back. Deployments start healthy (the first round runs at once at start-up); a
deployment whose API key is not set is not probed (the policy already excludes it).

The request path only reads a dict (:meth:`HealthMonitor.healthy`): no probe ever runs on a
request. Probes carry no request data, so they are not egress of anything a policy guards.
State lives in the monitor, created in ``gateway.main.build_gateway`` and stopped in
``close_gateway``; nothing is module-level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters import Adapter, AdapterError, Target
from gateway.config import DeploymentConfig

__all__ = ["HealthMonitor", "ProbeState"]

log = logging.getLogger(__name__)


@dataclass
class ProbeState:
    """One deployment's probe history: ``consecutive_failures`` since the last success,
    ``healthy`` (False once that count reaches the threshold), ``last_error`` (short text of
    the last failure, None after a success), ``checked_at`` (epoch seconds of the last probe)."""

    consecutive_failures: int = 0
    healthy: bool = True
    last_error: str | None = None
    checked_at: float | None = None


class HealthMonitor:
    """Probes ``deployments`` through ``adapters`` (kind → adapter).

    ``interval_s``: seconds between rounds; ``timeout_s``: bound of one probe (seconds);
    ``failures``: consecutive failed probes that make a deployment unhealthy; ``enabled``:
    False makes :meth:`start` a no-op and every deployment healthy.
    """

    def __init__(
        self,
        deployments: Sequence[DeploymentConfig],
        adapters: Mapping[str, Adapter],
        *,
        interval_s: float = 30.0,
        timeout_s: float = 3.0,
        failures: int = 2,
        enabled: bool = True,
    ) -> None:
        self._deployments = tuple(deployments)
        self._adapters = adapters
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failures = failures
        self.enabled = enabled
        self._states: dict[str, ProbeState] = {d.id: ProbeState() for d in self._deployments}
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        """Completed probe rounds (for tests and metrics)."""

    def healthy(self, deployment: str) -> bool:
        """False once the deployment failed ``failures`` probes in a row (no I/O)."""
        state = self._states.get(deployment)
        return state is None or state.healthy

    def state(self, deployment: str) -> dict[str, Any]:
        """The probe state as a JSON-able dict (for health endpoints)."""
        state = self._states.get(deployment, ProbeState())
        return {
            "healthy": state.healthy,
            "consecutive_failures": state.consecutive_failures,
            "last_error": state.last_error,
            "checked_at": state.checked_at,
        }

    async def probe(self, dep: DeploymentConfig) -> None:
        """Probe one deployment and update its state. Never raises (a probe that raises
        anything, or overruns its timeout, is a failed probe)."""
        if not dep.credentials_present():
            return
        target = Target(
            deployment_id=dep.id,
            model=dep.model,
            api_base=dep.api_base,
            api_key=dep.api_key(),
            timeout_s=self._timeout_s,
        )
        error: str | None = None
        try:
            # the adapter bounds its own call; this outer bound catches one that does not
            await asyncio.wait_for(self._adapters[dep.adapter].health(target), self._timeout_s + 1.0)
        except AdapterError as exc:
            error = f"{exc.error_class}: {exc.message}"[:300]
        except TimeoutError:
            error = f"timeout: no answer within {self._timeout_s:g}s"
        except Exception as exc:  # a probe must never kill the loop; count it as a failure
            error = f"probe_error: {type(exc).__name__}: {exc}"[:300]
        state = self._states.setdefault(dep.id, ProbeState())
        state.checked_at = time.time()
        if error is None:
            if not state.healthy:
                log.warning("deployment %s is healthy again (health probe succeeded)", dep.id)
            state.consecutive_failures, state.healthy, state.last_error = 0, True, None
            return
        state.consecutive_failures += 1
        state.last_error = error
        if state.healthy and state.consecutive_failures >= self._failures:
            state.healthy = False
            log.warning(
                "deployment %s is unhealthy after %d failed health probes: %s",
                dep.id,
                state.consecutive_failures,
                error,
            )

    async def probe_all(self) -> None:
        """One round: probe every deployment concurrently."""
        await asyncio.gather(*(self.probe(d) for d in self._deployments))
        self.rounds += 1

    async def _run(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        """Start the background task on the running loop (idempotent; no-op when disabled)."""
        if self.enabled and self._task is None and self._deployments:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-health-checks")

    async def aclose(self) -> None:
        """Stop the background task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
