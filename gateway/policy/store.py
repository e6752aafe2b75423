"""Versioned policies in the database: content-addressed bundles and their activation history.

``policy_versions`` holds every pushed bundle under its revision (``sha256:<hex>`` of its
modules and data, :class:`~gateway.policy.PolicyBundle`), so pushing the same content twice is
one version, and any recorded revision can be loaded again for explain and what-if replay.
``policy_activations`` is the history: each row says which revision became active, which one
it replaced, who did it, when, and how (``bootstrap`` from the config's policy directory,
``activate``, ``rollback``). The active revision is the latest row's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.models import policy_activations, policy_versions
from gateway.policy import PolicyBundle

__all__ = ["PolicyStore"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PolicyStore:
    """Policy versions and activations on the audit database (SQLite or PostgreSQL).

    Methods raise SQLAlchemyError (or OSError) when the database is unreachable or not migrated.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def push(self, bundle: PolicyBundle, *, by: str, source: str, description: str = "") -> bool:
        """Store ``bundle`` under its revision; True if new, False if it was already stored."""
        async with self._engine.begin() as conn:
            found = await conn.scalar(
                select(policy_versions.c.revision).where(policy_versions.c.revision == bundle.revision)
            )
            if found is not None:
                return False
            try:
                await conn.execute(
                    insert(policy_versions).values(
                        revision=bundle.revision,
                        bundle=bundle.to_json(),
                        created_at=_now(),
                        created_by=by[:128],
                        source=source[:16],
                        description=description,
                    )
                )
            except IntegrityError:  # pushed concurrently by another replica
                return False
        return True

    async def get(self, revision: str) -> PolicyBundle | None:
        """The bundle stored under ``revision``, or None."""
        async with self._engine.connect() as conn:
            text = await conn.scalar(select(policy_versions.c.bundle).where(policy_versions.c.revision == revision))
        return PolicyBundle.from_json(text) if text is not None else None

    async def describe(self, revision: str) -> str:
        """A stored version's description and source (``"kill switch on: INC-42 (killswitch)"``)."""
        v = policy_versions.c
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(v.description, v.source).where(v.revision == revision))).first()
        if row is None:
            return ""
        return f"{row.description} ({row.source})" if row.description else f"({row.source})"

    async def active(self) -> str | None:
        """The active revision (latest activation), or None before the first activation."""
        async with self._engine.connect() as conn:
            return await conn.scalar(
                select(policy_activations.c.revision).order_by(policy_activations.c.id.desc()).limit(1)
            )

    async def latest_activation(self) -> dict[str, Any] | None:
        """The latest activation row as a dict (revision, previous_revision, action, by, at)."""
        rows = await self.activations(limit=1)
        return rows[0] if rows else None

    async def activations(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Activation history, newest first."""
        a = policy_activations.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(policy_activations).order_by(a.id.desc()).limit(limit))).all()
        return [
            {
                "id": int(r.id),
                "revision": r.revision,
                "previous_revision": r.previous_revision,
                "action": r.action,
                "activated_by": r.activated_by,
                "activated_at": r.activated_at.isoformat() if r.activated_at else None,
            }
            for r in rows
        ]

    async def versions(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Stored versions, newest first, each with ``active`` (bool) and its module names."""
        active = await self.active()
        v = policy_versions.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(policy_versions).order_by(v.created_at.desc()).limit(limit))).all()
        out = []
        for r in rows:
            bundle = PolicyBundle.from_json(r.bundle)
            out.append(
                {
                    "revision": r.revision,
                    "active": r.revision == active,
                    "created_at": r.created_at.isoformat() if r.created_at else None,
                    "created_by": r.created_by,
                    "source": r.source,
                    "description": r.description,
                    "modules": sorted(bundle.modules),
                }
            )
        return out

    async def record_activation(self, revision: str, *, previous: str | None, by: str, action: str) -> None:
        """Append an activation row (the revision must be stored)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(policy_activations).values(
                    revision=revision,
                    previous_revision=previous,
                    action=action,
                    activated_at=_now(),
                    activated_by=by[:128],
                )
            )
