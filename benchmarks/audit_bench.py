"""Audit ledger benchmark: durable audit records per second with group commit.

Usage: .venv/bin/python benchmarks/audit_bench.py [--quick]

    --quick            ~20 s run (fewer records per level, short time caps)
    --only BACKEND     run only ``sqlite`` or ``postgresql``
    --profile          wrap the measured runs in cProfile and print the top functions
                       (main thread only: aiosqlite's worker thread is not profiled)
    --durability D     ``audit.durability``: ``fsync`` (default) or ``process``

A benchmark, not a test: it asserts nothing except that the chain verifies afterwards.

For each backend — SQLite (a file in a temp dir, WAL, the ``make_engine`` defaults) and
PostgreSQL (127.0.0.1:5432, trust auth, user ``postgres``, a throwaway database created and
dropped here, migrated with ``gateway.cli.migrate_database``) — one :class:`AuditStore`
(one chain) takes, per concurrency level 1, 16, 64 and 256, a fixed number of records
(bounded in time too) from that many asyncio tasks, each awaiting
``AuditStore.record_outcome(ctx)`` in a loop. Every append returns only once the transaction
holding it has committed, so each counted record is durable (SQLite WAL with its default
``synchronous=FULL``; PostgreSQL with whatever ``fsync``/``synchronous_commit`` the server
runs — printed with the results). A last run at concurrency 64 does what the gateway does per
request: ``record_decision`` then ``record_outcome`` (two appends), reported as requests/s.

Reported per run: records/s, CPU ms per operation (this process's user + system time, all
threads, over the run — the writer thread's commits included; an operation is one append, or
one decision + outcome pair), p50/p99 per-append latency (ms, from the await to its return),
mean/max batch size (audit entries per transaction, counted with engine events — a
``before_execute`` hook sums the rows of each ``INSERT INTO audit_entries`` on the
connection, the ``commit`` hook closes the transaction; gateway code is not touched), and
the number of transactions. After each backend the whole database is verified with
``AuditStore.verify([public key])``.

Results: a markdown table on stdout and ``benchmarks/results/audit_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.sql.dml import Insert  # noqa: E402

from gateway.audit.ledger import Signer  # noqa: E402
from gateway.audit.models import checkpoints, entries  # noqa: E402
from gateway.audit.store import AuditStore  # noqa: E402
from gateway.cli import migrate_database  # noqa: E402
from gateway.context import Attempt, Classification, DataLevel, Decision, Principal, RequestContext  # noqa: E402

TARGET_RECORDS_PER_S = 3000
CONCURRENCY = (1, 16, 64, 256)
PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}
RESULTS = ROOT / "benchmarks" / "results" / "audit_bench.json"


# --------------------------------------------------------------------------- plan


def plan(quick: bool) -> dict[str, Any]:
    """Records per level and time caps (a level stops early when its cap is reached)."""
    if quick:
        return {
            "records": {1: 1000, 16: 5000, 64: 5000, 256: 5000},
            "pair_requests": 2500,
            "cap_s": 3.0,
            "warmup": 300,
        }
    return {
        "records": {1: 3000, 16: 20000, 64: 20000, 256: 20000},
        "pair_requests": 10000,
        "cap_s": 15.0,
        "warmup": 500,
    }


# --------------------------------------------------------------------------- contexts


_PRINCIPAL = Principal(tenant="acme-eu", key_id="k_app", roles=("app",), home_region="eu")
_CLASSIFICATION = Classification(DataLevel.INTERNAL, DataLevel.PUBLIC, None)
_DECISION = Decision(True, ("local",), {}, {}, ("ok",), "embedded", "sha256:" + "a" * 64, 1.0)


def decided_ctx() -> RequestContext:
    """A request after the decision stage (as tests/test_audit_ledger.py builds it)."""
    ctx = RequestContext(endpoint="chat.completions", requested_model="auto")
    ctx.principal = _PRINCIPAL
    ctx.classification = _CLASSIFICATION
    ctx.decision = _DECISION
    ctx.status = "pending"
    return ctx


def finish(ctx: RequestContext) -> RequestContext:
    """The same request after execution: the outcome fields of a successful call."""
    ctx.chosen, ctx.status, ctx.http_status = "local", "ok", 200
    ctx.attempts.append(Attempt("local", "ok", 3.0, 200))
    ctx.prompt_tokens, ctx.completion_tokens, ctx.cost_usd = 42, 17, 0.000123
    return ctx


def outcome_ctx() -> RequestContext:
    return finish(decided_ctx())


# --------------------------------------------------------------------------- instrumentation


class TxnCounter:
    """Counts audit-entry rows per committed transaction via engine events (no gateway edits);
    on an SQLite file the ledger writes through its own sqlite3 connection, whose writes
    :func:`bench_backend` counts by wrapping them."""

    def __init__(self, engine: Any) -> None:
        self.batches: list[int] = []
        self.checkpoint_txns = 0
        sync = engine.sync_engine
        event.listen(sync, "before_execute", self._before_execute)
        event.listen(sync, "commit", self._commit)
        event.listen(sync, "rollback", self._rollback)

    def _before_execute(self, conn: Any, clause: Any, multiparams: Any, params: Any, _opts: Any) -> None:
        if isinstance(clause, Insert):
            if clause.table is entries:
                n = len(multiparams) if multiparams else 1
                conn.info["bench_rows"] = conn.info.get("bench_rows", 0) + n
            elif clause.table is checkpoints:
                conn.info["bench_cp"] = True

    def _commit(self, conn: Any) -> None:
        rows = conn.info.pop("bench_rows", 0)
        if rows:
            self.batches.append(rows)
        if conn.info.pop("bench_cp", False):
            self.checkpoint_txns += 1

    def _rollback(self, conn: Any) -> None:
        conn.info.pop("bench_rows", None)
        conn.info.pop("bench_cp", None)

    def mark(self) -> int:
        return len(self.batches)

    def since(self, mark: int) -> list[int]:
        return self.batches[mark:]


# --------------------------------------------------------------------------- runs


def _pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    idx = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[idx]


async def _drive(n_tasks: int, items: Iterator[Any], op: Any, cap_s: float) -> tuple[list[float], float, float]:
    """``n_tasks`` tasks take items from one iterator and await ``op(item)`` until the
    iterator is empty or ``cap_s`` passed. Returns per-op latencies (ms), wall seconds and
    this process's CPU seconds (user + system, every thread) over the run."""
    latencies: list[float] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + cap_s

    async def worker() -> None:
        for item in items:  # shared iterator: each item is taken by exactly one task
            t0 = time.perf_counter()
            await op(item)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if t0 > deadline:
                return

    await asyncio.gather(*(worker() for _ in range(n_tasks)))
    return latencies, time.perf_counter() - start, time.process_time() - cpu0


def _row(
    backend: str,
    mode: str,
    concurrency: int,
    latencies: list[float],
    wall: float,
    cpu_s: float,
    batches: list[int],
    appends_per_op: int,
    planned: int,
) -> dict[str, Any]:
    lat = sorted(latencies)
    ops = len(lat)
    records = ops * appends_per_op
    return {
        "backend": backend,
        "mode": mode,
        "concurrency": concurrency,
        "planned_ops": planned,
        "ops": ops,
        "records": records,
        "seconds": round(wall, 3),
        "records_per_s": round(records / wall, 1),
        "cpu_ms_per_op": round(cpu_s * 1000.0 / ops, 3) if ops else None,
        "requests_per_s": round(ops / wall, 1) if appends_per_op == 2 else None,
        "p50_ms": round(_pct(lat, 0.50), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "transactions": len(batches),
        "mean_batch": round(sum(batches) / len(batches), 1) if batches else None,
        "max_batch": max(batches) if batches else None,
        "meets_target": records / wall >= TARGET_RECORDS_PER_S,
    }


async def bench_backend(backend: str, url: str, cfg: dict[str, Any]) -> dict[str, Any]:
    signer = Signer(Ed25519PrivateKey.generate())
    store = AuditStore.from_url(url, signer, durability=cfg["durability"])
    counter = TxnCounter(store._engine)  # the store's own engine: events only, no behaviour change
    writer = store.ledger._sqlite
    if writer is not None:  # an SQLite file: batches go through the ledger's own sqlite3 connection
        write = writer._write

        def counted(values: list[Any], wait: bool = True) -> None:
            write(values, wait)
            counter.batches.append(len(values))

        writer._write = counted  # type: ignore[method-assign]
    rows: list[dict[str, Any]] = []
    try:
        # warm-up: start the writer task, open pooled connections, prime statement caches
        warm = iter([outcome_ctx() for _ in range(cfg["warmup"])])
        await _drive(16, warm, store.record_outcome, 30.0)

        for c in CONCURRENCY:
            n = cfg["records"][c]
            ctxs = [outcome_ctx() for _ in range(n)]
            mark = counter.mark()
            lat, wall, cpu = await _drive(c, iter(ctxs), store.record_outcome, cfg["cap_s"])
            row = _row(backend, "outcome", c, lat, wall, cpu, counter.since(mark), 1, n)
            rows.append(row)
            _progress(row)

        # gateway shape: decision (write-ahead) then outcome, two appends per request
        async def request(ctx: RequestContext) -> None:
            await store.record_decision(ctx)
            await store.record_outcome(finish(ctx))

        n = cfg["pair_requests"]
        ctxs = [decided_ctx() for _ in range(n)]
        mark = counter.mark()
        lat, wall, cpu = await _drive(64, iter(ctxs), request, cfg["cap_s"])
        row = _row(backend, "decision+outcome", 64, lat, wall, cpu, counter.since(mark), 2, n)
        rows.append(row)
        _progress(row)
    finally:
        await store.aclose()  # flush + final signed checkpoint

    reader = AuditStore.from_url(url)
    try:
        t0 = time.perf_counter()
        report = await reader.verify([signer.public_key])
        verify_s = time.perf_counter() - t0
        [chain] = report.chains.values() if len(report.chains) == 1 else [None]
    finally:
        await reader.aclose()
    expected = cfg["warmup"] + sum(r["records"] for r in rows)
    ok = report.ok and chain is not None and chain.records == expected
    print(f"  verify {backend}: {'OK' if ok else 'FAILED'} in {verify_s:.2f} s — {report.summary()}")
    if chain is not None and chain.records != expected:
        print(f"  expected {expected} records in the chain, found {chain.records}")
    return {
        "rows": rows,
        "verify": {
            "ok": ok,
            "records": chain.records if chain else None,
            "checkpoints": chain.checkpoints if chain else None,
            "checkpoint_transactions": counter.checkpoint_txns,
            "seconds": round(verify_s, 2),
            "summary": report.summary(),
        },
    }


def _progress(row: dict[str, Any]) -> None:
    rate = f"{row['requests_per_s']:.0f} req/s, " if row["requests_per_s"] else ""
    print(
        f"  {row['backend']:<10} {row['mode']:<17} c={row['concurrency']:<4} {row['records']:>6} records "
        f"in {row['seconds']:6.2f} s: {rate}{row['records_per_s']:8.0f} records/s, "
        f"CPU {row['cpu_ms_per_op']:.3f} ms/op, p50 {row['p50_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms, mean batch {row['mean_batch']}",
        flush=True,
    )


# --------------------------------------------------------------------------- databases


async def _pg_admin(sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(**PG_ADMIN)
    try:
        if sql.lstrip().upper().startswith(("CREATE", "DROP")):
            return await conn.execute(sql)
        return await conn.fetch(sql)
    finally:
        await conn.close()


def pg_settings() -> dict[str, str]:
    rows = asyncio.run(
        _pg_admin(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('server_version', 'fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay')"
        )
    )
    return {r["name"]: r["setting"] for r in rows}


async def _sqlite_settings(url: str) -> dict[str, str]:
    from gateway.audit.store import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            sync = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
    finally:
        await engine.dispose()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"version": sqlite3.sqlite_version, "journal_mode": str(mode), "synchronous": names.get(sync, str(sync))}


def disk_fsync(directory: str, n: int = 300) -> dict[str, float]:
    """p50/p99 ms of one 4 KiB append + ``os.fsync`` to a file in ``directory``: this disk's
    floor for one durable commit (a SQLite ``synchronous=FULL`` commit does at least one)."""
    path = Path(directory) / "fsync.probe"
    lat: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
            lat.append((time.perf_counter() - t0) * 1000.0)
    finally:
        os.close(fd)
        path.unlink()
    lat.sort()
    return {"p50_ms": round(_pct(lat, 0.5), 3), "p99_ms": round(_pct(lat, 0.99), 3)}


def run_sqlite(cfg: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        fsync = disk_fsync(tmp)
        print(f"disk: 4 KiB append + fsync p50 {fsync['p50_ms']} ms, p99 {fsync['p99_ms']} ms")
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'audit.db'}"
        migrate_database(url)
        settings = asyncio.run(_sqlite_settings(url))
        print(f"SQLite {settings}")
        result = asyncio.run(bench_backend("sqlite", url, cfg))
        result["settings"] = {**settings, "disk_fsync": fsync}
        return result


def run_postgresql(cfg: dict[str, Any]) -> dict[str, Any]:
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    settings = pg_settings()
    print(f"PostgreSQL {settings}")
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        migrate_database(url)
        result = asyncio.run(bench_backend("postgresql", url, cfg))
        result["settings"] = settings
        return result
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --------------------------------------------------------------------------- output


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| backend | run | concurrency | records | records/s | requests/s | CPU ms/op | p50 ms | p99 ms "
        "| mean batch | max batch | ≥ 3,000/s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|\n"
    )
    lines = []
    for r in rows:
        req = f"{r['requests_per_s']:,.0f}" if r["requests_per_s"] else "—"
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['concurrency']} | {r['records']:,} | {r['records_per_s']:,.0f} "
            f"| {req} | {r['cpu_ms_per_op']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['mean_batch']} | {r['max_batch']} "
            f"| {'yes' if r['meets_target'] else 'no'} |"
        )
    return head + "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~20 s run")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--profile", action="store_true", help="cProfile the runs (main thread)")
    parser.add_argument("--durability", choices=("fsync", "process"), default="fsync", help="audit.durability")
    args = parser.parse_args()
    cfg = {**plan(args.quick), "durability": args.durability}
    backends = [b for b in ("sqlite", "postgresql") if args.only in (None, b)]

    load_before = os.getloadavg()
    started = time.perf_counter()
    profiler = cProfile.Profile() if args.profile else None
    results: dict[str, Any] = {}
    for backend in backends:
        print(f"== {backend}", flush=True)
        if profiler:
            profiler.enable()
        try:
            results[backend] = run_sqlite(cfg) if backend == "sqlite" else run_postgresql(cfg)
        finally:
            if profiler:
                profiler.disable()
    total = time.perf_counter() - started

    rows = [r for b in backends for r in results[b]["rows"]]
    print()
    print(table(rows))
    print()
    for b in backends:
        v = results[b]["verify"]
        print(f"verify {b}: {'OK' if v['ok'] else 'FAILED'} ({v['records']} records, {v['checkpoints']} checkpoints)")
    outcome_rows = [r for r in rows if r["mode"] == "outcome"]
    best = max(outcome_rows, key=lambda r: r["records_per_s"])
    met = [f"{r['backend']} {r['mode']} c={r['concurrency']}" for r in rows if r["meets_target"]]
    print(
        f"target ≥ {TARGET_RECORDS_PER_S:,} durable records/s: "
        + (f"met by {', '.join(met)}" if met else f"NOT met (best {best['records_per_s']:,.0f}/s)")
    )
    print(f"total {total:.1f} s; 1-min load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")

    out = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "benchmarks/audit_bench.py"
        + (" --quick" if args.quick else "")
        + (f" --durability {args.durability}" if args.durability != "fsync" else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__,
            # other processes share these cores; a busy machine lowers the numbers
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "target_records_per_s": TARGET_RECORDS_PER_S,
        "plan": {**cfg, "records": {str(k): v for k, v in cfg["records"].items()}},
        "backends": {b: {"settings": results[b]["settings"], "verify": results[b]["verify"]} for b in backends},
        "results": rows,
        "total_seconds": round(total, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")

    if profiler:
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        print(buf.getvalue())
    return 0 if all(results[b]["verify"]["ok"] for b in backends) else 1


if __name__ == "__main__":
    sys.exit(main())
