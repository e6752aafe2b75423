"""Authenticate stage: API key → :class:`~gateway.context.Principal`.

Keys are stored only as ``sha256:<hex>`` of the key (gateway.yaml ``keys[].hash``, or the
``api_keys`` table for keys managed at run time, gateway/keystore.py); a lookup hashes the
presented key and looks the digest up in memory, so no key is ever held or logged and no
request reads or writes the database for its key. Keys are high-entropy random strings
(``gateway keys create``), for which a single SHA-256 is the usual at-rest form (as for
GitHub tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.config import KeyConfig, Limits, TenantConfig
from gateway.context import Principal
from gateway.errors import AuthenticationFailed, PermissionDenied

if TYPE_CHECKING:
    from gateway.keystore import StoredKey

__all__ = ["KeyRing", "KeySource", "generate_key", "hash_key", "require_role"]

log = logging.getLogger("gateway.auth")


class KeySource(Protocol):
    """Where run-time keys come from (:class:`gateway.keystore.KeyStore`)."""

    async def fingerprint(self) -> object:
        """A value that changes whenever any key changes."""
        ...

    async def load(self) -> list[StoredKey]:
        """Every stored key."""
        ...


def hash_key(key: str) -> str:
    """The at-rest form of an API key: ``sha256:<64 hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key(prefix: str = "sk-gw-") -> str:
    """A new random API key (32 bytes of entropy, URL-safe)."""
    return prefix + secrets.token_urlsafe(32)


def _bearer(authorization: str | None, x_api_key: str | None) -> str:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Authorization header must be 'Bearer <API key>'", param="authorization")
        return token.strip()
    if x_api_key:
        return x_api_key.strip()
    raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <API key>'", param="authorization")


@dataclass(frozen=True)
class _Entry:
    """A known key hash: who it authenticates, until when (epoch s; None: no end), and
    whether it was revoked or rotated out (kept so the 401 can say which)."""

    principal: Principal
    valid_until: float | None = None
    revoked: bool = False
    rotated_out: bool = False


class _KeyLimits(Mapping[str, Limits]):
    """Live view of every key's limits by key id (static and database keys): the limiter
    reads it per request, so a key created or changed at run time is limited at once."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def __getitem__(self, key_id: str) -> Limits:
        return self._ring._limits[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ring._limits)

    def __len__(self) -> int:
        return len(self._ring._limits)


class KeyRing:
    """Every valid API key, in memory, indexed by hash: the static keys of gateway.yaml and,
    with a ``store``, the keys managed at run time (gateway/keystore.py).

    ``tenants`` supplies each key's home region. :meth:`authenticate` never touches the
    database; :meth:`refresh` reloads the database keys when they changed (called at start-up
    and by the ``keys`` :class:`~gateway.notify.ChangeWatcher`). A database key whose tenant is
    not configured, or whose id is also a static key's, is ignored (logged): it cannot log in.
    ``clock``: epoch seconds, for expiry and rotation grace periods.
    """

    def __init__(
        self,
        keys: Sequence[KeyConfig],
        tenants: Mapping[str, TenantConfig],
        store: KeySource | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tenants = dict(tenants)
        self._store = store
        self._clock = clock
        self._static: dict[str, _Entry] = {}
        self._static_limits: dict[str, Limits] = {}
        for k in keys:
            self._static[k.hash] = _Entry(self._principal(k.id, k.tenant, k.roles, k.all_tenants, k.allowed_models))
            self._static_limits[k.id] = k.limits
        self._by_hash: dict[str, _Entry] = dict(self._static)
        self._limits: dict[str, Limits] = dict(self._static_limits)
        self._fingerprint: object = None
        self._lock = asyncio.Lock()
        self.key_limits: Mapping[str, Limits] = _KeyLimits(self)
        """Limits by key id, kept current (pass to the Limiter)."""

    def _principal(
        self, key_id: str, tenant: str, roles: Sequence[str], all_tenants: bool, allowed: Sequence[str] | None
    ) -> Principal:
        return Principal(
            tenant=tenant,
            key_id=key_id,
            roles=tuple(roles),
            home_region=self._tenants[tenant].home_region,
            all_tenants=all_tenants,
            allowed_models=tuple(allowed) if allowed is not None else None,
        )

    async def refresh(self) -> None:
        """Reload the database keys if they changed.

        One aggregate query when nothing changed. Raises AuditUnavailable when the database
        cannot be read; the keys already in memory stay in force then.
        """
        if self._store is None:
            return
        async with self._lock:  # one reload at a time; a burst of notifications reads once
            fingerprint = await self._store.fingerprint()
            if fingerprint == self._fingerprint:
                return
            stored = await self._store.load()
            static_ids = set(self._static_limits)
            by_hash = dict(self._static)
            limits = dict(self._static_limits)
            for key in stored:
                if key.tenant not in self._tenants or key.id in static_ids:
                    why = "unknown tenant" if key.tenant not in self._tenants else "id of a static key"
                    log.warning("API key %r in the database is ignored: %s", key.id, why)
                    continue
                principal = self._principal(key.id, key.tenant, key.roles, key.all_tenants, key.allowed_models)
                expires = key.expires_at.timestamp() if key.expires_at is not None else None
                revoked = key.revoked_at is not None
                by_hash[key.key_hash] = _Entry(principal, expires, revoked)
                if key.previous_hash and key.previous_valid_until is not None and not revoked:
                    until = key.previous_valid_until.timestamp()
                    by_hash[key.previous_hash] = _Entry(principal, min(until, expires or until), rotated_out=True)
                limits[key.id] = key.limits
            self._by_hash, self._limits = by_hash, limits  # swapped whole: readers see old or new
            self._fingerprint = fingerprint

    def authenticate(self, authorization: str | None, x_api_key: str | None = None) -> Principal:
        """Resolve the presented key from memory (no database access).

        Raises AuthenticationFailed (401) if the key is missing, malformed, unknown, revoked
        or expired.
        """
        key = _bearer(authorization, x_api_key)
        found = self._by_hash.get(hash_key(key))
        if found is None:
            raise AuthenticationFailed("invalid API key", param="authorization")
        if found.revoked:
            raise AuthenticationFailed("this API key has been revoked", param="authorization", code="key_revoked")
        if found.valid_until is not None and self._clock() >= found.valid_until:
            if found.rotated_out:
                raise AuthenticationFailed(
                    "this API key was rotated and its grace period has ended; use the new key",
                    param="authorization",
                    code="key_rotated",
                )
            raise AuthenticationFailed("this API key has expired", param="authorization", code="key_expired")
        return found.principal


def require_role(principal: Principal, role: str) -> None:
    """Raise PermissionDenied unless the principal holds ``role``."""
    if role not in principal.roles:
        raise PermissionDenied(f"this API key lacks the {role!r} role")
