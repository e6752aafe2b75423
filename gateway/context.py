"""Typed values that flow through the request pipeline, stage to stage.

authenticate → :class:`Principal`; classify → :class:`Classification`; decide →
:class:`Decision`; execute → :class:`Attempt` list; all carried by :class:`RequestContext`,
which the audit stage turns into one record. No stage reaches back into an earlier one.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.limits import Admission

__all__ = [
    "Attempt",
    "Classification",
    "DataLevel",
    "Decision",
    "Principal",
    "RequestContext",
]


class DataLevel(enum.IntEnum):
    """Data classification levels, ordered: public < internal < confidential < restricted."""

    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3

    @property
    def label(self) -> str:
        """The lowercase wire name (``"confidential"``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> DataLevel:
        """Parse a wire name (case-insensitive). Raises ValueError for anything else."""
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(level.label for level in cls)
            raise ValueError(f"unknown data level {value!r}; expected one of {names}") from None


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the API key. ``key_id`` is an id, never the key.

    ``all_tenants``: an auditor key not bound to its tenant (sees every tenant's records).
    ``allowed_models``: model names the key may request (None: all).
    """

    tenant: str
    key_id: str
    roles: tuple[str, ...]
    home_region: str
    all_tenants: bool = False
    allowed_models: tuple[str, ...] | None = None

    def policy_view(self) -> dict[str, Any]:
        """The ``input.principal`` object of the policy contract."""
        return {
            "tenant": self.tenant,
            "key_id": self.key_id,
            "roles": list(self.roles),
            "home_region": self.home_region,
        }


@dataclass(frozen=True)
class Classification:
    """Result of the classify stage.

    ``level`` = max(tenant floor, detected, declared): a declaration may raise, never lower.
    ``labels`` are dotted label names (``pii.email``), ``label_counts`` matches per label;
    never the matched values.
    """

    level: DataLevel
    detected: DataLevel
    declared: DataLevel | None
    labels: tuple[str, ...] = ()
    detector_error: str | None = None
    label_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """A well-formed policy decision (``data.gateway.routing.decision``).

    ``eligible`` lists deployment ids in policy order; ``excluded`` maps id → reasons
    (sentences an auditor can read); ``rules`` maps id → short names of the rules that
    excluded it (their METADATA ``custom.short_name``). ``revision`` is the sha256 of the policy
    bundle; ``eval_ms`` the evaluation time (ms); ``cached``: answered by the decision cache.
    """

    allow: bool
    eligible: tuple[str, ...]
    excluded: dict[str, list[str]]
    obligations: dict[str, Any]
    reasons: tuple[str, ...]
    engine: str
    revision: str
    eval_ms: float
    rules: dict[str, list[str]] = field(default_factory=dict)
    cached: bool = False


@dataclass
class Attempt:
    """One upstream try: deployment id; outcome ``ok``, ``error``, ``streaming`` (a stream
    still being relayed), ``partial`` (a stream that broke after its first chunk) or
    ``cancelled`` (the client went away); latency in ms; the upstream's HTTP status and an
    error text when it failed."""

    deployment: str
    outcome: str
    latency_ms: float
    status: int | None = None
    error: str | None = None
    ended_ns: int = field(default_factory=time.time_ns, compare=False)  # wall clock, for its span

    def as_record(self) -> dict[str, Any]:
        """JSON form for the audit record."""
        return {
            "deployment": self.deployment,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 1),
            "status": self.status,
            "error": self.error,
        }


@dataclass
class RequestContext:
    """Everything the pipeline learned about one request; the audit stage records it."""

    endpoint: str
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")
    started: float = field(default_factory=time.perf_counter)
    created_at: float = field(default_factory=time.time)
    principal: Principal | None = None
    requested_model: str | None = None
    classification: Classification | None = None
    decision: Decision | None = None
    chosen: str | None = None
    chosen_jurisdiction: str | None = None
    chosen_locality: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: str = "pending"
    http_status: int | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None
    prompt_digest: str | None = None
    prompt_capture: dict[str, str] | None = None
    redacted: dict[str, int] | None = None
    response_digest: str | None = None
    stream: bool = False
    admission: Admission | None = None
    policy_input: dict[str, Any] | None = None
    admin: dict[str, Any] | None = None
    trace_id: str | None = None
    span: Any = None  # the request's OpenTelemetry span (gateway/telemetry.py), never recorded

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (time.perf_counter() - self.started) * 1000.0
