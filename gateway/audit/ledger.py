"""Append-only, hash-chained audit ledger with group commit and signed checkpoints.

One chain per gateway process (``chain_id`` = host-pid-random), so replicas never lock each
other and each chain verifies alone. :meth:`Ledger.append` queues an entry and waits until
the transaction holding it has committed; a single writer task drains the queue into one
multi-row INSERT per transaction (group commit), assigning ``seq`` and ``prev_hash`` in queue
order. A failed transaction fails every entry in it and leaves the chain head unchanged.

Every ``checkpoint_every`` entries, every ``checkpoint_interval_s`` seconds with new entries,
and at shutdown, the head (seq, record_hash) is signed with Ed25519 (RFC 8032) and stored, so
truncation of the chain is detectable (:mod:`gateway.audit.chainverify`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chainverify import GENESIS, key_id
from gateway.audit.models import checkpoints, entries
from gateway.errors import AuditUnavailable

__all__ = ["Ledger", "Signer", "canonical", "projection"]


def projection(record: dict[str, Any]) -> dict[str, Any]:
    """The queryable columns of an entry, derived from its record (verify re-derives and
    compares them). ``labels`` is ``",a,b,"`` so a label or label prefix matches with LIKE."""
    labels = record.get("labels") or []
    return {
        "tenant": record.get("tenant"),
        "status": record.get("status") or "pending",
        "data_level": record.get("data_level"),
        "decision": record.get("decision"),
        "chosen_deployment": record.get("chosen_deployment"),
        "jurisdiction": record.get("chosen_jurisdiction"),
        "labels": "," + "".join(f"{label}," for label in labels),
    }


_FAST_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class _NeedsReference(Exception):
    """A value the fast path cannot write exactly as RFC 8785 does."""


def _es_number(x: float) -> str:
    """ECMAScript Number::toString of a finite float, which RFC 8785 prescribes: the shortest
    round-trip digits (Python's ``repr`` has the same), laid out by ES rules: plain decimals
    for 1e-7 <= |x| < 1e21, otherwise ``d.ddde±n`` without exponent padding."""
    text = repr(x)
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    leading_zeros = len(whole + fraction) - len(significant)
    # x = 0.<digits> x 10^n
    n = (int(exponent) if exponent else 0) + len(whole) - leading_zeros
    digits = significant.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        out = (digits if k == 1 else digits[0] + "." + digits[1:]) + ("e+" if e > 0 else "e-") + str(abs(e))
    return sign + out


def _jcs_ready(obj: Any, numbers: list[str]) -> Any:
    """``obj`` with whole floats as ints and exponent-range floats as placeholders (their ES
    text appended to ``numbers``); raises _NeedsReference where stdlib json output would
    still differ from RFC 8785 (non-finite floats, ints beyond 2^53, unpaired surrogates,
    keys outside the BMP — JCS sorts keys by UTF-16 code units — and NUL characters, which
    could spell a placeholder)."""
    if isinstance(obj, str):
        if _SURROGATE.search(obj) or "\x00" in obj:
            raise _NeedsReference
        return obj
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        if abs(obj) >= 2**53:
            raise _NeedsReference
        return obj
    if isinstance(obj, float):
        if obj.is_integer() and abs(obj) < 1e16:
            return int(obj)
        magnitude = abs(obj)
        if not (1e-4 <= magnitude < 1e16):
            if not math.isfinite(obj):
                raise _NeedsReference
            numbers.append(_es_number(obj))
            return f"\x00{len(numbers) - 1}\x00"
        return obj
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str) or _ASTRAL.search(key) or _SURROGATE.search(key) or "\x00" in key:
                raise _NeedsReference
            out[key] = _jcs_ready(value, numbers)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jcs_ready(v, numbers) for v in obj]
    raise _NeedsReference


def canonical(obj: Any) -> str:
    """RFC 8785 (JSON Canonicalization Scheme) text of ``obj``: the bytes that get hashed.

    Fast path: stdlib json with sorted keys, which matches RFC 8785 for the values audit
    records hold (about 4x faster than the reference); floats that Python would write in
    exponent form (a request's cost in USD, e.g. ``2.3e-06``) go in as placeholders and are
    replaced by their ES text. Anything else goes to the reference implementation (the
    ``rfc8785`` package), which raises ValueError-like errors for values JSON cannot carry.
    A test checks both give identical bytes.
    """
    numbers: list[str] = []
    try:
        text = _FAST_JSON.encode(_jcs_ready(obj, numbers))
    except _NeedsReference:
        return rfc8785.dumps(obj).decode("utf-8")
    for i, number in enumerate(numbers):
        text = text.replace(f'"\\u0000{i}\\u0000"', number, 1)
    return text


class Signer:
    """Ed25519 signing key for checkpoints; ``key_id`` = first 16 hex of sha256(raw public key)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> Signer:
        """Load a PEM (PKCS#8) Ed25519 key; create one (mode 0600) if missing and ``create``.

        Raises ValueError if the file holds another kind of key, FileNotFoundError if missing.
        """
        if not path.exists():
            if not create:
                raise FileNotFoundError(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            return cls(key)
        loaded = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(loaded)

    def public_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo), for auditors."""
        return self.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, data: bytes) -> str:
        """Base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self._key.sign(data)).decode()


@dataclass
class _Pending:
    kind: str
    request_id: str
    created_at: dt.datetime
    record: dict[str, Any]
    record_json: str  # canonical(record), computed in the caller's task
    done: asyncio.Future[None]


def new_chain_id() -> str:
    """A chain id unique to this process: ``<host>-<pid>-<8 hex>``."""
    return f"{socket.gethostname()[:48]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Ledger:
    """The writer of one chain. Create in the app's lifespan; :meth:`aclose` at shutdown.

    ``max_batch``: entries per transaction at most. ``checkpoint_every``: entries between
    signed checkpoints; ``checkpoint_interval_s``: seconds between checkpoints while entries
    arrive.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        signer: Signer,
        *,
        chain_id: str | None = None,
        max_batch: int = 512,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
    ) -> None:
        self._engine = engine
        self.signer = signer
        self.chain_id = chain_id or new_chain_id()
        self._chain_json = canonical(self.chain_id)
        self._max_batch = max_batch
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval_s = checkpoint_interval_s
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()  # None: stop
        self._task: asyncio.Task[None] | None = None
        self.head_seq = 0
        self.head_hash = GENESIS
        self._checkpointed_seq = 0

    async def append(self, kind: str, request_id: str, created_at: dt.datetime, record: dict[str, Any]) -> None:
        """Append one entry and return once it is committed.

        Raises AuditUnavailable if the database cannot commit it, or if the record holds a
        value JSON cannot represent (so the request fails closed, alone).
        """
        try:
            record_json = canonical(record)
        except Exception as exc:  # rfc8785 raises its own error classes for unrepresentable values
            raise AuditUnavailable(f"audit record cannot be serialised: {type(exc).__name__}") from exc
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"audit-ledger-{self.chain_id}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(kind, request_id, created_at, record, record_json, done))
        await asyncio.shield(done)

    async def _run(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=self._checkpoint_interval_s)
            except TimeoutError:
                await self._maybe_checkpoint(force=True)
                continue
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._commit(batch)
            await self._maybe_checkpoint(force=False)
            if stop:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        rows = []
        seq, prev = self.head_seq, self.head_hash
        for item in batch:
            seq += 1
            # The RFC 8785 text of {chain_id, created_at, kind, prev_hash, record, request_id,
            # seq}: keys in sorted order, the record already canonical.
            body = (
                f'{{"chain_id":{self._chain_json},"created_at":{canonical(item.created_at.isoformat())},'
                f'"kind":{canonical(item.kind)},"prev_hash":"{prev}","record":{item.record_json},'
                f'"request_id":{canonical(item.request_id)},"seq":{seq}}}'
            )
            digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
            rows.append(
                {
                    "chain_id": self.chain_id,
                    "seq": seq,
                    "kind": item.kind,
                    "request_id": item.request_id,
                    "created_at": item.created_at,
                    **projection(item.record),
                    "prev_hash": prev,
                    "record_hash": digest,
                    "body": body,
                }
            )
            prev = digest
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(entries), rows)
        except (SQLAlchemyError, OSError) as exc:
            error = AuditUnavailable(f"audit store unavailable: {type(exc).__name__}")
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(error)
            return
        self.head_seq, self.head_hash = seq, prev
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)

    async def _maybe_checkpoint(self, *, force: bool) -> None:
        due = self.head_seq - self._checkpointed_seq
        if due <= 0 or (not force and due < self._checkpoint_every):
            return
        with contextlib.suppress(AuditUnavailable):
            await self.checkpoint()

    async def checkpoint(self, *, final: bool = False) -> None:
        """Sign and store the current head (no-op on an empty or already signed chain).

        ``final`` marks the chain closed (shutdown): any entry after it is an insertion.
        Raises AuditUnavailable.
        """
        seq, head = self.head_seq, self.head_hash
        if seq == 0 or (seq == self._checkpointed_seq and not final):
            return
        created = dt.datetime.now(dt.UTC)
        body = canonical(
            {
                "chain_id": self.chain_id,
                "seq": seq,
                "head_hash": head,
                "created_at": created.isoformat(),
                "key_id": self.signer.key_id,
                "final": final,
            }
        )
        row = {
            "chain_id": self.chain_id,
            "seq": seq,
            "head_hash": head,
            "created_at": created,
            "key_id": self.signer.key_id,
            "body": body,
            "signature": self.signer.sign(body.encode("utf-8")),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(checkpoints).values(row))
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit checkpoint failed: {type(exc).__name__}") from exc
        self._checkpointed_seq = seq

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer and write a final checkpoint."""
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task
        self._task = None
        with contextlib.suppress(AuditUnavailable):
            await self.checkpoint(final=True)
