"""Authenticate stage: API key → :class:`~gateway.context.Principal`.

Keys are stored only as ``sha256:<hex>`` of the key (gateway.yaml ``keys[].hash``); a lookup
hashes the presented key and looks the digest up, so no key is ever held or logged. Keys are
high-entropy random strings (``gateway keys create``), for which a single SHA-256 is the
usual at-rest form (as for GitHub tokens); no per-request database write.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence

from gateway.config import KeyConfig, TenantConfig
from gateway.context import Principal
from gateway.errors import AuthenticationFailed, PermissionDenied

__all__ = ["KeyRing", "generate_key", "hash_key", "require_role"]


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


class KeyRing:
    """The configured keys, indexed by hash. ``tenants`` supplies each key's home region."""

    def __init__(self, keys: Sequence[KeyConfig], tenants: Mapping[str, TenantConfig]) -> None:
        self._by_hash = {k.hash: k for k in keys}
        self._tenants = dict(tenants)

    def authenticate(self, authorization: str | None, x_api_key: str | None = None) -> Principal:
        """Resolve the presented key. Raises AuthenticationFailed if missing or unknown."""
        key = _bearer(authorization, x_api_key)
        found = self._by_hash.get(hash_key(key))
        if found is None:
            raise AuthenticationFailed("invalid API key", param="authorization")
        tenant = self._tenants[found.tenant]
        return Principal(
            tenant=found.tenant,
            key_id=found.id,
            roles=found.roles,
            home_region=tenant.home_region,
            all_tenants=found.all_tenants,
            allowed_models=found.allowed_models,
        )


def require_role(principal: Principal, role: str) -> None:
    """Raise PermissionDenied unless the principal holds ``role``."""
    if role not in principal.roles:
        raise PermissionDenied(f"this API key lacks the {role!r} role")
