"""SQLAlchemy table of decision records (created by the Alembic migration, never by the app).

One row per request: who, what was asked, the data level, the policy's decision (revision,
eligible, excluded with reasons), where it went (attempts), and how it ended (status, tokens,
cost, latency). Never the API key, never prompt or completion text.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["decisions", "metadata"]

metadata = MetaData()

decisions = Table(
    "audit_decisions",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("tenant", String(128), index=True),
    Column("key_id", String(128)),
    Column("endpoint", String(64), nullable=False),
    Column("requested_model", String(256)),
    Column("data_level", String(16)),
    Column("declared_level", String(16)),
    Column("labels", JSON, nullable=False),
    Column("policy_engine", String(32)),
    Column("policy_revision", String(80)),
    Column("decision", String(8)),
    Column("eligible", JSON, nullable=False),
    Column("excluded", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("chosen_deployment", String(128)),
    Column("attempts", JSON, nullable=False),
    Column("status", String(32), nullable=False, index=True),
    Column("http_status", Integer),
    Column("error", Text),
    Column("stream", Boolean, nullable=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("tokens_estimated", Boolean, nullable=False),
    Column("cost_usd", Float),
    Column("latency_ms", Float),
)
