"""audit decisions table: one record per request

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_decisions",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(128)),
        sa.Column("key_id", sa.String(128)),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("requested_model", sa.String(256)),
        sa.Column("data_level", sa.String(16)),
        sa.Column("declared_level", sa.String(16)),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("policy_engine", sa.String(32)),
        sa.Column("policy_revision", sa.String(80)),
        sa.Column("decision", sa.String(8)),
        sa.Column("eligible", sa.JSON, nullable=False),
        sa.Column("excluded", sa.JSON, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("chosen_deployment", sa.String(128)),
        sa.Column("attempts", sa.JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False),
        sa.Column("cost_usd", sa.Float),
        sa.Column("latency_ms", sa.Float),
    )
    op.create_index("ix_audit_decisions_created_at", "audit_decisions", ["created_at"])
    op.create_index("ix_audit_decisions_tenant", "audit_decisions", ["tenant"])
    op.create_index("ix_audit_decisions_status", "audit_decisions", ["status"])


def downgrade() -> None:
    op.drop_index("ix_audit_decisions_status", table_name="audit_decisions")
    op.drop_index("ix_audit_decisions_tenant", table_name="audit_decisions")
    op.drop_index("ix_audit_decisions_created_at", table_name="audit_decisions")
    op.drop_table("audit_decisions")
