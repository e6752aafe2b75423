"""Audit store: writes one decision record per request through SQLAlchemy (async).

Write-ahead: :meth:`AuditStore.record_decision` commits the record (status ``pending``)
before any byte goes to a deployment; :meth:`AuditStore.record_outcome` completes the same
row afterwards (or inserts it, for requests that ended before a decision: unauthorized,
invalid). Any database failure raises AuditUnavailable, which the pipeline answers with 503
and no egress. SQLite (WAL) is the embedded default; PostgreSQL uses the same table.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.audit.models import decisions
from gateway.context import RequestContext
from gateway.errors import AuditUnavailable

__all__ = ["AuditStore", "make_engine"]


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


def _row(ctx: RequestContext) -> dict[str, Any]:
    principal = ctx.principal
    cls = ctx.classification
    dec = ctx.decision
    return {
        "request_id": ctx.request_id,
        "created_at": dt.datetime.fromtimestamp(ctx.created_at, tz=dt.UTC),
        "tenant": principal.tenant if principal else None,
        "key_id": principal.key_id if principal else None,
        "endpoint": ctx.endpoint,
        "requested_model": ctx.requested_model,
        "data_level": cls.level.label if cls else None,
        "declared_level": cls.declared.label if cls and cls.declared is not None else None,
        "labels": list(cls.labels) if cls else [],
        "policy_engine": dec.engine if dec else None,
        "policy_revision": dec.revision if dec else None,
        "decision": ("allow" if dec.allow else "deny") if dec else None,
        "eligible": list(dec.eligible) if dec else [],
        "excluded": dec.excluded if dec else {},
        "reasons": (list(dec.reasons) if dec else [])
        + ([f"classifier error (treated as restricted): {cls.detector_error}"] if cls and cls.detector_error else []),
        "chosen_deployment": ctx.chosen,
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
    }


class AuditStore:
    """Decision records in one table; see the module docstring for the write protocol."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str) -> AuditStore:
        """Store on a new engine for ``url`` (SQLAlchemy async URL)."""
        return cls(make_engine(url))

    async def check(self) -> None:
        """Raise AuditUnavailable unless the table is reachable (migrations applied)."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(select(func.count()).select_from(decisions).limit(1))
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc

    async def record_decision(self, ctx: RequestContext) -> None:
        """Commit the decision record (before egress). Raises AuditUnavailable."""
        await self._write(ctx)

    async def record_outcome(self, ctx: RequestContext) -> None:
        """Complete the record with the outcome (insert it if none was written yet)."""
        await self._write(ctx)

    async def _write(self, ctx: RequestContext) -> None:
        row = _row(ctx)
        try:
            async with self._engine.begin() as conn:
                if ctx.audit_written:
                    values = {k: v for k, v in row.items() if k not in ("request_id", "created_at")}
                    where = decisions.c.request_id == ctx.request_id
                    await conn.execute(update(decisions).where(where).values(values))
                else:
                    await conn.execute(insert(decisions).values(row))
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc
        ctx.audit_written = True

    async def list(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """Records newest first, filtered by tenant and status; ``before_seq`` is the cursor."""
        query = select(decisions).order_by(decisions.c.seq.desc()).limit(limit)
        if tenant is not None:
            query = query.where(decisions.c.tenant == tenant)
        if status is not None:
            query = query.where(decisions.c.status == status)
        if before_seq is not None:
            query = query.where(decisions.c.seq < before_seq)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).mappings().all()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"audit store unavailable: {type(exc).__name__}") from exc
        out = []
        for r in rows:
            item = dict(r)
            created = item["created_at"]
            if created.tzinfo is None:
                created = created.replace(tzinfo=dt.UTC)
            item["created_at"] = created.isoformat()
            out.append(item)
        return out

    async def count(self) -> int:
        """Number of records."""
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(decisions))).scalar_one())

    async def aclose(self) -> None:
        """Dispose the connection pool."""
        await self._engine.dispose()
