"""The audit store on real SQLite and real PostgreSQL: migrations up and down, the
write-ahead record completed in place, filters, and a gateway writing to PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import inspect

from gateway.audit.ledger import Signer
from gateway.audit.store import AuditStore, make_engine
from gateway.cli import migrate_database
from gateway.context import Attempt, Classification, DataLevel, Decision, Principal, RequestContext
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    url: str = request.getfixturevalue("pg_url")
    migrate_database(url, "base", downgrade=True)
    return url


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def _ctx(tenant: str = "acme-eu", status: str = "pending") -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions", requested_model="auto")
    ctx.principal = Principal(tenant=tenant, key_id="k_1", roles=("app",), home_region="eu")
    ctx.classification = Classification(
        level=DataLevel.CONFIDENTIAL, detected=DataLevel.PUBLIC, declared=DataLevel.CONFIDENTIAL, labels=("pii.email",)
    )
    ctx.decision = Decision(
        allow=True,
        eligible=("local",),
        excluded={"ext": ["jurisdiction US is not allowed"]},
        obligations={},
        reasons=("1 of 2 eligible",),
        engine="embedded",
        revision="sha256:" + "0" * 64,
        eval_ms=1.0,
    )
    ctx.status = status
    return ctx


LEDGER_TABLES = {"audit_entries", "audit_checkpoints"}


def test_migrations_upgrade_and_downgrade(db_url: str) -> None:
    migrate_database(db_url)
    assert asyncio.run(_tables(db_url)) >= LEDGER_TABLES
    migrate_database(db_url, "base", downgrade=True)
    assert not LEDGER_TABLES & asyncio.run(_tables(db_url))
    migrate_database(db_url)
    assert asyncio.run(_tables(db_url)) >= LEDGER_TABLES


async def test_decision_record_is_completed_in_place_and_filters_work(db_url: str) -> None:
    await asyncio.to_thread(migrate_database, db_url)
    store = AuditStore.from_url(db_url, Signer(Ed25519PrivateKey.generate()))
    try:
        ctx = _ctx()
        await store.record_decision(ctx)
        assert (await store.list())[0]["status"] == "pending"
        ctx.chosen = "local"
        ctx.attempts.append(Attempt("local", "ok", 12.5, 200))
        ctx.status, ctx.http_status, ctx.prompt_tokens, ctx.completion_tokens = "ok", 200, 10, 5
        await store.record_outcome(ctx)
        other = _ctx(tenant="globex-us")
        other.status = "denied"
        await store.record_outcome(other)

        assert await store.count() == 2
        assert (await store.verify(None)).ok
        [row] = await store.list(tenant="acme-eu")
        assert row["status"] == "ok" and row["chosen_deployment"] == "local"
        assert row["excluded"] == {"ext": ["jurisdiction US is not allowed"]}
        assert row["labels"] == ["pii.email"] and row["data_level"] == "confidential"
        assert row["attempts"][0]["deployment"] == "local" and row["attempts"][0]["latency_ms"] == 12.5
        assert row["created_at"].endswith("+00:00")
        assert [r["tenant"] for r in await store.list(status="denied")] == ["globex-us"]
        newest = await store.list(limit=1)
        assert newest[0]["tenant"] == "globex-us"
        assert [r["tenant"] for r in await store.list(label="pii")] == ["globex-us", "acme-eu"]
        assert len(await store.list(label="pii.email")) == 2
        assert await store.list(label="pii.e") == [] and await store.list(label="secret") == []
        assert len(await store.list(level="confidential", decision="allow")) == 2
        assert await store.list(level="public") == []
        older = await store.list(before_id=newest[0]["id"])
        assert [r["seq"] for r in older] == [2]  # decision entry 1 superseded by its outcome entry 2
        assert [r["tenant"] for r in older] == ["acme-eu"]
    finally:
        await store.aclose()


def test_gateway_writes_its_records_to_postgresql(
    start_gateway: Callable[..., GatewayUnderTest],
    pg_url: str,
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
) -> None:
    migrate_database(pg_url, "base", downgrade=True)
    gw = start_gateway(
        make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama), audit_url=pg_url
    )
    r = gw.post("/v1/chat/completions", json={"model": "external", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    rec = gw.record(r.headers["x-request-id"])
    assert rec["status"] == "ok" and rec["chosen_deployment"] == "ext-cheap"
    denied = gw.post(
        "/v1/chat/completions",
        headers={"x-data-classification": "confidential"},
        json={"model": "external", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert denied.status_code == 403
    assert gw.record(denied.headers["x-request-id"])["decision"] == "deny"
