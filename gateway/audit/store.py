"""Audit store: the request pipeline's interface to the ledger, plus queries, export, verify.

Write-ahead: :meth:`AuditStore.record_decision` appends the request's ``decision`` entry and
returns once it is committed — before any byte goes to a deployment; :meth:`record_outcome`
appends the ``outcome`` entry (the full record: decision fields plus attempts, status, tokens,
cost, latency) to the same chain, so the chain covers the outcome too. Requests that ended
before a decision (unauthorized, invalid) have only an outcome entry. Any database failure
raises AuditUnavailable: the pipeline answers 503 and sends nothing.

Reading: one record per request — its outcome entry, or its decision entry with status
``pending`` while (or if, after a crash) no outcome was written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import String, and_, delete, event, exists, func, or_, select, type_coerce
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.audit.chainverify import Report, verify
from gateway.audit.ledger import Ledger, Signer, projection
from gateway.audit.models import checkpoints, entries
from gateway.context import RequestContext
from gateway.errors import AuditUnavailable

__all__ = ["AuditStore", "make_engine", "record_of"]


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL mode, a busy timeout and its directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def record_of(ctx: RequestContext) -> dict[str, Any]:
    """The audit record of a request (JSON-safe; no key, no prompt or completion text)."""
    principal = ctx.principal
    cls = ctx.classification
    dec = ctx.decision
    reasons = list(dec.reasons) if dec else []
    if cls is not None and cls.detector_error:
        reasons.append(f"classifier error (treated as restricted): {cls.detector_error}")
    return {
        "trace_id": ctx.trace_id,
        "tenant": principal.tenant if principal else None,
        "key_id": principal.key_id if principal else None,
        "endpoint": ctx.endpoint,
        "requested_model": ctx.requested_model,
        "data_level": cls.level.label if cls else None,
        "declared_level": cls.declared.label if cls and cls.declared is not None else None,
        "labels": list(cls.labels) if cls else [],
        "label_counts": dict(cls.label_counts) if cls else {},
        "policy_engine": dec.engine if dec else None,
        "policy_revision": dec.revision if dec else None,
        "decision": ("allow" if dec.allow else "deny") if dec else None,
        "eligible": list(dec.eligible) if dec else [],
        "excluded": dec.excluded if dec else {},
        "excluded_rules": dec.rules if dec else {},
        "policy_cached": dec.cached if dec else None,
        "reasons": reasons,
        "chosen_deployment": ctx.chosen,
        "chosen_jurisdiction": ctx.chosen_jurisdiction,
        "chosen_locality": ctx.chosen_locality,
        "attempts": [a.as_record() for a in ctx.attempts],
        "status": ctx.status,
        "http_status": ctx.http_status,
        "error": ctx.error,
        "stream": ctx.stream,
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
        "tokens_estimated": ctx.tokens_estimated,
        "cost_usd": ctx.cost_usd,
        "latency_ms": round(ctx.elapsed_ms(), 2),
        "obligations": dec.obligations if dec else {},
        "prompt_hmac": ctx.prompt_digest,
        "response_hmac": ctx.response_digest,
        "prompt_capture": ctx.prompt_capture,
        "redacted": ctx.redacted,
        "limits": ctx.admission.as_record() if ctx.admission else None,
        "policy_input": ctx.policy_input,
        "admin": ctx.admin,
    }


def _created(ctx: RequestContext) -> dt.datetime:
    return dt.datetime.fromtimestamp(ctx.created_at, tz=dt.UTC)


def _entry_dict(row: Any) -> dict[str, Any]:
    return {
        "type": "entry",
        "chain_id": row.chain_id,
        "seq": int(row.seq),
        "kind": row.kind,
        "request_id": row.request_id,
        "prev_hash": row.prev_hash,
        "record_hash": row.record_hash,
        "body": row.body,
    }


def _record_from_row(row: Any) -> dict[str, Any]:
    """The record a ledger row carries, with its place in the chain; a decision entry
    without its outcome yet reads as status ``pending``."""
    body = json.loads(row.body)
    record = dict(body["record"])
    if row.kind == "decision":
        record["status"] = "pending"
    record.update(
        id=int(row.id),
        chain_id=row.chain_id,
        seq=int(row.seq),
        request_id=body["request_id"],
        created_at=body["created_at"],
    )
    return record


def _checkpoint_dict(row: Any) -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "chain_id": row.chain_id,
        "seq": int(row.seq),
        "head_hash": row.head_hash,
        "key_id": row.key_id,
        "body": row.body,
        "signature": row.signature,
    }


class AuditStore:
    """Decision records on SQLite or PostgreSQL; see the module docstring.

    ``signer`` is needed to write (checkpoints are signed); a read-only store (CLI list,
    verify, export) may omit it.
    """

    def __init__(self, engine: AsyncEngine, signer: Signer | None = None, **ledger_options: Any) -> None:
        self._engine = engine
        self._ledger = Ledger(engine, signer, **ledger_options) if signer is not None else None

    @classmethod
    def from_url(cls, url: str, signer: Signer | None = None, **ledger_options: Any) -> AuditStore:
        """Store on a new engine for ``url`` (SQLAlchemy async URL)."""
        return cls(make_engine(url), signer, **ledger_options)

    @property
    def engine(self) -> AsyncEngine:
        """The database engine (shared with the registry: policy versions, API keys)."""
        return self._engine

    @property
    def ledger(self) -> Ledger:
        """This process's chain writer. Raises RuntimeError on a read-only store."""
        if self._ledger is None:
            raise RuntimeError("read-only audit store (no signing key)")
        return self._ledger

    async def check(self) -> None:
        """Raise AuditUnavailable unless the ledger tables are reachable (migrations applied)."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(select(func.count()).select_from(entries).limit(1))
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc

    async def record_decision(self, ctx: RequestContext) -> None:
        """Commit the write-ahead decision entry (before egress). Raises AuditUnavailable."""
        await self.ledger.append("decision", ctx.request_id, _created(ctx), record_of(ctx))

    async def record_outcome(self, ctx: RequestContext) -> None:
        """Commit the outcome entry: the request's full record. Raises AuditUnavailable."""
        await self.ledger.append("outcome", ctx.request_id, _created(ctx), record_of(ctx))

    async def list(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        level: str | None = None,
        label: str | None = None,
        deployment: str | None = None,
        jurisdiction: str | None = None,
        decision: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """One record per request, newest first, filtered; ``before_id`` is the cursor (``id``
        of the last record of the previous page). ``label`` matches a label or a label prefix
        (``pii`` matches ``pii.email``); ``since``/``until`` bound ``created_at`` (until
        exclusive). Each record carries ``id``, ``chain_id``, ``seq``, ``request_id``,
        ``created_at`` and the fields of :func:`record_of`."""
        e, o = entries, entries.alias("o")
        has_outcome = exists().where(and_(o.c.request_id == e.c.request_id, o.c.kind == "outcome"))
        query = (
            select(e.c.id, e.c.chain_id, e.c.seq, e.c.kind, e.c.body)
            .where(or_(e.c.kind == "outcome", ~has_outcome))
            .order_by(e.c.id.desc())
            .limit(limit)
        )
        for column, value in (
            (e.c.tenant, tenant),
            (e.c.status, status),
            (e.c.data_level, level),
            (e.c.chosen_deployment, deployment),
            (e.c.jurisdiction, jurisdiction),
            (e.c.decision, decision),
        ):
            if value is not None:
                query = query.where(column == value)
        if label is not None:
            query = query.where(
                or_(
                    e.c.labels.contains(f",{label},", autoescape=True),
                    e.c.labels.contains(f",{label}.", autoescape=True),
                )
            )
        if since is not None:
            query = query.where(e.c.created_at >= since)
        if until is not None:
            query = query.where(e.c.created_at < until)
        if before_id is not None:
            query = query.where(e.c.id < before_id)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc
        return [_record_from_row(row) for row in rows]

    async def iter_records(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every record matching ``filters`` (as :meth:`list`), newest first, page by page."""
        before: int | None = None
        while True:
            page = await self.list(**filters, limit=500, before_id=before)
            for record in page:
                yield record
            if len(page) < 500:
                return
            before = page[-1]["id"]

    async def count(self, *, include_system: bool = True) -> int:
        """Number of requests recorded (distinct request ids). ``include_system=False`` leaves
        out the gateway's own events (request id ``sys_…``: a policy activation at start)."""
        query = select(func.count(func.distinct(entries.c.request_id)))
        if not include_system:
            query = query.where(~entries.c.request_id.startswith("sys_"))
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def get(self, request_id: str) -> dict[str, Any] | None:
        """The record of one request (as :meth:`list` returns it), or None."""
        e = entries.c
        try:
            async with self._engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(e.id, e.chain_id, e.seq, e.kind, e.body)
                        .where(e.request_id == request_id)
                        .order_by(e.id.desc())
                    )
                ).all()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc
        if not rows:
            return None
        return _record_from_row(next((r for r in rows if r.kind == "outcome"), rows[0]))

    async def export(self) -> AsyncIterator[dict[str, Any]]:
        """Every entry then every checkpoint, in chain order (the JSONL export format of
        :mod:`gateway.audit.chainverify`)."""
        async with self._engine.connect() as conn:
            result = await conn.stream(select(entries).order_by(entries.c.chain_id, entries.c.seq))
            async for row in result:
                yield _entry_dict(row)
            result = await conn.stream(select(checkpoints).order_by(checkpoints.c.chain_id, checkpoints.c.seq))
            async for row in result:
                yield _checkpoint_dict(row)

    async def head(self) -> Sequence[dict[str, Any]]:
        """The newest signed checkpoint of every chain, in the export's checkpoint format
        (what ``gateway audit head`` prints for safekeeping outside the database: a witness)."""
        latest: dict[str, dict[str, Any]] = {}
        try:
            async with self._engine.connect() as conn:
                query = select(checkpoints).order_by(checkpoints.c.chain_id, checkpoints.c.seq, checkpoints.c.id)
                for row in (await conn.execute(query)).all():
                    latest[row.chain_id] = _checkpoint_dict(row)
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc
        return list(latest.values())

    def _created_matches(self, stored: Any, body_time: Any, bind: Any) -> bool:
        """Whether a ``created_at`` column holds what the writer stored for the hashed body's
        ``created_at`` (ISO 8601 text). SQLite: the exact text SQLAlchemy writes (the column
        is compared as text by every ``since``/``until`` filter and by prune; ``stored`` is the
        raw value, ``bind`` the column's bind processor); PostgreSQL: the same instant
        (timestamptz, microseconds)."""
        try:
            expected = dt.datetime.fromisoformat(str(body_time))
        except ValueError:
            return False
        if self._engine.dialect.name == "sqlite":
            return bool(stored == (bind(expected) if bind else expected))
        if not isinstance(stored, dt.datetime):
            return False
        if expected.tzinfo is None:
            expected = expected.replace(tzinfo=dt.UTC)
        if stored.tzinfo is None:
            stored = stored.replace(tzinfo=dt.UTC)
        return bool(stored == expected)

    async def verify(
        self, public_keys: Sequence[Any] | None, witness: Sequence[Mapping[str, Any]] | None = None
    ) -> Report:
        """Verify every chain in the database (against ``witness``: checkpoints kept outside
        it, see :func:`gateway.audit.chainverify.verify`), and that each row's denormalised
        columns match its hashed body: an entry's projection (:func:`projection`: tenant,
        status, data_level, decision, chosen_deployment, jurisdiction, labels) and
        ``created_at`` (read by the ``since``/``until`` filters, the evidence report and
        prune), a checkpoint's ``created_at`` and ``key_id``. chain_id, seq, kind,
        request_id and prev_hash are checked by the chain walk. A row edited only in its
        columns is reported as modified. ``id`` is not in the body: it only orders records."""
        items: list[dict[str, Any]] = []
        cps: list[dict[str, Any]] = []
        mismatched: list[tuple[str, int, str, str]] = []
        dialect = self._engine.dialect
        bind = entries.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)  # same type in both tables
        raw_time = type_coerce(entries.c.created_at, String).label("created_raw")
        cp_raw_time = type_coerce(checkpoints.c.created_at, String).label("created_raw")
        async with self._engine.connect() as conn:
            result = await conn.stream(select(entries, raw_time))
            async for row in result:
                items.append(_entry_dict(row))
                try:
                    body = json.loads(row.body)
                    expected = projection(body.get("record", {}))
                    body_time = body.get("created_at")
                except (ValueError, AttributeError):
                    continue  # reported by the chain walk
                for name, value in expected.items():
                    if getattr(row, name) != value:
                        mismatched.append((row.chain_id, int(row.seq), name, "hashed body"))
                stored = row.created_raw if dialect.name == "sqlite" else row.created_at
                if not self._created_matches(stored, body_time, bind):
                    mismatched.append((row.chain_id, int(row.seq), "created_at", "hashed body"))
            result = await conn.stream(select(checkpoints, cp_raw_time))
            async for row in result:
                cps.append(_checkpoint_dict(row))
                try:
                    body = json.loads(row.body)
                    body_time = body.get("created_at")
                except (ValueError, AttributeError):
                    continue  # reported by the checkpoint check
                stored = row.created_raw if dialect.name == "sqlite" else row.created_at
                if not self._created_matches(stored, body_time, bind):
                    mismatched.append((row.chain_id, int(row.seq), "created_at", "signed checkpoint body"))
        report = verify(items, cps, public_keys, witness)
        for chain_id, seq, name, source in mismatched:
            report.chains[chain_id].fail(seq, f"column {name} differs from the {source} (modified)")
        return report

    async def prune(self, *, older_than: dt.datetime) -> int:
        """Retention: delete records older than ``older_than`` without breaking verification.

        Per chain, deletes the records up to the newest signed checkpoint whose records are
        all older than the cutoff (``created_at``, which verify checks against the hashed
        body), and the checkpoints before it; that checkpoint stays as the anchor the
        remaining records verify from. A chain whose records are all removed keeps that one
        checkpoint: it says the chain was pruned through its seq, so a witness of the chain
        still verifies (a chain missing altogether would read as deleted). Returns the number
        of records deleted.
        """
        deleted = 0
        try:
            async with self._engine.begin() as conn:
                chains = (await conn.execute(select(checkpoints.c.chain_id).distinct())).scalars().all()
                for chain_id in chains:
                    in_chain = entries.c.chain_id == chain_id
                    newer = select(func.min(entries.c.seq)).where(in_chain, entries.c.created_at >= older_than)
                    first_new = (await conn.execute(newer)).scalar()
                    anchor_query = select(func.max(checkpoints.c.seq)).where(checkpoints.c.chain_id == chain_id)
                    if first_new is not None:
                        anchor_query = anchor_query.where(checkpoints.c.seq < first_new)
                    anchor = (await conn.execute(anchor_query)).scalar()
                    if anchor is None:
                        continue
                    removed = await conn.execute(delete(entries).where(in_chain, entries.c.seq <= anchor))
                    deleted += int(removed.rowcount or 0)
                    cp_in_chain = checkpoints.c.chain_id == chain_id
                    await conn.execute(delete(checkpoints).where(cp_in_chain, checkpoints.c.seq < anchor))
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc
        return deleted

    async def aclose(self) -> None:
        """Flush the ledger (final signed checkpoint) and dispose the connection pool."""
        if self._ledger is not None:
            await self._ledger.aclose()
        await self._engine.dispose()
