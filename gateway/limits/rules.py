"""Limit rules and their time windows.

A :class:`Rule` is one configured limit of one subject (``key k_app`` or ``tenant acme-eu``)
on one metric over one period:

==========  ===========  ==========================================================
metric      unit         configured as
==========  ===========  ==========================================================
requests    requests     ``rpm`` (period ``minute``)
tokens      tokens       ``tpm`` (period ``minute``; prompt + completion tokens)
usd         USD          ``usd_per_day`` (``day``), ``usd_per_month`` (``month``)
==========  ===========  ==========================================================

Windows are fixed: a minute is the epoch minute (``floor(t / 60)``), a day the UTC calendar
day, a month the UTC calendar month. A minute window can therefore pass up to twice its rate
across a window boundary (the usual fixed-window trade-off, as in Envoy's and Kong's local
limits); budgets are calendar periods, where fixed windows are exactly what is meant.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from gateway.config import Limits

__all__ = ["Amounts", "Metric", "Period", "Rule", "Window", "rules_of", "window"]

Metric = Literal["requests", "tokens", "usd"]
Period = Literal["minute", "day", "month"]

_UNIT = {"requests": "requests", "tokens": "tokens", "usd": "USD"}
_EXPIRY_SLACK_S = 120.0
"""Counters outlive their window by this much (seconds), so a late settlement still lands."""


@dataclass(frozen=True)
class Amounts:
    """What one request uses: 1 request, tokens (prompt + completion), cost in USD."""

    requests: int
    tokens: int
    usd: float

    def of(self, metric: Metric) -> float:
        """The amount of one metric."""
        value: float = getattr(self, metric)
        return value

    def as_record(self) -> dict[str, float]:
        """JSON form for the audit record: ``{"requests", "tokens", "usd"}``."""
        return {"requests": self.requests, "tokens": self.tokens, "usd": self.usd}


@dataclass(frozen=True)
class Window:
    """One period instance: ``id`` (``"29613445"``, ``"2026-05-04"``, ``"2026-05"``) and
    ``end`` (epoch seconds when it closes)."""

    id: str
    end: float

    @property
    def expire_at(self) -> float:
        """Epoch seconds after which the window's counter may be dropped."""
        return self.end + _EXPIRY_SLACK_S


def window(period: Period, now: float) -> Window:
    """The window of ``period`` that contains ``now`` (epoch seconds)."""
    if period == "minute":
        minute = int(now // 60)
        return Window(str(minute), (minute + 1) * 60.0)
    day = dt.datetime.fromtimestamp(now, tz=dt.UTC).date()
    if period == "day":
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        return Window(day.isoformat(), end.timestamp())
    first_next = dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    end = dt.datetime.combine(first_next, dt.time(), tzinfo=dt.UTC)
    return Window(f"{day.year:04d}-{day.month:02d}", end.timestamp())


def _number(value: float) -> str:
    """``3`` → ``"3"``, ``0.0015`` → ``"0.0015"``, ``1e-06`` → ``"0.000001"``."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Rule:
    """One limit: ``scope`` (key/tenant) ``subject`` (its id) may use at most ``limit`` of
    ``metric`` per ``period``."""

    scope: Literal["key", "tenant"]
    subject: str
    metric: Metric
    period: Period
    limit: float

    @functools.cached_property
    def name(self) -> str:
        """Human name, e.g. ``"key k_app: 3 requests per minute"``,
        ``"tenant acme-eu: 0.0015 USD per day"`` (computed once per rule)."""
        return f"{self.scope} {self.subject}: {_number(self.limit)} {_UNIT[self.metric]} per {self.period}"

    def counter(self, prefix: str, win: Window) -> str:
        """Store key of this rule's counter in ``win``: ``<prefix><scope>:<metric>:<period>:<window>:<subject>``."""
        return f"{prefix}{self.scope}:{self.metric}:{self.period}:{win.id}:{self.subject}"


def _from_limits(scope: Literal["key", "tenant"], subject: str, limits: Limits) -> list[Rule]:
    rules: list[Rule] = []
    if limits.rpm is not None:
        rules.append(Rule(scope, subject, "requests", "minute", float(limits.rpm)))
    if limits.tpm is not None:
        rules.append(Rule(scope, subject, "tokens", "minute", float(limits.tpm)))
    if limits.usd_per_day is not None:
        rules.append(Rule(scope, subject, "usd", "day", limits.usd_per_day))
    if limits.usd_per_month is not None:
        rules.append(Rule(scope, subject, "usd", "month", limits.usd_per_month))
    return rules


def rules_of(
    *, tenant: str, key_id: str, tenant_limits: Mapping[str, Limits], key_limits: Mapping[str, Limits]
) -> list[Rule]:
    """Every rule that applies to a request of ``key_id`` in ``tenant``: the key's, then the
    tenant's. All are checked; any one refuses (the most restrictive wins)."""
    rules = _from_limits("key", key_id, key_limits.get(key_id, Limits()))
    return rules + _from_limits("tenant", tenant, tenant_limits.get(tenant, Limits()))
