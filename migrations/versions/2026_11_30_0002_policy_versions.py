"""policy versions (content-addressed bundles) and their activation history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("revision", sa.String(80), primary_key=True),
        sa.Column("bundle", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
    )
    op.create_table(
        "policy_activations",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("revision", sa.String(80), sa.ForeignKey("policy_versions.revision"), nullable=False),
        sa.Column("previous_revision", sa.String(80)),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_by", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_activations")
    op.drop_table("policy_versions")
