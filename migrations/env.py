"""Alembic environment: runs migrations on the audit database (SQLite or PostgreSQL).

The URL is ``config.attributes["url"]`` when called from ``gateway migrate``, else
GATEWAY_AUDIT_URL, else ``audit.url`` of the gateway.yaml named by GATEWAY_CONFIG.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from gateway.audit.models import metadata
from gateway.audit.store import make_engine
from gateway.config import load_config

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("GATEWAY_AUDIT_URL")
    if url:
        return str(url)
    return load_config(os.environ.get("GATEWAY_CONFIG", "gateway.yaml")).audit.url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
