"""SQLAlchemy tables of the audit ledger and the registry (created by Alembic migrations, never by the app).

``audit_entries``: the hash-chained, append-only entries. Each request has a ``decision``
entry written before egress and an ``outcome`` entry afterwards (or only an ``outcome`` entry
when it ended before a decision: unauthorized, invalid). ``body`` is the canonical JSON
pre-image of ``record_hash``; the other columns are a queryable projection of it, checked
against it on verify. ``audit_checkpoints``: Ed25519-signed chain heads.

Never the API key, never prompt or completion text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["api_keys", "checkpoints", "entries", "metadata", "policy_activations", "policy_versions"]

metadata = MetaData()

entries = Table(
    "audit_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("chain_id", String(96), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("request_id", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("tenant", String(128), index=True),
    Column("status", String(32), nullable=False, index=True),
    Column("data_level", String(16)),
    Column("decision", String(8)),
    Column("chosen_deployment", String(128)),
    Column("jurisdiction", String(32)),
    Column("labels", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("record_hash", String(64), nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("chain_id", "seq", name="uq_audit_entries_chain_seq"),
)

checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("chain_id", String(96), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", Text, nullable=False),
)


# The registry tables share the audit database (DESIGN.md "Storage and services").

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("revision", String(80), primary_key=True),  # sha256:<hex> of the bundle
    Column("bundle", Text, nullable=False),  # JSON {"modules": {name: source}, "data": {...}}
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("source", String(16), nullable=False),  # file | api | cli
    Column("description", Text, nullable=False),
)

policy_activations = Table(
    "policy_activations",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("revision", String(80), ForeignKey("policy_versions.revision"), nullable=False),
    Column("previous_revision", String(80)),
    Column("action", String(16), nullable=False),  # bootstrap | activate | rollback
    Column("activated_at", DateTime(timezone=True), nullable=False),
    Column("activated_by", String(128), nullable=False),
)


api_keys = Table(
    "api_keys",
    metadata,
    # API keys managed at run time (gateway/keystore.py); only sha256:<hex> of the key is stored
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False, index=True),
    Column("key_hash", String(80), nullable=False),
    Column("previous_hash", String(80)),  # the rotated-out key, valid until previous_valid_until
    Column("previous_valid_until", DateTime(timezone=True)),
    Column("roles", Text, nullable=False),  # JSON list of app | admin | auditor
    Column("all_tenants", Boolean, nullable=False),
    Column("allowed_models", Text),  # JSON list of aliases / deployment ids; NULL: all
    Column("limits", Text, nullable=False),  # JSON of gateway.config.Limits
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("rotated_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("generation", Integer, nullable=False),  # +1 on every change: replicas detect changes
    UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
)
