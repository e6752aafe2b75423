"""Shared fixtures: real provider simulators, a real llama.cpp server with SmolLM2, the
gateway under uvicorn on loopback with a migrated SQLite audit database — and the invariant
check that every request sent to the gateway left exactly one audit record.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import pytest

from gateway.audit.store import AuditStore
from gateway.cli import migrate_database
from gateway.config import Settings, parse_config
from gateway.localmodel import SMOLLM2_ALIAS, start_llama_server, wait_ready
from gateway.main import create_app
from tests.support.provider_sim import ProviderSimulator
from tests.support.servers import ThreadedServer, free_port

ROOT = Path(__file__).resolve().parent.parent
APP_KEY = "sk-test-acme-app"
AUDITOR_KEY = "sk-test-acme-auditor"
OTHER_TENANT_KEY = "sk-test-globex-app"
GLOBAL_AUDITOR_KEY = "sk-test-global-auditor"
LIMITED_KEY = "sk-test-acme-only-ext-cheap"


@pytest.fixture(scope="session")
def sim_a() -> Iterator[ProviderSimulator]:
    """External provider simulator 'ext-cheap' (EU)."""
    with ProviderSimulator(name="ext-cheap") as sim:
        yield sim


@pytest.fixture(scope="session")
def sim_b() -> Iterator[ProviderSimulator]:
    """External provider simulator 'ext-pricey' (US)."""
    with ProviderSimulator(name="ext-pricey") as sim:
        yield sim


@pytest.fixture(scope="session")
def sim_local() -> Iterator[ProviderSimulator]:
    """The simulator that plays the on-prem deployment ``local-sim`` (tests/support/sim_gateway.py)."""
    with ProviderSimulator(name="local-sim") as sim:
        yield sim


@pytest.fixture(autouse=True)
def _reset_sims(request: pytest.FixtureRequest) -> Iterator[None]:
    for name in ("sim_a", "sim_b", "sim_local"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    yield


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llama.cpp server with the SmolLM2-135M-Instruct GGUF; yields its /v1 base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    # One thread: llama.cpp's thread barrier spins, and with two threads on a 2-core machine
    # shared with the gateway and the test process, generation slows down a hundredfold.
    proc = start_llama_server(port, log=log, threads=1)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base, process=proc, timeout_s=180)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()


def _hash(key: str) -> str:
    from gateway.auth import hash_key

    return hash_key(key)


def make_config(*, sim_a_url: str, sim_b_url: str, llama_url: str) -> dict[str, Any]:
    """The test gateway.yaml as a dict: one local model, two external simulators."""
    ext = {
        "adapter": "openai_compat",
        "locality": "external",
        "retains_data": False,
        "trains_on_data": False,
        "capabilities": ["stream", "tools", "prompt_arrays"],
        "context_window": 128000,
        "timeout_s": 5,
    }
    return {
        "policy": {"path": str(ROOT / "policies"), "timeout_ms": 2000},
        # failures injected by one test must not open a breaker for the next (tests/test_breaker.py)
        # health probes (GET /v1/models) would show up in the simulators' request logs
        # (tests/test_health.py turns them on)
        "server": {"breaker": {"failures": 1000}, "health": {"enabled": False}},
        "savings": {
            "reference_name": "frontier-ref",
            "reference_price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0},
        },
        "deployments": [
            {
                "id": "local-smollm2",
                "adapter": "openai_compat",
                "model": SMOLLM2_ALIAS,
                "api_base": llama_url,
                "locality": "local",
                "jurisdiction": "EU",
                "region": "eu-central-dc1",
                "capabilities": ["stream"],
                "context_window": 2048,
                # amortised on-prem cost, deliberately above ext-cheap so cost routing is visible
                "price": {"input_per_mtok": 2.0, "output_per_mtok": 4.0},
                "timeout_s": 120,
            },
            {
                **ext,
                "id": "ext-cheap",
                "model": "cheap-model",
                "api_base": sim_a_url,
                "jurisdiction": "EU",
                "region": "eu-west",
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
            },
            {
                **ext,
                "id": "ext-pricey",
                "model": "pricey-model",
                "api_base": sim_b_url,
                "jurisdiction": "US",
                "region": "us-east",
                "price": {"input_per_mtok": 5.0, "output_per_mtok": 15.0},
            },
        ],
        "aliases": {
            "auto": {"strategy": "cost", "deployments": ["local-smollm2", "ext-pricey", "ext-cheap"]},
            "external": {"strategy": "cost", "deployments": ["ext-pricey", "ext-cheap"]},
            "ordered": {"strategy": "ordered", "deployments": ["ext-pricey", "ext-cheap", "local-smollm2"]},
        },
        "tenants": {
            "acme-eu": {
                "home_region": "eu",
                "default_level": "public",
                "allowed": {
                    "public": {"any": True},
                    "internal": {"jurisdictions": ["EU"]},
                    "confidential": {"locality": ["local"]},
                    "restricted": {"locality": ["local"]},
                },
            },
            "globex-us": {
                "home_region": "us",
                "default_level": "internal",
                "allowed": {"public": {"any": True}, "internal": {"jurisdictions": ["US"]}},
            },
        },
        "keys": [
            {"id": "k_app", "hash": _hash(APP_KEY), "tenant": "acme-eu", "roles": ["app"]},
            {"id": "k_auditor", "hash": _hash(AUDITOR_KEY), "tenant": "acme-eu", "roles": ["auditor"]},
            {"id": "k_globex", "hash": _hash(OTHER_TENANT_KEY), "tenant": "globex-us", "roles": ["app"]},
            {
                "id": "k_global_auditor",
                "hash": _hash(GLOBAL_AUDITOR_KEY),
                "tenant": "acme-eu",
                "roles": ["auditor"],
                "all_tenants": True,
            },
            {
                "id": "k_limited",
                "hash": _hash(LIMITED_KEY),
                "tenant": "acme-eu",
                "roles": ["app"],
                "allowed_models": ["ext-cheap"],
            },
        ],
    }


class GatewayUnderTest:
    """A running gateway plus an HTTP client that counts every request it sends."""

    def __init__(self, server: ThreadedServer, audit_url: str, signing_key_file: str = "") -> None:
        self.server = server
        self.signing_key_file = signing_key_file
        self.url = server.url
        self.audit_url = audit_url
        self.sent = 0
        # idle connections dropped after 2 s: uvicorn closes them after 5 s, httpx's default
        # keep-alive is also 5 s, and a request sent on one just as uvicorn closes it fails
        # ("Server disconnected without sending a response") with nothing recorded
        self.client = httpx.Client(
            base_url=server.url,
            timeout=180,
            limits=httpx.Limits(keepalive_expiry=2.0),
            event_hooks={"request": [self._count]},
        )

    def _count(self, request: httpx.Request) -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):  # reads: answered, not recorded
            self.sent += 1

    def post(
        self, path: str, *, key: str | None = APP_KEY, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """POST with the app key (or ``key``) as Bearer."""
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["authorization"] = f"Bearer {key}"
        return self.client.post(path, headers=hdrs, **kwargs)

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        """Audit records straight from the database, newest first."""
        return asyncio.run(_records(self.audit_url, **filters))

    def record(self, request_id: str) -> dict[str, Any]:
        """The one audit record of a request (asserts there is exactly one)."""
        found = [r for r in self.records(limit=10_000) if r["request_id"] == request_id]
        assert len(found) == 1, f"expected one audit record for {request_id}, found {len(found)}"
        return found[0]


async def _records(url: str, **filters: Any) -> list[dict[str, Any]]:
    store = AuditStore.from_url(url)
    try:
        return await store.list(**filters)
    finally:
        await store.aclose()


async def _count(url: str) -> int:
    store = AuditStore.from_url(url)
    try:
        return await store.count(include_system=False)
    finally:
        await store.aclose()


async def _explain_all(url: str) -> list[dict[str, Any]]:
    """Explain every replayable record of the database; returns those not reproduced."""
    from gateway.policy.replay import explain
    from gateway.policy.store import PolicyStore

    store = AuditStore.from_url(url)
    failures = []
    compiled: dict[str, Any] = {}
    try:
        policies = PolicyStore(store.engine)
        async for record in store.iter_records():
            if isinstance(record.get("policy_input"), dict) and record.get("decision") in ("allow", "deny"):
                result = await explain(store, policies, record["request_id"], compiled=compiled)
                if not result["reproduced"]:
                    failures.append({k: result[k] for k in ("request_id", "differences", "recorded", "replayed")})
    finally:
        await store.aclose()
    return failures


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., GatewayUnderTest]]:
    """Factory: start a gateway for a config dict, by default on a fresh migrated SQLite audit
    database (``audit_url`` for another, ``migrate=False`` for a store without its table).

    At module end, checks the invariants: requests sent == audit records written (unless the
    test deliberately broke the audit store: ``check_invariant=False``), and every recorded
    decision is reproduced by explain from its recorded revision and input (unless the test
    made the engine answer wrongly on purpose: ``check_explain=False``).
    """
    started: list[tuple[GatewayUnderTest, bool, bool]] = []

    def start(
        document: dict[str, Any],
        *,
        audit_url: str | None = None,
        migrate: bool = True,
        check_invariant: bool = True,
        check_explain: bool = True,
    ) -> GatewayUnderTest:
        if audit_url is None:
            db = tmp_path_factory.mktemp("audit") / "audit.db"
            audit_url = f"sqlite+aiosqlite:///{db}"
        if migrate:
            migrate_database(audit_url)
        document = copy.deepcopy(document)
        audit = document.setdefault("audit", {})
        keys_dir = tmp_path_factory.mktemp("keys")
        audit.setdefault("signing_key_file", str(keys_dir / "audit-signing-key.pem"))
        audit.setdefault("digest_secret_file", str(keys_dir / "audit-digest.key"))
        config = parse_config(document, source="test-gateway.yaml")
        app = create_app(config, Settings(audit_url=audit_url))
        gut = GatewayUnderTest(ThreadedServer(app).start(), audit_url, config.audit.signing_key_file)
        started.append((gut, check_invariant, check_explain))
        return gut

    yield start
    for gut, check, explain in started:
        gut.client.close()
        gut.server.stop()
        if check:
            written = asyncio.run(_count(gut.audit_url))
            assert written == gut.sent, f"requests sent ({gut.sent}) != audit records written ({written})"
        if check and explain:
            not_reproduced = asyncio.run(_explain_all(gut.audit_url))
            assert not not_reproduced, f"explain did not reproduce these recorded decisions: {not_reproduced[:3]}"


@pytest.fixture(scope="module")
def gateway(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    llama: str,
) -> GatewayUnderTest:
    """The standard test gateway (local SmolLM2 + two external simulators)."""
    return start_gateway(make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama))


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty audit database, migrated to head: an SQLite file, then the session's
    PostgreSQL database (downgraded to base first, so each test starts empty)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("pg_url")
        migrate_database(url, "base", downgrade=True)
    migrate_database(url)
    return url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 (trust auth), dropped at session end."""
    import uuid

    import asyncpg

    name = f"gw_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
