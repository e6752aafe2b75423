"""Encrypted prompt capture, an obligation a policy may place on a request.

The gateway holds only the auditors' X25519 *public* key, so it can seal prompts but never
read them back. Sealing (ECIES): an ephemeral X25519 key agreement (RFC 7748) with the
auditors' key, HKDF-SHA256 (RFC 5869) to a 256-bit key, AES-256-GCM (NIST SP 800-38D) over
the prompt. Auditors open a capture with :func:`open_capture` and their private key.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

__all__ = ["ALGORITHM", "PromptSealer", "open_capture"]

ALGORITHM = "X25519-HKDF-SHA256-AES256GCM"
_INFO = b"sovereign-gateway prompt capture v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(shared: bytes, ephemeral_public: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_public, info=_INFO).derive(shared)


class PromptSealer:
    """Seals bytes to the auditors' X25519 public key."""

    def __init__(self, public_key: X25519PublicKey) -> None:
        self._public = public_key

    @classmethod
    def from_file(cls, path: Path) -> PromptSealer:
        """Load a PEM X25519 public key. Raises ValueError for another key type, OSError if
        unreadable."""
        key = load_pem_public_key(path.read_bytes())
        if not isinstance(key, X25519PublicKey):
            raise ValueError(f"{path} is not an X25519 public key")
        return cls(key)

    def seal(self, plaintext: bytes) -> dict[str, str]:
        """``{"alg", "epk", "nonce", "ciphertext"}`` (base64 fields)."""
        ephemeral = X25519PrivateKey.generate()
        epk = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = _derive(ephemeral.exchange(self._public), epk)
        nonce = os.urandom(12)
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, _INFO)
        return {"alg": ALGORITHM, "epk": _b64(epk), "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}


def open_capture(private_key: X25519PrivateKey, sealed: dict[str, Any]) -> bytes:
    """Decrypt a capture made by :meth:`PromptSealer.seal`. Raises ValueError if the algorithm
    is unknown and cryptography's InvalidTag if the capture was altered or the key is wrong."""
    if sealed.get("alg") != ALGORITHM:
        raise ValueError(f"unknown capture algorithm {sealed.get('alg')!r}")
    epk = base64.b64decode(sealed["epk"])
    key = _derive(private_key.exchange(X25519PublicKey.from_public_bytes(epk)), epk)
    return AESGCM(key).decrypt(base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), _INFO)
