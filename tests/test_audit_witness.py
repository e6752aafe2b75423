"""What the checkpoints inside the database cannot show: a tail cut together with the
checkpoints that cover it, a whole chain deleted, a ``created_at`` column moved out of a
report's period. The first two are caught against a witness — every signed checkpoint also
appended to a file outside the database (``audit.witness_file``) or saved from ``gateway
audit head`` — the last by comparing the column with the hashed body. On real SQLite and
real PostgreSQL, through the real store, the CLI and the standalone verifier."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from typer.testing import CliRunner

from gateway.audit.chainverify import load_witness
from gateway.audit.ledger import Signer
from gateway.audit.store import AuditStore, make_engine
from gateway.cli import app as cli
from gateway.cli import migrate_database
from gateway.context import Classification, DataLevel, Decision, Principal, RequestContext
from tests.conftest import ROOT

REQUESTS = 12  # two entries each (decision + outcome): seq 1..24; checkpoints at 5, 10, 15, 20, 24 (final)
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()


def _witness_of(url: str, tmp_path: Path) -> Path:
    """The embedded default (``auto``) puts the witness beside the SQLite file; PostgreSQL
    has no default, so the PostgreSQL runs name one."""
    return Path(f"{tmp_path / 'audit.db'}-witness.jsonl") if url.startswith("sqlite") else tmp_path / "pg-witness.jsonl"


def _ctx(i: int, *, denied: bool = False) -> RequestContext:
    ctx = RequestContext(endpoint="chat.completions", requested_model="auto")
    ctx.created_at = BASE + i * 60
    ctx.principal = Principal(tenant="acme-eu", key_id="k_app", roles=("app",), home_region="eu")
    ctx.classification = Classification(DataLevel.INTERNAL, DataLevel.PUBLIC, None)
    ctx.decision = Decision(
        not denied, () if denied else ("local",), {}, {}, ("ok",), "embedded", "sha256:" + "a" * 64, 1.0
    )
    ctx.status = "pending"
    return ctx


async def _write_chain(url: str, signer: Signer, witness: Path, requests: int = REQUESTS) -> None:
    """``requests`` requests, every third denied; checkpoints every 5 entries and a final one."""
    options: dict[str, Any] = {} if url.startswith("sqlite") else {"witness": str(witness)}  # SQLite: the default
    store = AuditStore.from_url(url, signer, checkpoint_every=5, durability="process", **options)
    for i in range(requests):
        ctx = _ctx(i, denied=i % 3 == 2)
        if i % 3 != 2:
            await store.record_decision(ctx)
            ctx.chosen, ctx.status, ctx.http_status = "local", "ok", 200
        else:
            ctx.status, ctx.http_status = "denied", 403
        await store.record_outcome(ctx)
    await store.aclose()


@pytest.fixture
async def chain(audit_db_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Signer, Path]]:
    signer = Signer(Ed25519PrivateKey.generate())
    witness = _witness_of(audit_db_url, tmp_path)
    await _write_chain(audit_db_url, signer, witness)
    yield audit_db_url, signer, witness


async def _sql(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for stmt in statements:
                await conn.execute(text(stmt))
    finally:
        await engine.dispose()


async def _verify(url: str, signer: Signer, witness: Path | None = None) -> Any:
    store = AuditStore.from_url(url)
    try:
        return await store.verify([signer.public_key], load_witness(str(witness)) if witness else None)
    finally:
        await store.aclose()


def _one(report: Any) -> Any:
    [chain] = report.chains.values()
    return chain


async def test_every_signed_checkpoint_is_witnessed_and_an_intact_chain_verifies_against_it(
    chain: tuple[str, Signer, Path],
) -> None:
    url, signer, witness = chain
    lines = load_witness(str(witness))
    store = AuditStore.from_url(url)
    try:
        stored = [item async for item in store.export() if item["type"] == "checkpoint"]
        head = await store.head()
    finally:
        await store.aclose()
    assert [(w["seq"], w["body"], w["signature"]) for w in lines] == [
        (c["seq"], c["body"], c["signature"]) for c in stored
    ]
    assert [c["seq"] for c in stored][-1] == 20 and head == [stored[-1]]  # seq 1..20: 8 requests, 4 denied
    report = await _verify(url, signer, witness)
    assert report.ok, report.summary()
    assert _one(report).witnessed == len(lines) and "not covered" not in report.summary()


async def test_tail_cut_with_its_checkpoints_passes_alone_and_fails_against_the_witness(
    chain: tuple[str, Signer, Path],
) -> None:
    """The tester's truncation: records after seq 12 and the checkpoints after seq 10 deleted.
    The database alone still verifies (nothing in it covers seq 13..20), and says so; the
    witness holds the checkpoints at 15 and 20, which the chain no longer reaches."""
    url, signer, witness = chain
    await _sql(url, "DELETE FROM audit_entries WHERE seq > 12", "DELETE FROM audit_checkpoints WHERE seq > 10")
    alone = await _verify(url, signer)
    assert alone.ok and "no witness given" in alone.summary() and "cannot be ruled out" in alone.summary()
    report = await _verify(url, signer, witness)
    assert not report.ok
    assert _one(report).first_bad_seq == 13, report.summary()
    assert "witnessed checkpoint covers seq 15 (truncated)" in report.summary()


async def test_whole_chain_deleted_fails_against_the_witness(chain: tuple[str, Signer, Path]) -> None:
    url, signer, witness = chain
    await _sql(url, "DELETE FROM audit_entries", "DELETE FROM audit_checkpoints")
    report = await _verify(url, signer, witness)
    assert not report.ok and "chain is missing" in report.summary() and "(deleted)" in report.summary()


async def test_a_forged_or_altered_witness_line_fails(chain: tuple[str, Signer, Path], tmp_path: Path) -> None:
    url, signer, witness = chain
    lines = load_witness(str(witness))
    forged = tmp_path / "forged.jsonl"
    bad = dict(lines[1], signature=lines[0]["signature"])
    forged.write_text(json.dumps(bad) + "\n")
    report = await _verify(url, signer, forged)
    assert not report.ok and "witness: checkpoint signature is invalid" in report.summary()
    other = dict(lines[1], head_hash="0" * 64)  # fields no longer match the signed body
    forged.write_text(json.dumps(other) + "\n")
    assert not (await _verify(url, signer, forged)).ok


async def test_retention_keeps_verifying_against_the_witness(chain: tuple[str, Signer, Path]) -> None:
    """Prune to a checkpoint: what remains reaches the later witnessed checkpoints, the
    earlier ones cover what was removed. Prune everything: the chain keeps its newest
    checkpoint, so it reads as pruned through it, not as deleted."""
    url, signer, witness = chain
    store = AuditStore.from_url(url)
    try:
        cutoff = dt.datetime.fromtimestamp(BASE + 5.5 * 60, tz=dt.UTC)  # requests 0..5 = seq 1..10
        assert await store.prune(older_than=cutoff) == 10
        report = await store.verify([signer.public_key], load_witness(str(witness)))
        assert report.ok and _one(report).pruned_through == 10, report.summary()
        assert await store.prune(older_than=dt.datetime(2100, 1, 1, tzinfo=dt.UTC)) == 10
        report = await store.verify([signer.public_key], load_witness(str(witness)))
        chain = _one(report)
        assert report.ok and chain.records == 0 and chain.pruned_through == 20, report.summary()
        # a chain emptied this way reads as pruned: the signed time of its last checkpoint
        # is what tells an auditor whether that was within the retention period
        assert chain.pruned_signed_at and f"signed through seq 20 at {chain.pruned_signed_at}" in report.summary()
    finally:
        await store.aclose()


async def test_chains_of_several_processes_share_one_witness(audit_db_url: str, tmp_path: Path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    witness = _witness_of(audit_db_url, tmp_path)
    for _ in range(2):  # a restart: a second chain in the same database and witness
        await _write_chain(audit_db_url, signer, witness, requests=3)
    assert len({w["chain_id"] for w in load_witness(str(witness))}) == 2
    report = await _verify(audit_db_url, signer, witness)
    assert report.ok and len(report.chains) == 2
    assert all(c.witnessed >= 1 for c in report.chains.values())


async def test_a_checkpoint_that_cannot_be_witnessed_is_not_stored_and_requests_go_on(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await asyncio.to_thread(migrate_database, url)
    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(url, signer, checkpoint_every=1, witness=str(tmp_path))  # a directory
    await store.record_outcome(_ctx(0))
    await store.aclose()
    report = await _verify(url, signer)
    assert report.ok and _one(report).records == 1 and _one(report).checkpoints == 0


def test_torn_last_witness_line_is_skipped_and_other_garbage_is_refused(tmp_path: Path) -> None:
    line = json.dumps({"chain_id": "c", "seq": 1, "head_hash": "0" * 64, "body": "{}", "signature": ""})
    path = tmp_path / "w.jsonl"
    path.write_text(line + "\n" + line[:20])
    assert len(load_witness(str(path))) == 1
    path.write_text(line[:20] + "\n" + line + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_witness(str(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_witness(str(path))


# created_at is read by the since/until filters (evidence report, savings, API) and by prune,
# so a row moved out of a period must fail verify: the column is compared with the body.
TIME_TAMPERING: dict[str, tuple[str, int]] = {
    "denied_moved_to_2020": (
        "UPDATE audit_entries SET created_at = '2020-01-01 00:00:00.000000' WHERE status = 'denied'",
        5,  # request 2 is the first denied one: its only entry is seq 5
    ),
    "checkpoint_time": ("UPDATE audit_checkpoints SET created_at = '2020-01-01 00:00:00' WHERE seq = 10", 10),
}


@pytest.mark.parametrize("kind", list(TIME_TAMPERING))
async def test_created_at_moved_out_of_its_period_is_detected(chain: tuple[str, Signer, Path], kind: str) -> None:
    url, signer, _ = chain
    statement, first_bad = TIME_TAMPERING[kind]
    period = {"since": dt.datetime.fromtimestamp(BASE, tz=dt.UTC), "until": dt.datetime(2100, 1, 1, tzinfo=dt.UTC)}
    store = AuditStore.from_url(url)
    try:
        before = len([r async for r in store.iter_records(**period)])
        await _sql(url, statement)
        after = len([r async for r in store.iter_records(**period)])
        if kind == "denied_moved_to_2020":
            assert (before, after) == (REQUESTS, REQUESTS - 4)  # what the report would silently drop
        report = await store.verify([signer.public_key])
    finally:
        await store.aclose()
    assert not report.ok
    assert _one(report).first_bad_seq == first_bad, report.summary()
    assert "column created_at differs" in report.summary()


async def test_created_at_text_that_parses_the_same_but_sorts_differently_is_detected(tmp_path: Path) -> None:
    """SQLite compares the column as text: '...000000Z' reads back as the same time but
    falls outside an ``until`` bound at that very time."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await asyncio.to_thread(migrate_database, url)
    signer = Signer(Ed25519PrivateKey.generate())
    await _write_chain(url, signer, tmp_path / "unused", requests=3)
    await _sql(url, "UPDATE audit_entries SET created_at = created_at || 'Z' WHERE seq = 2")
    report = await _verify(url, signer)
    assert not report.ok and _one(report).first_bad_seq == 2, report.summary()


def _config(tmp_path: Path, url: str, signer_file: Path) -> Path:
    doc = yaml.safe_load((ROOT / "gateway.yaml").read_text())
    doc["audit"] = {"url": url, "signing_key_file": str(signer_file)}
    doc["policy"]["path"] = str(ROOT / "policies")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc))
    return config


def test_cli_verify_uses_the_configured_witness_and_head_output_is_a_witness(tmp_path: Path) -> None:
    """The tester's steps on the embedded default: a copy of the SQLite file with its tail
    and the checkpoints covering it deleted verifies alone (saying what it cannot rule
    out), fails against the witness written beside the original (``--witness``) and against
    ``gateway audit head`` output saved earlier; in place, verify finds the witness itself."""
    db = tmp_path / "audit.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate_database(url)
    key_file = tmp_path / "audit-signing-key.pem"
    signer = Signer.from_file(key_file)
    asyncio.run(_write_chain(url, signer, tmp_path / "unused"))
    config = _config(tmp_path, url, key_file)
    runner = CliRunner()
    witness = Path(f"{db}-witness.jsonl")
    assert witness.exists()

    ok = runner.invoke(cli, ["audit", "verify", "-c", str(config)])
    assert ok.exit_code == 0 and "5 witnessed" in ok.output, ok.output
    head = runner.invoke(cli, ["audit", "head", "-c", str(config)])
    assert head.exit_code == 0, head.output
    heads = tmp_path / "heads.jsonl"
    heads.write_text(head.stdout)
    assert [json.loads(line)["seq"] for line in head.stdout.splitlines()] == [20]

    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    copy_url = f"sqlite+aiosqlite:///{copy}"
    asyncio.run(
        _sql(copy_url, "DELETE FROM audit_entries WHERE seq > 12", "DELETE FROM audit_checkpoints WHERE seq > 10")
    )
    env = {"GATEWAY_AUDIT_URL": copy_url}
    alone = runner.invoke(cli, ["audit", "verify", "-c", str(config)], env=env)
    assert alone.exit_code == 0 and "cannot be ruled out" in alone.output, alone.output
    for source in (witness, heads):
        caught = runner.invoke(cli, ["audit", "verify", "-c", str(config), "--witness", str(source)], env=env)
        assert caught.exit_code == 1 and "FAILED at seq 13" in caught.output, caught.output

    asyncio.run(_sql(url, "DELETE FROM audit_entries WHERE seq > 12", "DELETE FROM audit_checkpoints WHERE seq > 10"))
    in_place = runner.invoke(cli, ["audit", "verify", "-c", str(config)])
    assert in_place.exit_code == 1 and "(truncated)" in in_place.output, in_place.output

    missing = runner.invoke(cli, ["audit", "verify", "-c", str(config), "--witness", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_cli_verify_fails_when_created_at_was_moved_out_of_the_report_period(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate_database(url)
    key_file = tmp_path / "audit-signing-key.pem"
    asyncio.run(_write_chain(url, Signer.from_file(key_file), tmp_path / "unused"))
    config = _config(tmp_path, url, key_file)
    runner = CliRunner()
    period = ["--since", "2026-03-01T00:00:00+00:00", "--until", "2026-03-02T00:00:00+00:00"]
    report = runner.invoke(cli, ["audit", "report", *period, "-c", str(config)])
    assert report.exit_code == 0 and json.loads(report.stdout)["report"]["requests"] == REQUESTS

    statement = "UPDATE audit_entries SET created_at = '2020-01-01 00:00:00.000000' WHERE status = 'denied'"
    asyncio.run(_sql(url, statement))
    report = runner.invoke(cli, ["audit", "report", *period, "-c", str(config)])
    assert json.loads(report.stdout)["report"]["requests"] == REQUESTS - 4  # the signed report lost them
    verified = runner.invoke(cli, ["audit", "verify", "-c", str(config)])
    assert verified.exit_code == 1, verified.output
    assert "FAILED at seq 5" in verified.output and "column created_at differs" in verified.output


def test_standalone_verifier_checks_an_export_against_a_witness(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate_database(url)
    signer = Signer(Ed25519PrivateKey.generate())
    asyncio.run(_write_chain(url, signer, tmp_path / "unused"))
    asyncio.run(_sql(url, "DELETE FROM audit_entries WHERE seq > 12", "DELETE FROM audit_checkpoints WHERE seq > 10"))

    async def export() -> list[dict[str, Any]]:
        store = AuditStore.from_url(url)
        try:
            return [item async for item in store.export()]
        finally:
            await store.aclose()

    dump, pub = tmp_path / "audit.jsonl", tmp_path / "audit-public.pem"
    dump.write_text("".join(json.dumps(item) + "\n" for item in asyncio.run(export())))
    pub.write_text(signer.public_pem())
    lone = tmp_path / "chainverify.py"  # the verifier alone, as an auditor copies it
    lone.write_text((ROOT / "gateway" / "audit" / "chainverify.py").read_text())
    args = [sys.executable, str(lone), str(dump), "--public-key", str(pub)]
    alone = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert alone.returncode == 0 and "no witness given" in alone.stdout, alone.stdout + alone.stderr
    caught = subprocess.run([*args, "--witness", f"{db}-witness.jsonl"], capture_output=True, text=True, cwd=tmp_path)
    assert caught.returncode == 1 and "FAILED at seq 13" in caught.stdout, caught.stdout + caught.stderr
