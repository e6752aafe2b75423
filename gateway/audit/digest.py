"""Keyed digests of prompts and responses for audit records.

Records never hold prompt or completion text. They hold HMAC-SHA256 digests (RFC 2104) under
a per-tenant key derived from the gateway's digest secret: ``tenant_key = HMAC(secret,
"tenant:" + tenant)``. A plain hash of a short prompt ("yes", a phone number) could be guessed
back by hashing candidates; a keyed digest cannot without the secret, yet whoever holds the
secret can prove that a given text was (or was not) the one sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import rfc8785

__all__ = ["Digester"]


class Digester:
    """Computes ``hmac-sha256:<hex>`` digests; ``secret`` is at least 32 random bytes."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("digest secret must be at least 32 bytes")
        self._secret = secret
        self._tenant_keys: dict[str, bytes] = {}

    @classmethod
    def from_file(cls, path: Path) -> Digester:
        """Load the secret (raw bytes) from ``path``, creating 32 random bytes (mode 0600) if
        missing. Raises ValueError if the file holds fewer than 32 bytes."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        return cls(path.read_bytes())

    def _key(self, tenant: str) -> bytes:
        key = self._tenant_keys.get(tenant)
        if key is None:
            key = hmac.new(self._secret, f"tenant:{tenant}".encode(), hashlib.sha256).digest()
            self._tenant_keys[tenant] = key
        return key

    def text(self, tenant: str, text: str) -> str:
        """Digest of a text (a completion)."""
        return "hmac-sha256:" + hmac.new(self._key(tenant), text.encode("utf-8"), hashlib.sha256).hexdigest()

    def prompt(self, tenant: str, messages: Sequence[Mapping[str, Any]]) -> str:
        """Digest of the messages as canonical JSON (RFC 8785), so key order does not matter."""
        try:
            data = rfc8785.dumps([dict(m) for m in messages])
        except Exception:  # NaN/Infinity or other values JCS cannot encode
            data = json.dumps(list(messages), sort_keys=True, separators=(",", ":"), default=str).encode()
        return "hmac-sha256:" + hmac.new(self._key(tenant), data, hashlib.sha256).hexdigest()
