"""``gateway`` command line: serve, up (local demo stack), migrate, audit, keys, config.

Exit codes: 0 ok, 2 bad configuration (the message names file, path and reason).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

import asyncio
import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.auth import generate_key, hash_key
from gateway.config import GatewayConfig, Settings, load_config, with_env_overrides
from gateway.errors import ConfigError

__all__ = ["app", "main"]

app = typer.Typer(help="Sovereign Gateway: policy-aware, OpenAI-compatible LLM gateway.", no_args_is_help=True)
audit_app = typer.Typer(help="Read decision records.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored as hashes only).", no_args_is_help=True)
config_app = typer.Typer(help="Configuration checks.", no_args_is_help=True)
policy_app = typer.Typer(help="Versioned policies: test, push, activate, roll back, what-if.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="GATEWAY_CONFIG", help="gateway.yaml path")]
err = Console(stderr=True)

DEMO_KEYS = {"sk-demo-acme-app": "app", "sk-demo-acme-auditor": "auditor"}
"""Well-known demo keys whose hashes the example gateway.yaml carries (never for production)."""


def _period(since: str, until: str) -> tuple[dt.datetime, dt.datetime]:
    """Parse a period: ISO 8601 times (UTC when no offset) or durations back from now (``24h``,
    ``7d``). Exits 2 naming the bad option."""
    from gateway.errors import GatewayError
    from gateway.schemas import parse_since

    def parse(value: str, name: str) -> dt.datetime:
        try:
            return parse_since(value, param=name)
        except GatewayError as exc:
            err.print(f"[bold red]error[/]: --{name}: {exc.message}: {value!r}")
            raise typer.Exit(2) from None

    start, end = parse(since, "since"), parse(until, "until")
    if end <= start:
        err.print("[bold red]error[/]: --until must be after --since")
        raise typer.Exit(2)
    return start, end


def _load(path: Path) -> GatewayConfig:
    """gateway.yaml at ``path`` with the environment's overrides (GATEWAY_REDIS_URL); exit 2
    with the reason if invalid."""
    try:
        return with_env_overrides(load_config(path), Settings())
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]: {exc.message}")
        raise typer.Exit(2) from None


def _audit_url(config: GatewayConfig) -> str:
    return os.environ.get("GATEWAY_AUDIT_URL") or config.audit.url


def migrate_database(url: str, revision: str = "head", *, downgrade: bool = False) -> None:
    """Run the Alembic migrations in ``migrations/`` on ``url`` (upgrade or downgrade)."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["url"] = url
    if downgrade:
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)


@app.command()
def serve(
    config: ConfigOpt = Path("gateway.yaml"),
    host: Annotated[str, typer.Option(envvar="GATEWAY_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="GATEWAY_PORT")] = 8080,
) -> None:
    """Start the gateway (HTTP on HOST:PORT)."""
    _serve(_load(config), Settings(config=config, host=host, port=port))


def _serve(cfg: GatewayConfig, settings: Settings) -> None:
    """Run the gateway app for ``cfg`` under uvicorn on ``settings.host:settings.port``."""
    import uvicorn

    from gateway.api.server import GatewayHttpProtocol
    from gateway.main import create_app

    # uvloop + httptools (runtime dependencies): the fastest event loop and HTTP parser
    # uvicorn supports (benchmarks/run_bench.py); "auto" would pick them too when installed,
    # named here so a missing one fails loudly instead of silently costing throughput. The
    # protocol is uvicorn's httptools one with the OpenAI error shape on unparseable requests.
    uvicorn.run(
        create_app(cfg, settings, freeze_gc=True),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=GatewayHttpProtocol,
        backlog=4096,
    )


@app.command()
def migrate(
    config: ConfigOpt = Path("gateway.yaml"),
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
    down: Annotated[bool, typer.Option("--down", help="downgrade to REVISION")] = False,
) -> None:
    """Create or upgrade the audit database schema (Alembic)."""
    url = _audit_url(_load(config))
    migrate_database(url, revision, downgrade=down)
    typer.echo(f"audit database at {url}: {'downgraded' if down else 'migrated'} to {revision}")


@app.command()
def up(
    config: ConfigOpt = Path("gateway.yaml"),
    port: Annotated[int, typer.Option(envvar="GATEWAY_PORT")] = 8080,
    model_port: Annotated[
        int | None,
        typer.Option(
            envvar="GATEWAY_MODEL_PORT",
            help="llama.cpp server port (default: the port in the local model deployment's api_base, "
            "else 8081); that deployment is pointed at it",
        ),
    ] = None,
) -> None:
    """Local demo stack: migrate SQLite, start the llama.cpp server with SmolLM2, serve."""
    from gateway.localmodel import ensure_port_free, point_at_local_model, start_llama_server, wait_ready

    cfg, model_port = point_at_local_model(_load(config), model_port)
    try:  # before anything starts: the gateway's own port must be free too
        ensure_port_free("127.0.0.1", port, holder="a gateway left running?", option="--port or GATEWAY_PORT")
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    migrate_database(_audit_url(cfg))
    log = Path(".gateway/llama-server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"starting local model (llama.cpp + SmolLM2-135M-Instruct) on 127.0.0.1:{model_port} ...")
    try:
        proc = start_llama_server(model_port, log=log)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so the
    # `finally` below still stops the model server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        wait_ready(f"http://127.0.0.1:{model_port}/v1", process=proc)
        configured = {k.hash for k in cfg.keys}
        demo = next((k for k in DEMO_KEYS if hash_key(k) in configured and DEMO_KEYS[k] == "app"), None)
        typer.echo(f"\nSovereign Gateway on http://127.0.0.1:{port}  (config {config}, audit {_audit_url(cfg)})")
        if demo:
            typer.echo(f"Demo API key: {demo}\nTry:\n")
            typer.echo(
                f"  curl -s http://127.0.0.1:{port}/v1/chat/completions \\\n"
                f"    -H 'Authorization: Bearer {demo}' -H 'Content-Type: application/json' \\\n"
                "    -H 'x-data-classification: confidential' \\\n"
                '    -d \'{"model": "auto", "messages": [{"role": "user", "content": "Say hello"}], '
                '"max_tokens": 30}\'\n'
            )
        _serve(cfg, Settings(config=config, host="127.0.0.1", port=port))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()


@app.command("local-model")
def local_model(port: Annotated[int, typer.Option()] = 8081) -> None:
    """Run only the llama.cpp server with the shipped SmolLM2 GGUF (foreground)."""
    from gateway.localmodel import start_llama_server

    proc = start_llama_server(port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` stops the server too
    try:
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@audit_app.command("list")
def audit_list(
    config: ConfigOpt = Path("gateway.yaml"),
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    status: Annotated[str | None, typer.Option(help="only this status (ok, denied, invalid…)")] = None,
    level: Annotated[str | None, typer.Option(help="only this data level")] = None,
    label: Annotated[str | None, typer.Option(help="only records with this label or label prefix")] = None,
    deployment: Annotated[str | None, typer.Option(help="only requests served by this deployment")] = None,
    jurisdiction: Annotated[str | None, typer.Option(help="only requests served in this jurisdiction")] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Decision records, newest first."""
    from gateway.audit.store import AuditStore

    async def fetch() -> list[dict[str, Any]]:
        store = AuditStore.from_url(_audit_url(_load(config)))
        try:
            return await store.list(
                tenant=tenant, status=status, level=level, label=label, deployment=deployment,
                jurisdiction=jurisdiction, decision=decision, limit=limit,
            )  # fmt: skip
        finally:
            await store.aclose()

    rows = asyncio.run(fetch())
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    table = Table(title=f"decision records (newest first, {len(rows)})")
    columns = ("id", "time", "endpoint", "tenant", "key", "model", "level", "decision", "deployment", "status",
               "tokens", "ms")  # fmt: skip
    for col in columns:
        table.add_column(col)
    for r in rows:
        tokens = "" if r.get("prompt_tokens") is None else f"{r['prompt_tokens']}+{r['completion_tokens']}"
        table.add_row(
            str(r["id"]), r["created_at"][:19], r.get("endpoint") or "", r.get("tenant") or "", r.get("key_id") or "",
            r.get("requested_model") or "", r.get("data_level") or "", r.get("decision") or "",
            r.get("chosen_deployment") or "", r["status"], tokens,
            f"{r['latency_ms']:.0f}" if r.get("latency_ms") is not None else "",
        )  # fmt: skip
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


def _public_keys(paths: list[Path] | None, config: GatewayConfig | None) -> list[Any]:
    """Public keys from PEM files, else from the configured signing key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from gateway.audit.ledger import Signer

    keys: list[Any] = []
    for path in paths or []:
        key = load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            err.print(f"[bold red]error[/]: {path} is not an Ed25519 public key")
            raise typer.Exit(2)
        keys.append(key)
    if not keys and config is not None:
        keys.append(Signer.from_file(Path(config.audit.signing_key_file), create=False).public_key)
    return keys


def _witness(paths: list[Path] | None, default: Path | None) -> list[dict[str, Any]] | None:
    """The checkpoints of the witness files ``paths``, else of ``default`` if it exists
    (the configured ``audit.witness_file``); None when there is no witness. Exits 2 if a
    file cannot be read or is not a witness."""
    from gateway.audit.chainverify import load_witness

    if not paths:
        if default is None or not default.exists():
            if default is not None:
                err.print(f"no witness file at {default} (audit.witness_file): verifying without one")
            return None
        paths = [default]
    found: list[dict[str, Any]] = []
    for path in paths:
        try:
            found.extend(load_witness(str(path)))
        except (OSError, ValueError) as exc:
            err.print(f"[bold red]error[/]: witness {path}: {exc}")
            raise typer.Exit(2) from None
    return found


@audit_app.command("verify")
def audit_verify(
    config: ConfigOpt = Path("gateway.yaml"),
    export: Annotated[Path | None, typer.Option(help="verify this JSONL export instead of the database")] = None,
    public_key: Annotated[list[Path] | None, typer.Option(help="PEM Ed25519 public key (repeatable)")] = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            help="signed checkpoints kept outside the database (audit.witness_file, `gateway audit head` output; "
            "repeatable); default: the configured witness file when verifying the database"
        ),
    ] = None,
) -> None:
    """Verify the hash chains and signed checkpoints, and that every chain reaches each
    checkpoint of the witness; exit 1 naming the first bad seq."""
    from gateway.audit.chainverify import verify
    from gateway.audit.ledger import witness_path
    from gateway.audit.store import AuditStore

    if export is not None:
        keys = _public_keys(public_key, None if public_key else _load(config))
        witnessed = _witness(witness, None)
        items = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines() if line.strip()]
        cps = [i for i in items if i.get("type") == "checkpoint"]
        report = verify([i for i in items if i.get("type") != "checkpoint"], cps, keys, witnessed)
    else:
        cfg = _load(config)
        keys = _public_keys(public_key, cfg)
        url = _audit_url(cfg)
        witnessed = _witness(witness, witness_path(cfg.audit.witness_file, url))

        async def run() -> Any:
            store = AuditStore.from_url(url)
            try:
                return await store.verify(keys, witnessed)
            finally:
                await store.aclose()

        report = asyncio.run(run())
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("head")
def audit_head(config: ConfigOpt = Path("gateway.yaml")) -> None:
    """Print the newest signed checkpoint of every chain (JSON lines) to keep outside the
    database, e.g. `gateway audit head >> /elsewhere/audit-heads.jsonl`; `gateway audit
    verify --witness` that file detects records later cut from a chain with its checkpoints."""
    from gateway.audit.store import AuditStore

    cfg = _load(config)

    async def run() -> Any:
        store = AuditStore.from_url(_audit_url(cfg))
        try:
            return await store.head()
        finally:
            await store.aclose()

    for item in asyncio.run(run()):
        typer.echo(json.dumps(item, separators=(",", ":"), sort_keys=True))


CSV_COLUMNS = (
    "id", "created_at", "request_id", "tenant", "key_id", "endpoint", "requested_model", "data_level",
    "declared_level", "labels", "decision", "eligible", "chosen_deployment", "chosen_jurisdiction",
    "chosen_locality", "status", "http_status", "prompt_tokens", "completion_tokens", "tokens_estimated",
    "cost_usd", "latency_ms", "policy_engine", "policy_revision", "chain_id", "seq",
)  # fmt: skip


@audit_app.command("export")
def audit_export(
    output: Annotated[Path, typer.Argument(help="file to write")],
    config: ConfigOpt = Path("gateway.yaml"),
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="jsonl: chain entries + signed checkpoints (verifiable); csv: one row per request"
        ),
    ] = "jsonl",
) -> None:
    """Export the ledger as JSONL (verifiable with the public key only) or records as CSV."""
    import csv

    from gateway.audit.store import AuditStore

    if fmt not in ("jsonl", "csv"):
        err.print("[bold red]error[/]: --format must be jsonl or csv")
        raise typer.Exit(2)
    cfg = _load(config)

    async def run() -> int:
        store = AuditStore.from_url(_audit_url(cfg))
        n = 0
        try:
            with output.open("w", encoding="utf-8", newline="") as fh:
                if fmt == "jsonl":
                    async for item in store.export():
                        fh.write(json.dumps(item, separators=(",", ":")) + "\n")
                        n += 1
                else:
                    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                    writer.writeheader()
                    async for record in store.iter_records():
                        row = dict(record)
                        row["labels"] = ";".join(record.get("labels") or [])
                        row["eligible"] = ";".join(record.get("eligible") or [])
                        writer.writerow(row)
                        n += 1
        finally:
            await store.aclose()
        return n

    typer.echo(f"wrote {asyncio.run(run())} {'lines' if fmt == 'jsonl' else 'records'} to {output}")


@audit_app.command("report")
def audit_report(
    since: Annotated[str, typer.Option(help="period start, ISO 8601 (UTC if no offset)")],
    until: Annotated[str, typer.Option(help="period end, exclusive")],
    config: ConfigOpt = Path("gateway.yaml"),
    out: Annotated[Path | None, typer.Option(help="write the signed report here (default: stdout)")] = None,
) -> None:
    """Signed evidence report: requests by destination jurisdiction x data level, and the count
    of sensitive requests that left their allowed places (expected 0)."""

    from gateway.audit.ledger import Signer
    from gateway.audit.report import build_report, sign_report
    from gateway.audit.store import AuditStore

    cfg = _load(config)

    start, end = _period(since, until)

    async def run() -> list[dict[str, Any]]:
        store = AuditStore.from_url(_audit_url(cfg))
        try:
            return [r async for r in store.iter_records(since=start, until=end)]
        finally:
            await store.aclose()

    report = build_report(asyncio.run(run()), tenants=cfg.tenants, since=start, until=end)
    signed = sign_report(report, Signer.from_file(Path(cfg.audit.signing_key_file), create=False))
    text = json.dumps(signed, indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(
            f"wrote signed report to {out}: {report['requests']} requests, "
            f"{report['sensitive_left_allowed']} sensitive requests outside allowed places"
        )


@app.command("savings")
def savings_cmd(
    since: Annotated[str, typer.Option(help="period start, ISO 8601 (UTC if no offset)")],
    until: Annotated[str, typer.Option(help="period end, exclusive")],
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Actual spend next to the reference external model's cost for the same tokens."""

    from gateway.audit.savings import compute_savings
    from gateway.audit.store import AuditStore

    cfg = _load(config)
    if cfg.savings.reference_price is None:
        err.print("[bold red]error[/]: set savings.reference_price in the config")
        raise typer.Exit(2)
    start, end = _period(since, until)

    async def run() -> list[dict[str, Any]]:
        store = AuditStore.from_url(_audit_url(cfg))
        try:
            return [r async for r in store.iter_records(tenant=tenant, since=start, until=end)]
        finally:
            await store.aclose()

    result = compute_savings(
        asyncio.run(run()), reference=cfg.savings.reference_price, reference_name=cfg.savings.reference_name,
        since=start, until=end,
    )  # fmt: skip
    table = Table(title=f"savings vs {cfg.savings.reference_name} ({since} .. {until})")
    for col in ("tenant", "requests", "tokens in+out", "actual USD", "reference USD", "saved USD", "saved %"):
        table.add_column(col)
    for name, row in result["tenants"].items():
        table.add_row(
            name, str(row["requests"]), f"{row['prompt_tokens']}+{row['completion_tokens']}",
            f"{row['actual_usd']:.6f}", f"{row['reference_usd']:.6f}", f"{row['saved_usd']:.6f}",
            f"{row['saved_pct']:.1f}",
        )  # fmt: skip
    Console(width=200).print(table)


@audit_app.command("prune")
def audit_prune(
    older_than_days: Annotated[float, typer.Option(min=0, help="delete records older than this many days")],
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Retention: delete old records up to a signed checkpoint; what remains still verifies."""

    from gateway.audit.store import AuditStore

    cfg = _load(config)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=older_than_days)

    async def run() -> int:
        store = AuditStore.from_url(_audit_url(cfg))
        try:
            return await store.prune(older_than=cutoff)
        finally:
            await store.aclose()

    typer.echo(f"deleted {asyncio.run(run())} records older than {cutoff.isoformat()}")


@audit_app.command("public-key")
def audit_public_key(config: ConfigOpt = Path("gateway.yaml")) -> None:
    """Print the checkpoint signing public key (PEM) for auditors."""
    from gateway.audit.ledger import Signer

    typer.echo(Signer.from_file(Path(_load(config).audit.signing_key_file), create=False).public_pem(), nl=False)


async def _record_cli_change(audit: Any, endpoint: str, detail: dict[str, Any]) -> None:
    """One audit record for a change made from the CLI (``admin``: what, from, to; never a
    secret), in this process's own short chain. Exits 1 if the change was made but could not
    be recorded."""
    from gateway.context import RequestContext
    from gateway.errors import GatewayError

    ctx = RequestContext(endpoint=endpoint, status="ok", http_status=200, admin={"action": endpoint, **detail})
    try:
        await audit.record_outcome(ctx)
    except GatewayError as exc:
        err.print(f"[bold red]error[/]: the change was made but not recorded in the audit chain: {exc.message}")
        raise typer.Exit(1) from None


def _keys_change(
    config: Path, endpoint: str, op: Callable[[Any], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]
) -> dict[str, Any]:
    """Run one key change on the configured database, publish it to the replicas and record
    it in the audit chain (one record, ``admin`` detail, never the key). Exits 2 with the
    reason (naming the option) if the change is refused, 1 if it happened but was not recorded."""
    from gateway.audit.ledger import Signer
    from gateway.audit.store import AuditStore
    from gateway.errors import GatewayError
    from gateway.keystore import KeyAdmin, KeyStore

    cfg = _load(config)
    notify_url = cfg.limits_store.url if cfg.limits_store.kind == "redis" else None

    async def run() -> dict[str, Any]:
        url = _audit_url(cfg)
        store = KeyStore.from_url(url)
        audit = AuditStore.from_url(
            url, Signer.from_file(Path(cfg.audit.signing_key_file)), witness=cfg.audit.witness_file
        )
        try:
            try:
                body, detail = await op(KeyAdmin(cfg, store, redis_url=notify_url))
            except GatewayError as exc:
                option = f" ({_cli_name(exc.param)})" if exc.param and exc.param != "body" else ""
                err.print(f"[bold red]error[/]: {exc.message}{option}")
                raise typer.Exit(2) from None
            await _record_cli_change(audit, endpoint, detail)
            return body
        finally:
            await audit.aclose()
            await store.aclose()

    return asyncio.run(run())


def _show_key(body: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(body))
        return
    if body.get("key"):
        typer.echo(f"API key (shown once): {body['key']}")
    for field in ("id", "tenant", "roles", "all_tenants", "allowed_models", "limits", "status", "expires_at"):
        if body.get(field) not in (None, {}, [], False):
            typer.echo(f"{field}: {body[field]}")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="tenant the key belongs to")],
    role: Annotated[list[str] | None, typer.Option(help="app, admin or auditor (repeatable)")] = None,
    key_id: Annotated[
        str | None, typer.Option("--id", help="key id shown in audit records (default: k_<random>)")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="alias or deployment the key may use (repeatable; default all)")
    ] = None,
    rpm: Annotated[int | None, typer.Option(min=0, help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(min=0, help="tokens per minute")] = None,
    usd_per_day: Annotated[float | None, typer.Option(min=0, help="USD budget per UTC day")] = None,
    usd_per_month: Annotated[float | None, typer.Option(min=0, help="USD budget per UTC month")] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="not bound to its tenant (auditors, admins)")
    ] = False,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry time (UTC if no offset)")] = None,
    static: Annotated[bool, typer.Option("--static", help="only print a gateway.yaml entry (nothing stored)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the new key's JSON")] = False,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Create an API key in the database (live on every replica within a second); prints the
    key once. With --static, print a gateway.yaml entry holding only its hash instead."""
    roles = role or ["app"]
    bad_roles = sorted(set(roles) - {"app", "admin", "auditor"})
    if bad_roles:
        err.print(f"[bold red]error[/]: unknown role(s) {bad_roles}; use app, admin or auditor (--role)")
        raise typer.Exit(2)
    if static:
        if key_id is None:
            err.print("[bold red]error[/]: --static needs --id")
            raise typer.Exit(2)
        if config.exists() and tenant not in _load(config).tenants:
            err.print(f"[bold red]error[/]: tenant {tenant!r} is not in {config}")
            raise typer.Exit(2)
        key = generate_key()
        typer.echo(f"API key (shown once): {key}\n\nAdd to gateway.yaml under keys:")
        typer.echo(
            f"  - id: {key_id}\n    hash: {hash_key(key)}\n    tenant: {tenant}\n    roles: [{', '.join(roles)}]"
        )
        return
    limits = {"rpm": rpm, "tpm": tpm, "usd_per_day": usd_per_day, "usd_per_month": usd_per_month}
    body: dict[str, Any] = {
        "tenant": tenant,
        "roles": roles,
        "all_tenants": all_tenants,
        "limits": {k: v for k, v in limits.items() if v is not None},
    }
    if key_id is not None:
        body["id"] = key_id
    if model:
        body["allowed_models"] = model
    if expires_at is not None:
        body["expires_at"] = expires_at
    by_cli = _keys_change(config, "cli.keys.create", lambda admin: admin.create(body, actor=None, by=_cli_user()))
    _show_key(by_cli, as_json)


def _cli_name(param: str) -> str:
    """The CLI option (or argument) behind an admin API field name."""
    if param == "key_id":
        return "KEY_ID"
    field = param.split("[")[0].removeprefix("limits.")
    return "--" + {"allowed_models": "model", "roles": "role"}.get(field, field).replace("_", "-")


def _cli_user() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment (containers)
        return "cli"


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Every API key: static ones from gateway.yaml and those in the database (no secrets)."""
    from gateway.errors import GatewayError
    from gateway.keystore import KeyAdmin, KeyStore

    cfg = _load(config)

    async def run() -> list[dict[str, Any]]:
        store = KeyStore.from_url(_audit_url(cfg))
        try:
            return await KeyAdmin(cfg, store, redis_url=None).list(actor=None, tenant=tenant)
        finally:
            await store.aclose()

    try:
        rows = asyncio.run(run())
    except GatewayError as exc:
        err.print(f"[bold red]error[/]: {exc.message}")
        raise typer.Exit(2) from None
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"API keys ({len(rows)})")
    for col in ("id", "tenant", "roles", "source", "status", "models", "limits", "created", "expires"):
        table.add_column(col)
    for r in rows:
        models = ",".join(r["allowed_models"]) if r["allowed_models"] is not None else "all"
        limits = " ".join(f"{k}={v}" for k, v in r["limits"].items())
        table.add_row(
            r["id"], r["tenant"], ",".join(r["roles"]), r["source"], r["status"], models, limits,
            (r.get("created_at") or "")[:19], (r.get("expires_at") or "")[:19],
        )  # fmt: skip
    Console(width=200).print(table)


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="id of the key")],
    grace_s: Annotated[float, typer.Option(min=0, help="seconds the old key keeps working")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the key's JSON")] = False,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """New secret for KEY_ID (printed once); the old one stops working (after --grace-s)."""
    body = {"grace_s": grace_s}
    _show_key(
        _keys_change(config, "cli.keys.rotate", lambda admin: admin.rotate(key_id, body, actor=None, by=_cli_user())),
        as_json,
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="id of the key")],
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Revoke KEY_ID: every replica refuses it within about a second."""
    body = _keys_change(config, "cli.keys.revoke", lambda admin: admin.revoke(key_id, actor=None, by=_cli_user()))
    typer.echo(f"revoked {body['id']} (tenant {body['tenant']}) at {body['revoked_at']}")


@keys_app.command("hash")
def keys_hash(key: str) -> None:
    """Print the at-rest hash of KEY (``sha256:<hex>``)."""
    typer.echo(hash_key(key))


def _policy_change(
    config: Path,
    endpoint: str,
    op: Callable[[Any], Awaitable[dict[str, Any]]],
    detail_keys: tuple[str, ...] = ("revision", "created", "activated", "action", "from", "to"),
) -> dict[str, Any]:
    """Run one policy change on the configured database with a PolicyManager, tell the
    replicas (Redis pub/sub when configured; else they poll) and record it in the audit chain.
    Exits 2 naming the reason when refused, 1 when done but not recorded."""
    from gateway.audit.ledger import Signer
    from gateway.audit.store import AuditStore
    from gateway.errors import GatewayError
    from gateway.notify import namespaced
    from gateway.policy import load_bundle
    from gateway.policy.embedded import EmbeddedEngine, PolicyLoadError
    from gateway.policy.manager import TOPIC as POLICY_TOPIC
    from gateway.policy.manager import PolicyManager
    from gateway.policy.store import PolicyStore

    cfg = _load(config)
    notify_url = cfg.limits_store.url if cfg.limits_store.kind == "redis" else None
    policy_dir = _policy_dir(cfg, config)

    async def run() -> dict[str, Any]:
        audit = AuditStore.from_url(
            _audit_url(cfg), Signer.from_file(Path(cfg.audit.signing_key_file)), witness=cfg.audit.witness_file
        )
        store = PolicyStore(audit.engine)
        try:
            active = await store.active()
            bundle = await store.get(active) if active else None
            engine = EmbeddedEngine(bundle or load_bundle(policy_dir), threads=1)
            manager = PolicyManager(
                engine,
                store,
                file_bundle=engine.bundle,
                source=str(policy_dir),
                redis_url=notify_url,
                topic=namespaced(cfg, POLICY_TOPIC),
            )
            try:
                result = await op(manager)
            except GatewayError as exc:
                err.print(f"[bold red]error[/]: {exc.message}")
                raise typer.Exit(2) from None
            except PolicyLoadError as exc:
                err.print(f"[bold red]error[/]: policy refused: {exc}")
                raise typer.Exit(2) from None
            finally:
                await engine.aclose()
            await _record_cli_change(audit, endpoint, {k: result[k] for k in detail_keys if k in result})
            return result
        finally:
            await audit.aclose()

    return asyncio.run(run())


def _policy_dir(cfg: GatewayConfig, config: Path) -> Path:
    path = Path(cfg.policy.path)
    return path if path.is_absolute() else config.resolve().parent / path


def _read_policy_dir(directory: Path) -> tuple[Any, list[Any]]:
    """(bundle, table tests) of a policy directory. Exits 2 naming the problem."""
    from gateway.policy import load_bundle
    from gateway.policy.testing import load_tests

    try:
        return load_bundle(directory), load_tests(directory)
    except (OSError, ValueError) as exc:
        err.print(f"[bold red]error[/]: {directory}: {exc}")
        raise typer.Exit(2) from None


@policy_app.command("test")
def policy_test(directory: Annotated[Path, typer.Argument(help="policy directory")] = Path("policies")) -> None:
    """Check a policy directory (compiles; every builtin exists in the embedded engine) and run
    its table tests (``*_test.yaml``). Exit 1 if any test fails, 2 if the policy is refused."""
    from gateway.policy.embedded import PolicyLoadError, check_bundle
    from gateway.policy.testing import run_tests

    bundle, tests = _read_policy_dir(directory)
    try:
        evaluator = check_bundle(bundle)
    except PolicyLoadError as exc:
        err.print(f"[bold red]refused[/]: {exc}")
        raise typer.Exit(2) from None
    results = run_tests(bundle, tests, evaluator=evaluator)
    for result in results:
        if not result.passed:
            typer.echo(f"FAIL {result.case.file}: {result.case.name}")
            for problem in result.problems:
                typer.echo(f"     {problem}")
    passed = sum(r.passed for r in results)
    typer.echo(f"{bundle.revision}: {passed} of {len(results)} policy tests passed")
    if passed != len(results):
        raise typer.Exit(1)


@policy_app.command("push")
def policy_push(
    directory: Annotated[Path, typer.Argument(help="policy directory (Rego modules, data.json, *_test.yaml)")],
    activate: Annotated[bool, typer.Option("--activate", help="activate it too")] = False,
    description: Annotated[str, typer.Option(help="what changed")] = "",
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Validate (compile, builtins, table tests) and store a policy version; --activate makes it
    active on every worker and replica. A refused version changes nothing (exit 2)."""
    bundle, tests = _read_policy_dir(directory)
    result = _policy_change(
        config,
        "cli.policy.push",
        lambda m: m.push(bundle, by=_cli_user(), source="cli", description=description, tests=tests, activate=activate),
    )
    typer.echo(json.dumps(result, indent=2))


@policy_app.command("list")
def policy_list(config: ConfigOpt = Path("gateway.yaml")) -> None:
    """Stored versions (active marked) and the activation history, as JSON."""
    from gateway.audit.store import AuditStore
    from gateway.policy.store import PolicyStore

    cfg = _load(config)

    async def run() -> dict[str, Any]:
        audit = AuditStore.from_url(_audit_url(cfg))
        try:
            store = PolicyStore(audit.engine)
            return {
                "active": await store.active(),
                "versions": await store.versions(),
                "activations": await store.activations(),
            }
        finally:
            await audit.aclose()

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


@policy_app.command("activate")
def policy_activate(revision: str, config: ConfigOpt = Path("gateway.yaml")) -> None:
    """Activate a stored revision (``sha256:...``) on every worker and replica."""
    result = _policy_change(config, "cli.policy.activate", lambda m: m.activate(revision, by=_cli_user()))
    typer.echo(json.dumps(result))


@policy_app.command("rollback")
def policy_rollback(
    to: Annotated[str | None, typer.Option(help="revision to return to (default: the one replaced last)")] = None,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Roll back to the revision the latest activation replaced (or --to)."""
    result = _policy_change(config, "cli.policy.rollback", lambda m: m.rollback(by=_cli_user(), to=to))
    typer.echo(json.dumps(result))


@policy_app.command("killswitch")
def policy_killswitch(
    state: Annotated[str, typer.Argument(help="on (block all external egress) or off")],
    reason: Annotated[str, typer.Option(help="incident reference")] = "",
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Activate a revision of the active policy with the incident kill switch on or off."""
    if state not in ("on", "off"):
        err.print("[bold red]error[/]: STATE must be on or off")
        raise typer.Exit(2)
    result = _policy_change(
        config, "cli.policy.killswitch", lambda m: m.set_killswitch(state == "on", by=_cli_user(), reason=reason)
    )
    typer.echo(json.dumps(result))


@policy_app.command("whatif")
def policy_whatif(
    candidate: Annotated[Path, typer.Option(help="candidate policy directory")],
    since: Annotated[str, typer.Option(help="duration back from now (24h, 30m, 7d) or ISO 8601")] = "24h",
    until: Annotated[str | None, typer.Option(help="end (ISO 8601 or duration back from now)")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's records")] = None,
    examples: Annotated[int, typer.Option(min=0, max=100, help="example changed decisions to show")] = 5,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Replay recorded decision inputs through a candidate policy; print which decisions would
    change, by tenant, data level and destination, with examples (JSON). Nothing is stored."""
    from gateway.audit.store import AuditStore
    from gateway.errors import GatewayError
    from gateway.policy.embedded import PolicyLoadError
    from gateway.policy.replay import whatif
    from gateway.schemas import parse_since

    cfg = _load(config)
    bundle, _ = _read_policy_dir(candidate)
    try:
        start = parse_since(since)
        end = parse_since(until, param="until") if until else None
    except GatewayError as exc:
        err.print(f"[bold red]error[/]: --{exc.param}: {exc.message}")
        raise typer.Exit(2) from None

    async def run() -> dict[str, Any]:
        audit = AuditStore.from_url(_audit_url(cfg))
        try:
            return await whatif(audit, bundle, since=start, until=end, tenant=tenant, examples=examples)
        finally:
            await audit.aclose()

    try:
        report = asyncio.run(run())
    except PolicyLoadError as exc:
        err.print(f"[bold red]error[/]: candidate refused: {exc}")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report, indent=2))


@audit_app.command("explain")
def audit_explain(
    request_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="print the full JSON")] = False,
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Re-evaluate a recorded decision under its recorded policy revision and input and show
    it with its reasons. Exit 1 if the replay differs from the record, 2 if not replayable."""
    from gateway.audit.store import AuditStore
    from gateway.errors import GatewayError
    from gateway.policy.replay import explain
    from gateway.policy.store import PolicyStore

    cfg = _load(config)

    async def run() -> dict[str, Any]:
        audit = AuditStore.from_url(_audit_url(cfg))
        try:
            return await explain(audit, PolicyStore(audit.engine), request_id)
        finally:
            await audit.aclose()

    try:
        result = asyncio.run(run())
    except GatewayError as exc:
        err.print(f"[bold red]error[/]: {exc.message}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        replayed = result["replayed"]
        typer.echo(f"request {request_id}: tenant {result['tenant']}, {result['data_level']} data")
        typer.echo(f"policy {result['engine']} revision {result['revision']}")
        typer.echo(f"decision: {'allow' if replayed['allow'] else 'deny'} — {'; '.join(replayed['reasons'])}")
        for dep in result["deployments"]:
            if dep["eligible"]:
                typer.echo(f"  {dep['id']}: eligible")
                continue
            typer.echo(f"  {dep['id']}: excluded")
            for rule in dep["rules"]:  # the rules that fired, then every reason they gave
                typer.echo(f"    rule [{rule['name']}] {rule['title']}")
            for reason in dep["reasons"]:
                typer.echo(f"    reason: {reason}")
        typer.echo(
            "reproduced: yes" if result["reproduced"] else f"reproduced: NO (differs in {result['differences']})"
        )
    if not result["reproduced"]:
        raise typer.Exit(1)


@config_app.command("check")
def config_check(config: ConfigOpt = Path("gateway.yaml")) -> None:
    """Validate gateway.yaml and every file it names: compile the policy and check its
    builtins, load the audit keys (created if missing, as at start) and tokenizers. Touches no
    database, network or telemetry. Exit 2 with the reason if invalid."""
    from gateway.main import load_static_parts

    cfg = _load(config)
    try:
        parts = load_static_parts(cfg)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]: {exc.message}")
        raise typer.Exit(2) from None
    typer.echo(
        f"{config}: ok ({len(cfg.deployments)} deployments, {len(cfg.tenants)} tenants, policy {parts.bundle.revision})"
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
