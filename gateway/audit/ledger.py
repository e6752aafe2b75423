"""Append-only, hash-chained audit ledger with group commit and signed checkpoints.

One chain per gateway process (``chain_id`` = host-pid-random), so replicas never lock each
other and each chain verifies alone. :meth:`Ledger.append` queues an entry and waits until
the transaction holding it has committed; a single writer task drains the queue into one
multi-row INSERT per transaction (group commit), assigning ``seq`` and ``prev_hash`` in queue
order. A failed transaction fails every entry in it and leaves the chain head unchanged.
On an SQLite file the batches go through one stdlib ``sqlite3`` connection in a dedicated
thread (one thread hop per transaction); elsewhere through the async engine.

Durability (``audit.durability``): ``fsync`` — a commit returns once the database flushed it
to stable storage (SQLite ``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``), so a
record survives power loss; ``process`` — once it is in the database's log (SQLite WAL
``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off`` for the ledger's transactions):
it survives a gateway crash, not a crash of the database host's OS (SQLite flushes at WAL
checkpoints; PostgreSQL within 3 x ``wal_writer_delay``, see its "Asynchronous Commit").

Every ``checkpoint_every`` entries, every ``checkpoint_interval_s`` seconds with new entries,
and at shutdown, the head (seq, record_hash) is signed with Ed25519 (RFC 8032) and stored, so
truncation of the chain is detectable (:mod:`gateway.audit.chainverify`).

Witness (``audit.witness_file``): each signed checkpoint is first appended, as one JSON line
in the export's checkpoint format, to a file outside the database and fsync'd, then stored in
the database; a checkpoint that could not be witnessed is not stored either (the next one
retries). The checkpoints in the database can be deleted together with the records they
cover; the witness cannot be reached through the database, so ``gateway audit verify`` with
it detects a cut tail or a deleted chain (Certificate Transparency's signed tree heads and
witnesses, RFC 9162 section 8). Lines are appended with one ``write`` on an ``O_APPEND``
descriptor, so several processes (chains) can share a file. With ``durability: process`` a
power loss can lose the last committed records while their checkpoint is witnessed: verify
then reports them truncated, which they are.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from sqlalchemy import insert, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chainverify import GENESIS, key_id
from gateway.audit.models import checkpoints, entries
from gateway.errors import AuditUnavailable

__all__ = [
    "DURABILITY",
    "Durability",
    "Ledger",
    "Signer",
    "append_witness",
    "canonical",
    "projection",
    "representable",
    "witness_path",
]

log = logging.getLogger("gateway")

Durability = Literal["fsync", "process"]
DURABILITY: tuple[Durability, ...] = ("fsync", "process")


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


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_DATETIME
_PLACEHOLDER = b'"\\u0000'  # how orjson writes the start of a placeholder string
_FOUR_BYTE_UTF8 = re.compile(rb"[\xf0-\xf4]")  # a character outside the BMP


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


def _floats_fixed(obj: Any, numbers: list[str]) -> Any:
    """``obj`` with every float orjson would write differently from ECMAScript replaced:
    integral floats below 1e16 by ints (ES writes ``3``, orjson ``3.0``), other integral
    floats below 1e21 and floats with 1e-7 <= |x| < 1e-5 (orjson uses exponent form there, ES
    plain decimals) by placeholder strings whose ES text is appended to ``numbers``. Every
    other finite float orjson already writes as ES does (tested bit pattern by bit pattern).
    Raises _NeedsReference on non-finite floats (orjson would write ``null``)."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is float:
        magnitude = abs(obj)
        if obj.is_integer():
            if magnitude < 1e16:
                return int(obj)
            if magnitude >= 1e21:
                return obj
        elif not (1e-7 <= magnitude < 1e-5):
            if magnitude != magnitude or magnitude == math.inf:
                raise _NeedsReference
            return obj
        numbers.append(_es_number(obj))
        return f"\x00{len(numbers) - 1}\x00"
    if isinstance(obj, dict):  # subclasses too (OrderedDict...): orjson would write their floats as is
        return {key: _floats_fixed(value, numbers) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_floats_fixed(value, numbers) for value in obj]
    return obj  # anything else: orjson writes it or raises, and the reference decides


def canonical(obj: Any) -> str:
    """RFC 8785 (JSON Canonicalization Scheme) text of ``obj``: the bytes that get hashed.

    Fast path (~20x the reference): orjson with sorted keys, which writes strings, ints and
    most floats exactly as RFC 8785 does, after :func:`_floats_fixed` puts the floats it
    writes differently in ES form. Anything orjson refuses or might write differently goes
    to the reference implementation (the ``rfc8785`` package), which raises ValueError-like
    errors for values JSON cannot carry: unpaired surrogates and ints beyond 2^53 (orjson
    refuses them), keys outside the BMP (RFC 8785 sorts keys by UTF-16 code units, orjson by
    code points: any 4-byte UTF-8 sequence in the output), a string that starts with NUL
    (it could spell a placeholder), non-finite floats. Tests check both give identical bytes.
    """
    numbers: list[str] = []
    try:
        data = orjson.dumps(_floats_fixed(obj, numbers), option=_ORJSON_OPTIONS)
    except (_NeedsReference, TypeError):  # orjson.JSONEncodeError is a TypeError
        return rfc8785.dumps(obj).decode("utf-8")
    if data.count(_PLACEHOLDER) != len(numbers) or (not data.isascii() and _FOUR_BYTE_UTF8.search(data)):
        return rfc8785.dumps(obj).decode("utf-8")
    text = data.decode("utf-8")
    for i, number in enumerate(numbers):
        text = text.replace(f'"\\u0000{i}\\u0000"', number, 1)
    return text


_SURROGATES = re.compile("[\ud800-\udfff]")
_MAX_EXACT_INT = 2**53 - 1  # I-JSON (RFC 7493): integers beyond are not interoperable


def representable(obj: Any) -> Any:
    """``obj`` with what RFC 8785 cannot write made text, losslessly readable: unpaired
    surrogates (in values and keys) as ``\\udXXX`` escapes, integers beyond +-(2^53 - 1) and
    non-finite floats as their decimal text, other objects as ``repr``. Containers are
    copied; JSON-safe values come back unchanged."""
    if isinstance(obj, str):
        if _SURROGATES.search(obj):
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
        return obj
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj if -_MAX_EXACT_INT <= obj <= _MAX_EXACT_INT else str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {representable(str(k)): representable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [representable(v) for v in obj]
    return repr(obj)


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


def witness_path(setting: str | os.PathLike[str] | None, url: str | URL) -> Path | None:
    """Where the witness of the ledger on ``url`` goes: ``"auto"`` — beside an SQLite file,
    ``<database file>-witness.jsonl`` (next to SQLite's own ``-wal``), none for other
    databases (each PostgreSQL replica needs a path of its own choosing, off the database
    host); None or ``""`` — none; anything else — that path."""
    if setting is None or str(setting) == "":
        return None
    if str(setting) != "auto":
        return Path(setting)
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(f"{parsed.database}-witness.jsonl")
    return None


def append_witness(path: Path, checkpoint: dict[str, Any]) -> None:
    """Append ``checkpoint`` (the export's checkpoint object) to the witness file at ``path``
    as one JSON line and fsync it (and, when the file is new, its directory), creating the
    directory and the file (mode 0644: public data) if missing. One ``write`` on an
    ``O_APPEND`` descriptor: lines of concurrent writers do not interleave. Raises OSError."""
    line = (json.dumps(checkpoint, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, line) != len(line):
            raise OSError(f"short write to the audit witness {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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


class _SqliteWriter:
    """Inserts ledger batches into an SQLite file with the stdlib ``sqlite3`` module.

    Durability ``fsync`` (``synchronous=FULL``): each transaction runs in a dedicated thread,
    so its fsync never stalls the event loop — one thread hop per transaction (the async
    engine's aiosqlite takes one per statement, begin and commit included). Durability
    ``process`` (WAL, ``synchronous=NORMAL``): a commit only appends to the WAL file (tens of
    microseconds), so it runs on the caller's thread without waiting for the write lock; if
    another connection holds it (SQLITE_BUSY), that transaction goes to the thread, which
    waits up to 30 s. The inline connection never checkpoints (a checkpoint fsyncs): every
    :attr:`CHECKPOINT_ROWS` rows the thread runs a passive WAL checkpoint.

    Raises sqlite3.Error from :meth:`write`.
    """

    CHECKPOINT_ROWS = 1000  # SQLite's own wal_autocheckpoint is 1000 pages (~1,500 entries)
    _COLUMNS = tuple(c.name for c in entries.columns if c.name != "id")

    def __init__(self, path: str, durability: Durability) -> None:
        self._path = path
        self._inline = durability == "process"
        self._executor: ThreadPoolExecutor | None = None  # started on first use
        self._conn: sqlite3.Connection | None = None
        self._waits = False  # the connection's busy timeout: 0 inline, 30 s on the thread
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Future[None] | None = None
        self._sql = (
            f"INSERT INTO {entries.name} ({', '.join(self._COLUMNS)}) VALUES ({', '.join('?' for _ in self._COLUMNS)})"
        )
        dialect = sqlite_dialect.dialect()
        # created_at in the text form SQLAlchemy writes and reads back on SQLite
        self._created = entries.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)

    def _connect(self, *, wait: bool) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'NORMAL' if self._inline else 'FULL'}")
            if self._inline:
                conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on the thread
            self._conn, self._waits = conn, True
        if wait != self._waits:
            self._conn.execute(f"PRAGMA busy_timeout={30000 if wait else 0}")
            self._waits = wait
        return self._conn

    def _write(self, values: list[tuple[Any, ...]], wait: bool = True) -> None:
        conn = self._connect(wait=wait)
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock first: BUSY here has written nothing
        try:
            conn.executemany(self._sql, values)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _checkpoint(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:  # the next one retries; the WAL only grows meanwhile
            log.warning("audit WAL checkpoint failed: %s", exc)

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        return self._executor

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` in one transaction; returns once committed."""
        created = self._created
        values = [
            tuple(created(row[c]) if c == "created_at" and created else row[c] for c in self._COLUMNS) for row in rows
        ]
        loop = asyncio.get_running_loop()
        if self._inline:
            try:
                self._write(values, wait=False)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                await loop.run_in_executor(self._thread(), self._write, values)
            self._since_checkpoint += len(values)
            if self._since_checkpoint >= self.CHECKPOINT_ROWS and (
                self._checkpointing is None or self._checkpointing.done()
            ):
                self._since_checkpoint = 0
                self._checkpointing = loop.run_in_executor(self._thread(), self._checkpoint)
            return
        await loop.run_in_executor(self._thread(), self._write, values)

    def close(self) -> None:
        """Checkpoint, close the connection and stop the thread (waits for a write in
        progress); a later write opens them again."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._conn.close()
            self._conn = None


class Ledger:
    """The writer of one chain. Create in the app's lifespan; :meth:`aclose` at shutdown.

    ``max_batch``: entries per transaction at most. ``checkpoint_every``: entries between
    signed checkpoints; ``checkpoint_interval_s``: seconds between checkpoints while entries
    arrive. ``durability``: ``fsync`` or ``process``; ``witness``: the witness file setting
    (:func:`witness_path`; module docstring).
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
        durability: Durability = "fsync",
        witness: str | os.PathLike[str] | None = "auto",
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
        self._engine = engine
        url = engine.url
        file_db = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        self._sqlite = _SqliteWriter(str(url.database), durability) if file_db else None
        # PostgreSQL: the ledger's own transactions commit without waiting for the WAL flush
        self._relaxed_pg = durability == "process" and url.get_backend_name() == "postgresql"
        self.signer = signer
        self.witness = witness_path(witness, url)
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
        except Exception:  # rfc8785 raises its own error classes for unrepresentable values
            # Text or numbers JSON cannot carry (an upstream's unpaired surrogate, a count beyond
            # 2^53) must not cost the request its record: keep them as escaped text.
            try:
                record_json = canonical(representable(record))
            except Exception as exc:
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
            await self._write(rows)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            error = AuditUnavailable(f"audit store unavailable: {type(exc).__name__}")
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(error)
            return
        self.head_seq, self.head_hash = seq, prev
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._sqlite is not None:
            await self._sqlite.write(rows)
            return
        async with self._engine.begin() as conn:
            if self._relaxed_pg:
                await conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
            await conn.execute(insert(entries), rows)

    async def _maybe_checkpoint(self, *, force: bool) -> None:
        due = self.head_seq - self._checkpointed_seq
        if due <= 0 or (not force and due < self._checkpoint_every):
            return
        try:
            await self.checkpoint()
        except AuditUnavailable as exc:  # the next one retries
            log.warning("audit checkpoint of chain %s at seq %d not written: %s", self.chain_id, self.head_seq, exc)

    async def checkpoint(self, *, final: bool = False) -> None:
        """Sign the current head, append it to the witness file (if any), then store it in
        the database (no-op on an empty or already signed chain).

        ``final`` marks the chain closed (shutdown): any entry after it is an insertion.
        Raises AuditUnavailable if the witness or the database cannot take it (the chain
        stays unsigned at this seq; a later checkpoint covers it).
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
        if self.witness is not None:
            # the export's checkpoint object: the row as stored, created_at being in the signed body
            item = {"type": "checkpoint", **{k: v for k, v in row.items() if k != "created_at"}}
            try:
                await asyncio.to_thread(append_witness, self.witness, item)
            except OSError as exc:
                raise AuditUnavailable(f"audit witness {self.witness} not written: {exc}") from exc
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
        try:
            await self.checkpoint(final=True)
        except AuditUnavailable as exc:
            log.warning("final audit checkpoint of chain %s not written: %s", self.chain_id, exc)
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)
