"""Rate limits and budgets: the admit stage (see :mod:`gateway.limits.limiter`).

Public surface: :class:`Limiter` (admit / settle / release), :class:`Admission` (what the
audit record's ``limits`` field shows), the stores :class:`MemoryStore` and
:class:`RedisStore`, and :func:`build_limiter`, which the app's lifespan calls.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import GatewayConfig, Limits
from gateway.limits.limiter import Admission, Limiter
from gateway.limits.rules import Amounts, Rule
from gateway.limits.stores import Hold, LimitStore, MemoryStore, RedisStore, StoreUnavailable

__all__ = [
    "Admission",
    "Amounts",
    "Hold",
    "LimitStore",
    "Limiter",
    "MemoryStore",
    "RedisStore",
    "Rule",
    "StoreUnavailable",
    "build_limiter",
]


def build_limiter(config: GatewayConfig, key_limits: Mapping[str, Limits] | None = None) -> Limiter:
    """The limiter for ``config``: its ``limits_store`` (memory, or a Redis client that
    connects on first use) and every tenant's and key's ``limits``. ``key_limits``: a live
    mapping of key id → limits (the KeyRing's, covering keys managed at run time); default:
    the static keys of ``config``."""
    settings = config.limits_store
    store: LimitStore
    if settings.kind == "redis":
        assert settings.url is not None  # checked by LimitsStoreConfig
        store = RedisStore(settings.url, timeout_s=settings.timeout_s)
    else:
        store = MemoryStore()
    return Limiter(
        store,
        tenant_limits={name: tenant.limits for name, tenant in config.tenants.items()},
        key_limits=key_limits if key_limits is not None else {key.id: key.limits for key in config.keys},
        on_error=settings.on_error,
        prefix=settings.key_prefix,
    )
