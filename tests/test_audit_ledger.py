"""The audit ledger is tamper-evident: every kind of change to the records — modified,
deleted, reordered, inserted, truncated — is detected and names the first bad seq, on real
SQLite and real PostgreSQL, in the database and on an export verified with only the public key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from gateway.audit.ledger import Signer
from gateway.audit.store import AuditStore, make_engine
from gateway.cli import migrate_database
from gateway.context import Attempt, Classification, DataLevel, Decision, Principal, RequestContext
from tests.conftest import ROOT

REQUESTS = 12  # two entries each (decision + outcome): seq 1..24


def _ctx(i: int) -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions", requested_model="auto")
    ctx.principal = Principal(tenant="acme-eu", key_id="k_app", roles=("app",), home_region="eu")
    ctx.classification = Classification(DataLevel.INTERNAL, DataLevel.PUBLIC, None)
    ctx.decision = Decision(True, ("local",), {}, {}, ("ok",), "embedded", "sha256:" + "a" * 64, 1.0)
    ctx.status = "pending"
    return ctx


@pytest.fixture
async def ledger_db(audit_db_url: str) -> AsyncIterator[tuple[str, Signer]]:
    """A closed chain of REQUESTS requests with checkpoints every 5 entries and a final one."""
    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(audit_db_url, signer, checkpoint_every=5)
    for i in range(REQUESTS):
        ctx = _ctx(i)
        await store.record_decision(ctx)
        ctx.chosen, ctx.status, ctx.http_status = "local", "ok", 200
        ctx.attempts.append(Attempt("local", "ok", 3.0, 200))
        await store.record_outcome(ctx)
    await store.aclose()
    yield audit_db_url, signer


async def _sql(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for stmt in statements:
                await conn.execute(text(stmt))
    finally:
        await engine.dispose()


async def _verify(url: str, signer: Signer) -> Any:
    store = AuditStore.from_url(url)
    try:
        return await store.verify([signer.public_key])
    finally:
        await store.aclose()


def _one_chain(report: Any) -> Any:
    [chain] = report.chains.values()
    return chain


async def test_intact_chain_verifies_with_signed_checkpoints(ledger_db: tuple[str, Signer]) -> None:
    url, signer = ledger_db
    report = await _verify(url, signer)
    chain = _one_chain(report)
    assert report.ok, report.summary()
    assert chain.records == 2 * REQUESTS and chain.checkpoints >= 4


TAMPERING: dict[str, tuple[list[str], int]] = {
    "modified_body": (["UPDATE audit_entries SET body = REPLACE(body, '\"ok\"', '\"OK\"') WHERE seq = 7"], 7),
    "modified_column": (["UPDATE audit_entries SET tenant = 'someone-else' WHERE seq = 9"], 9),
    "modified_hash_and_body": (
        [
            "UPDATE audit_entries SET body = REPLACE(body, 'local', 'ext-us'), "
            "record_hash = 'f' || SUBSTR(record_hash, 2) WHERE seq = 10"
        ],
        10,
    ),
    "deleted": (["DELETE FROM audit_entries WHERE seq = 7"], 7),
    "reordered": (
        [
            "UPDATE audit_entries SET seq = 1000 WHERE seq = 7",
            "UPDATE audit_entries SET seq = 7 WHERE seq = 8",
            "UPDATE audit_entries SET seq = 8 WHERE seq = 1000",
        ],
        7,
    ),
    "inserted_duplicate": (
        [
            "INSERT INTO audit_entries (chain_id, seq, kind, request_id, created_at, tenant, status, data_level, "
            "decision, chosen_deployment, jurisdiction, labels, prev_hash, record_hash, body) SELECT chain_id, 25, "
            "kind, request_id, created_at, tenant, status, data_level, decision, chosen_deployment, jurisdiction, "
            "labels, prev_hash, record_hash, body "
            "FROM audit_entries WHERE seq = 24",
        ],
        25,
    ),
    "truncated": (["DELETE FROM audit_entries WHERE seq > 20"], 21),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_every_kind_of_tampering_is_detected_with_the_first_bad_seq(
    ledger_db: tuple[str, Signer], kind: str
) -> None:
    url, signer = ledger_db
    statements, first_bad = TAMPERING[kind]
    await _sql(url, *statements)
    report = await _verify(url, signer)
    assert not report.ok
    assert _one_chain(report).first_bad_seq == first_bad, report.summary()


async def test_forged_checkpoint_signature_is_detected(ledger_db: tuple[str, Signer]) -> None:
    url, _ = ledger_db
    report = await _verify(url, Signer(Ed25519PrivateKey.generate()))  # auditor holds another key
    assert not report.ok and "unknown key" in report.summary()


async def test_gateway_restart_starts_a_new_chain_and_both_verify(audit_db_url: str) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    for _ in range(2):
        store = AuditStore.from_url(audit_db_url, signer)
        await store.record_outcome(_ctx(0))
        await store.aclose()
    report = await _verify(audit_db_url, signer)
    assert report.ok and len(report.chains) == 2


async def test_concurrent_appends_are_group_committed_in_one_gapless_chain(audit_db_url: str) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(audit_db_url, signer)
    await asyncio.gather(*(store.record_outcome(_ctx(i)) for i in range(300)))
    await store.aclose()
    report = await _verify(audit_db_url, signer)
    assert report.ok and _one_chain(report).records == 300


@pytest.mark.parametrize("durability", ["fsync", "process"])
async def test_durability_setting_reaches_the_database(audit_db_url: str, durability: str) -> None:
    """``fsync``: SQLite synchronous=FULL / PostgreSQL's default synchronous_commit=on;
    ``process``: SQLite synchronous=NORMAL / the ledger's transactions SET LOCAL
    synchronous_commit TO OFF (PostgreSQL's own session stays on). Records verify either way."""
    from sqlalchemy import event

    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(audit_db_url, signer, durability=durability)
    statements: list[str] = []
    event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        await asyncio.gather(*(store.record_outcome(_ctx(i)) for i in range(20)))
        if audit_db_url.startswith("sqlite"):
            writer = store.ledger._sqlite
            assert writer is not None and writer._conn is not None
            level = writer._conn.execute("PRAGMA synchronous").fetchone()[0]
            assert level == {"fsync": 2, "process": 1}[durability]  # FULL = 2, NORMAL = 1
            assert not any("INSERT INTO audit_entries" in s for s in statements)  # on the writer thread
        else:
            relaxed = [s for s in statements if "synchronous_commit" in s]
            inserts = [s for s in statements if s.startswith("INSERT INTO audit_entries")]
            assert inserts and len(relaxed) == (len(inserts) if durability == "process" else 0)
            async with store.engine.connect() as conn:
                assert (await conn.execute(text("SHOW synchronous_commit"))).scalar() == "on"
    finally:
        await store.aclose()
    report = await _verify(audit_db_url, signer)
    assert report.ok and _one_chain(report).records == 20


async def test_process_durability_waits_for_a_write_lock_held_elsewhere_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, ``process`` commits on the event loop without waiting for the write lock;
    when another connection holds it the batch goes to the writer thread and waits there
    (the loop stays free). Every CHECKPOINT_ROWS rows the thread checkpoints the WAL."""
    import sqlite3

    from gateway.audit.ledger import _SqliteWriter

    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await asyncio.to_thread(migrate_database, url)  # it runs its own event loop
    monkeypatch.setattr(_SqliteWriter, "CHECKPOINT_ROWS", 10)
    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(url, signer, durability="process")
    other = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    try:
        await store.record_outcome(_ctx(0))  # inline
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        pending = asyncio.ensure_future(store.record_outcome(_ctx(1)))
        ticks = 0
        while ticks < 20:  # the loop keeps running while the batch waits on the thread
            await asyncio.sleep(0.01)
            ticks += 1
        assert not pending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(pending, timeout=10)
        await asyncio.gather(*(store.record_outcome(_ctx(i)) for i in range(2, 30)))
        writer = store.ledger._sqlite
        assert writer is not None and writer._checkpointing is not None
        await writer._checkpointing
        busy, wal_frames, checkpointed = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and wal_frames == checkpointed
    finally:
        other.close()
        await store.aclose()
    report = await _verify(url, signer)
    assert report.ok and _one_chain(report).records == 30


def test_unknown_durability_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        AuditStore.from_url("sqlite+aiosqlite:///:memory:", Signer(Ed25519PrivateKey.generate()), durability="lazy")


def _export(url: str, path: Path) -> None:
    async def run() -> None:
        store = AuditStore.from_url(url)
        try:
            with path.open("w") as fh:
                async for item in store.export():
                    fh.write(json.dumps(item) + "\n")
        finally:
            await store.aclose()

    asyncio.run(run())


def test_export_verifies_standalone_with_only_the_public_key(ledger_db: tuple[str, Signer], tmp_path: Path) -> None:
    url, signer = ledger_db
    export, pub = tmp_path / "audit.jsonl", tmp_path / "audit-public.pem"
    _export(url, export)
    pub.write_text(signer.public_pem())
    script = ROOT / "gateway" / "audit" / "chainverify.py"
    # Run the verifier as a lone file copied elsewhere: it needs only sha256 and Ed25519.
    lone = tmp_path / "chainverify.py"
    lone.write_text(script.read_text())
    ok = subprocess.run(
        [sys.executable, str(lone), str(export), "--public-key", str(pub)], capture_output=True, text=True, cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK (24 records" in ok.stdout

    lines = export.read_text().splitlines()
    lines.pop(10)  # drop one entry from the export
    export.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(
        [sys.executable, str(lone), str(export), "--public-key", str(pub)], capture_output=True, text=True, cwd=tmp_path
    )
    assert bad.returncode == 1 and "FAILED at seq 11" in bad.stdout


async def test_retention_prunes_to_a_checkpoint_and_the_rest_still_verifies(audit_db_url: str) -> None:
    import datetime as dt

    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(audit_db_url, signer, checkpoint_every=5)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    for i in range(REQUESTS):  # request i at base + i hours: seq 2i+1 (decision), 2i+2 (outcome)
        ctx = _ctx(i)
        ctx.created_at = base + i * 3600
        await store.record_decision(ctx)
        ctx.status = "ok"
        await store.record_outcome(ctx)
    await store.aclose()  # checkpoints at seq 5, 10, 15, 20 and a final one at 24

    reader = AuditStore.from_url(audit_db_url)
    try:
        cutoff = dt.datetime.fromtimestamp(base + 6.5 * 3600, tz=dt.UTC)  # requests 0..6 = seq 1..14
        assert await reader.prune(older_than=cutoff) == 10  # up to the checkpoint at seq 10
        report = await reader.verify([signer.public_key])
        chain = _one_chain(report)
        assert report.ok, report.summary()
        assert chain.records == 14 and chain.pruned_through == 10
        await _sql(audit_db_url, "DELETE FROM audit_entries WHERE seq = 11")  # deleting the new oldest is caught
        assert _one_chain(await reader.verify([signer.public_key])).first_bad_seq == 11
    finally:
        await reader.aclose()


CANONICAL_CASES: list[Any] = [
    {"b": 1, "a": [True, False, None], "c": {"z": 0.5, "y": -0.0, "x": 3.0}},
    {"floats": [0.1, 1e-4, 9.999e-5, 1e15, 1e16, 1e21, 123456789.125, -2.5e-7, 5e-324]},
    {"ints": [0, -1, 2**53 - 1, -(2**53 - 1)], "big": 12345678901234},
    {"text": 'quote " backslash \\ slash / tab \t nl \n ctrl \x01 del \x7f é 中 😀 \u2028'},
    {"é": 1, "e": 2, "\U0001f600": 3, "\uffff": 4, "": 5},
    {"nested": [[{"k": [1, {"j": "v"}]}]], "labels": ["pii.email", "pii.iban"]},
    # exponent-range floats take the fast path with ES formatting (a request's cost in USD)
    {"cost_usd": 2.3e-06, "tiny": [1e-7, 9.5e-7, 5e-5, -3.4e-12, 1e-300], "huge": [1.5e17, 2e20, 2e21, 6.02e23]},
    {"nul": "a\x00b", "cost_usd": 1e-05},  # a NUL could spell a placeholder: the reference path
    {"\x00lead": "\x00", "sub": OrderedDict(a=3.0, b=[1.5e-6, (2.0,)])},  # dict/tuple subclasses
    [],
    {},
]


@pytest.mark.parametrize("value", CANONICAL_CASES)
def test_fast_canonical_json_matches_the_rfc8785_reference(value: Any) -> None:
    import rfc8785

    from gateway.audit.ledger import canonical

    assert canonical(value) == rfc8785.dumps(value).decode()


def test_fast_canonical_json_matches_the_reference_on_random_floats_and_strings() -> None:
    """orjson's number and string writing against RFC 8785 over every float class: random
    bit patterns (all magnitudes, integral or not, subnormals) and each decade's boundaries."""
    import random
    import struct

    import rfc8785

    from gateway.audit.ledger import canonical

    rng = random.Random(20261130)
    floats = [struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(20_000)]
    floats = [x for x in floats if x == x and abs(x) != float("inf")]
    for e in range(-12, 24):
        for m in (1.0, 1.5, 9.999999, 9.5):
            floats += [m * 10.0**e, -m * 10.0**e, float(int(m * 10.0**e))]
    chunks = [floats[i : i + 50] for i in range(0, len(floats), 50)]
    for chunk in chunks:
        value = {"v": chunk, "s": "".join(chr(rng.randrange(0, 0xD800)) for _ in range(20))}
        assert canonical(value) == rfc8785.dumps(value).decode()


async def test_stored_bodies_are_exactly_rfc8785_of_themselves(ledger_db: tuple[str, Signer]) -> None:
    import rfc8785

    url, _ = ledger_db
    store = AuditStore.from_url(url)
    try:
        items = [item async for item in store.export() if item["type"] == "entry"]
    finally:
        await store.aclose()
    assert items
    for item in items:
        assert rfc8785.dumps(json.loads(item["body"])).decode() == item["body"]


async def test_values_json_cannot_carry_are_recorded_as_text_not_lost(audit_db_url: str) -> None:
    """A record holding what RFC 8785 cannot write — an upstream's count beyond 2^53, an
    unpaired surrogate in an upstream's error text, a non-finite float — is still written
    (those values as escaped text) instead of failing the request with audit_unavailable and
    leaving it unrecorded; the chain verifies and the stored body is canonical."""
    import rfc8785

    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(audit_db_url, signer)
    try:
        bad = _ctx(0)
        bad.prompt_tokens = 2**80  # e.g. a hostile upstream's usage: beyond I-JSON's range
        bad.error = "upstream said \ud800 here"
        bad.cost_usd = float("inf")
        await store.record_outcome(bad)
        await store.record_outcome(_ctx(1))
        assert await store.count() == 2
        record = await store.get(bad.request_id)
        assert record is not None
        assert record["prompt_tokens"] == str(2**80) and record["cost_usd"] == "inf"
        assert record["error"] == "upstream said \\ud800 here"
        bodies = [item["body"] async for item in store.export() if item["type"] == "entry"]
        assert all(rfc8785.dumps(json.loads(body)).decode() == body for body in bodies)
    finally:
        await store.aclose()
    report = await _verify(audit_db_url, signer)
    assert report.ok and _one_chain(report).records == 2
