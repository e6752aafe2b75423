"""API keys managed at run time (issue 6 item 1): create, use, rotate, revoke through the admin
API and the CLI; stored only as hashes; every admin change audited once, without the key;
a revocation reaches every replica within about a second (PostgreSQL + Redis, two gateway
processes); authentication reads memory, never the database, per request.

Real services throughout: SQLite or PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) under
a key prefix unique to this run, provider simulators on loopback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from gateway.audit.models import metadata
from gateway.audit.store import make_engine
from gateway.auth import KeyRing, hash_key
from gateway.cli import app as cli
from gateway.cli import migrate_database
from gateway.config import parse_config
from gateway.keystore import KeyAdmin, KeyStore
from gateway.notify import ChangeWatcher, publish
from tests.conftest import APP_KEY, AUDITOR_KEY, ROOT, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.redis_keys import REDIS_URL, drop_keys, run_prefix
from tests.support.servers import free_port

CHAT = "/v1/chat/completions"
KEYS = "/v1/admin/keys"
RUN = run_prefix("keys")
ADMIN_KEY = "sk-test-acme-admin"
GLOBEX_ADMIN_KEY = "sk-test-globex-admin"


@pytest.fixture(scope="module", autouse=True)
def _cleanup_redis() -> Iterator[None]:
    yield
    drop_keys(RUN)


def _doc(sim_a: ProviderSimulator, sim_b: ProviderSimulator, *, redis: bool = False) -> dict[str, Any]:
    """The test config plus an acme admin and a globex admin key (static), no local model."""
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    doc["keys"] += [
        {"id": "k_admin", "hash": hash_key(ADMIN_KEY), "tenant": "acme-eu", "roles": ["admin"]},
        {"id": "k_globex_admin", "hash": hash_key(GLOBEX_ADMIN_KEY), "tenant": "globex-us", "roles": ["admin"]},
    ]
    if redis:
        doc["limits_store"] = {"kind": "redis", "url": REDIS_URL, "key_prefix": f"{RUN}{uuid.uuid4().hex[:6]}:"}
    return doc


def _chat(gw: GatewayUnderTest, key: str, model: str = "ext-cheap") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
    return gw.post(CHAT, key=key, json=body)


def _admin(gw: GatewayUnderTest, method: str, path: str, *, key: str = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
    """An admin API call, counted as sent (it leaves one audit record) unless it is a GET."""
    return gw.client.request(method, path, headers={"authorization": f"Bearer {key}"}, **kwargs)


def _wait_status(gw: GatewayUnderTest, key: str, status: int, *, within_s: float) -> float:
    """Send chat requests until one answers ``status``; returns the seconds it took."""
    start = time.monotonic()
    while True:
        r = _chat(gw, key)
        if r.status_code == status:
            return time.monotonic() - start
        assert time.monotonic() - start < within_s, f"still {r.status_code} after {within_s}s: {r.text}"
        time.sleep(0.05)


def _db_text(url: str) -> str:
    """Every row of every table of the audit database, as text."""

    async def dump() -> str:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                parts = []
                for table in metadata.sorted_tables:
                    parts += [repr(tuple(row)) for row in (await conn.execute(select(table))).all()]
                return "\n".join(parts)
        finally:
            await engine.dispose()

    return asyncio.run(dump())


@pytest.fixture(scope="module")
def gw(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> GatewayUnderTest:
    """One gateway on SQLite without Redis (the embedded default: its watcher polls)."""
    return start_gateway(_doc(sim_a, sim_b))


# --- through the admin API --------------------------------------------------------------------


def test_create_use_rotate_revoke_via_api(gw: GatewayUnderTest) -> None:
    r = _admin(gw, "POST", KEYS, json={"tenant": "acme-eu", "roles": ["app"], "limits": {"rpm": 100}})
    assert r.status_code == 201, r.text
    created = r.json()
    key, key_id = created["key"], created["id"]
    assert key.startswith("sk-gw-") and key_id.startswith("k_")
    assert created["status"] == "active" and created["source"] == "database" and created["limits"] == {"rpm": 100}
    assert hash_key(key) not in r.text and "hash" not in created

    used = _chat(gw, key)
    assert used.status_code == 200, used.text
    assert gw.record(used.headers["x-request-id"])["key_id"] == key_id

    listed = _admin(gw, "GET", KEYS).json()["data"]
    mine = next(k for k in listed if k["id"] == key_id)
    assert "key" not in mine and not any(k.get("key") for k in listed) and key not in str(listed)
    assert {"k_app", "k_admin"} <= {k["id"] for k in listed if k["source"] == "config"}

    r = _admin(gw, "POST", f"{KEYS}/{key_id}/rotate")
    assert r.status_code == 200, r.text
    new_key = r.json()["key"]
    assert new_key != key and r.json()["id"] == key_id and r.json()["rotated_at"]
    old = _chat(gw, key)
    assert old.status_code == 401 and old.json()["error"]["code"] == "invalid_api_key"
    assert _chat(gw, new_key).status_code == 200

    r = _admin(gw, "DELETE", f"{KEYS}/{key_id}")
    assert r.status_code == 200 and r.json()["status"] == "revoked" and r.json()["revoked_at"]
    refused = _chat(gw, new_key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_revoked"
    again = _admin(gw, "DELETE", f"{KEYS}/{key_id}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "key_revoked"
    assert _admin(gw, "POST", f"{KEYS}/{key_id}/rotate").status_code == 409


def test_each_admin_change_leaves_one_audit_record_and_no_secret(gw: GatewayUnderTest) -> None:
    created = _admin(gw, "POST", KEYS, json={"tenant": "acme-eu", "id": "k_audited"})
    rotated = _admin(gw, "POST", f"{KEYS}/k_audited/rotate", json={"grace_s": 0})
    revoked = _admin(gw, "DELETE", f"{KEYS}/k_audited")
    assert [r.status_code for r in (created, rotated, revoked)] == [201, 200, 200]
    for response, action in ((created, "create"), (rotated, "rotate"), (revoked, "revoke")):
        record = gw.record(response.headers["x-request-id"])  # exactly one
        assert record["endpoint"] == f"admin.keys.{action}" and record["status"] == "ok"
        assert record["key_id"] == "k_admin" and record["tenant"] == "acme-eu"
        admin = record["admin"]
        assert admin["action"] == f"admin.keys.{action}" and admin["by"] == "k_admin"
        assert admin["key_id"] == "k_audited" and admin["tenant"] == "acme-eu"
    everything = _db_text(gw.audit_url)
    for secret in (created.json()["key"], rotated.json()["key"]):
        assert secret not in everything  # the database holds no key, only its hash
        assert hash_key(secret) not in str(gw.records(limit=10_000))  # and the records not even that


def test_non_admin_keys_get_403_and_are_audited(gw: GatewayUnderTest) -> None:
    for key in (APP_KEY, AUDITOR_KEY):
        for method, path in (("POST", KEYS), ("POST", f"{KEYS}/k_x/rotate"), ("DELETE", f"{KEYS}/k_x")):
            r = _admin(gw, method, path, key=key, json={"tenant": "acme-eu"})
            assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error", r.text
            record = gw.record(r.headers["x-request-id"])
            assert record["status"] == "forbidden" and record["admin"]["action"].startswith("admin.keys.")
        assert _admin(gw, "GET", KEYS, key=key).status_code == 403
    nobody = _admin(gw, "POST", KEYS, key="sk-nope", json={"tenant": "acme-eu"})
    assert nobody.status_code == 401 and gw.record(nobody.headers["x-request-id"])["status"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tenant": "nobody"}, "tenant"),
        ({"tenant": "acme-eu", "roles": ["root"]}, "roles[0]"),
        ({"tenant": "acme-eu", "roles": []}, "roles"),
        ({"tenant": "acme-eu", "limits": {"rpm": -1}}, "limits.rpm"),
        ({"tenant": "acme-eu", "limits": {"rps": 1}}, "limits.rps"),
        ({"tenant": "acme-eu", "allowed_models": ["auto", "gpt-9"]}, "allowed_models[1]"),
        ({"tenant": "acme-eu", "id": "has space"}, "id"),
        ({"tenant": "acme-eu", "id": "k_app"}, "id"),  # a static key's id
        ({"tenant": "acme-eu", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"tenant": "acme-eu", "all_tenants": "yes"}, "all_tenants"),
        ({"tenant": "acme-eu", "surprise": 1}, "surprise"),
        ({}, "tenant"),
    ],
)
def test_create_validation_errors_name_the_field(gw: GatewayUnderTest, body: dict[str, Any], param: str) -> None:
    r = _admin(gw, "POST", KEYS, json=body)
    assert r.status_code in (400, 409), r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and set(err) >= {"message", "type", "param", "code"}
    assert gw.record(r.headers["x-request-id"])["status"] == "invalid"


def test_static_and_unknown_keys_cannot_be_changed_through_the_api(gw: GatewayUnderTest) -> None:
    for method, path in (("DELETE", f"{KEYS}/k_app"), ("POST", f"{KEYS}/k_app/rotate")):
        r = _admin(gw, method, path)
        assert r.status_code == 409 and r.json()["error"]["code"] == "static_key", r.text
        assert "gateway.yaml" in r.json()["error"]["message"] and "static" in r.json()["error"]["message"]
    assert _chat(gw, APP_KEY).status_code == 200
    missing = _admin(gw, "DELETE", f"{KEYS}/k_missing")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "key_id"
    bad = _admin(gw, "POST", f"{KEYS}/k_missing/rotate", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "body"


def test_tenant_bound_admin_manages_only_its_tenant(gw: GatewayUnderTest) -> None:
    r = _admin(gw, "POST", KEYS, key=GLOBEX_ADMIN_KEY, json={"tenant": "acme-eu"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "tenant"
    r = _admin(gw, "POST", KEYS, key=GLOBEX_ADMIN_KEY, json={"tenant": "globex-us", "all_tenants": True})
    assert r.status_code == 403 and r.json()["error"]["param"] == "all_tenants"
    acme = _admin(gw, "POST", KEYS, json={"tenant": "acme-eu"}).json()
    assert _admin(gw, "DELETE", f"{KEYS}/{acme['id']}", key=GLOBEX_ADMIN_KEY).status_code == 404
    listed = _admin(gw, "GET", KEYS, key=GLOBEX_ADMIN_KEY).json()["data"]
    assert listed and {k["tenant"] for k in listed} == {"globex-us"}
    assert _admin(gw, "GET", f"{KEYS}?tenant=acme-eu", key=GLOBEX_ADMIN_KEY).status_code == 403
    assert _chat(gw, acme["key"]).status_code == 200


def test_database_keys_carry_their_models_limits_and_expiry(gw: GatewayUnderTest) -> None:
    body = {"tenant": "acme-eu", "allowed_models": ["ext-cheap"], "limits": {"rpm": 2}}
    created = _admin(gw, "POST", KEYS, json=body).json()
    denied = _chat(gw, created["key"], model="external")
    assert denied.status_code == 403 and "may not use model" in denied.json()["error"]["message"]
    codes = [_chat(gw, created["key"]).status_code for _ in range(2)]
    limited = _chat(gw, created["key"])
    if 200 in codes and codes != [200, 200]:  # a minute boundary passed: the window restarted
        limited = _chat(gw, created["key"])
    assert limited.status_code == 429 and f"key {created['id']}: 2 requests per minute" in limited.text

    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
    expiring = _admin(gw, "POST", KEYS, json={"tenant": "acme-eu", "expires_at": soon}).json()
    assert _chat(gw, expiring["key"]).status_code == 200
    time.sleep(1.6)
    expired = _chat(gw, expiring["key"])
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "key_expired"
    assert next(k for k in _admin(gw, "GET", KEYS).json()["data"] if k["id"] == expiring["id"])["status"] == "expired"


def test_rotation_grace_period_keeps_the_old_key_until_it_ends(gw: GatewayUnderTest) -> None:
    created = _admin(gw, "POST", KEYS, json={"tenant": "acme-eu"}).json()
    rotated = _admin(gw, "POST", f"{KEYS}/{created['id']}/rotate", json={"grace_s": 1.5}).json()
    assert rotated["previous_key_valid_until"]
    assert _chat(gw, created["key"]).status_code == 200 and _chat(gw, rotated["key"]).status_code == 200
    time.sleep(1.6)
    old_key = _chat(gw, created["key"])
    assert old_key.status_code == 401 and old_key.json()["error"]["code"] == "key_rotated"
    assert _chat(gw, rotated["key"]).status_code == 200
    bad = _admin(gw, "POST", f"{KEYS}/{created['id']}/rotate", json={"grace_s": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_s"


# --- through the CLI, against a running gateway (no Redis: it polls every second) ----------


def _write_config(tmp_path: Path, doc: dict[str, Any], gw: GatewayUnderTest) -> Path:
    """The gateway's config as a file for the CLI: same database, same signing key."""
    audit = {"url": gw.audit_url, "signing_key_file": gw.signing_key_file}
    doc = {**doc, "audit": {**audit, "digest_secret_file": str(tmp_path / "audit-digest.key")}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _cli(gw: GatewayUnderTest, args: list[str], config: Path, *, mutation: bool = True) -> str:
    env = {"GATEWAY_AUDIT_URL": gw.audit_url}
    result = CliRunner().invoke(cli, [*args, "--config", str(config)], env=env)
    assert result.exit_code == 0, result.output
    if mutation:
        gw.sent += 1  # a CLI change leaves one audit record too (counted by the invariant check)
    return result.output


def test_create_use_rotate_revoke_via_cli(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, tmp_path: Path
) -> None:
    config = _write_config(tmp_path, _doc(sim_a, sim_b), gw)
    out = _cli(gw, ["keys", "create", "--tenant", "acme-eu", "--role", "app", "--id", "k_cli", "--model", "ext-cheap",
                    "--rpm", "100"], config)  # fmt: skip
    key = out.split("API key (shown once): ")[1].split()[0]
    assert "all_tenants" not in out  # shown only when set
    _wait_status(gw, key, 200, within_s=2.0)  # the gateway's watcher polls every second
    admin = _cli(gw, ["keys", "create", "--tenant", "acme-eu", "--role", "admin", "--all-tenants"], config)
    assert "all_tenants: True" in admin

    listed = _cli(gw, ["keys", "list", "--json"], config, mutation=False)
    assert '"id": "k_cli"' in listed and key not in listed and hash_key(key) not in listed

    out = _cli(gw, ["keys", "rotate", "k_cli"], config)
    new_key = out.split("API key (shown once): ")[1].split()[0]
    _wait_status(gw, key, 401, within_s=2.0)
    assert _chat(gw, new_key).status_code == 200

    _cli(gw, ["keys", "revoke", "k_cli"], config)
    took = _wait_status(gw, new_key, 401, within_s=2.0)
    assert took < 1.5
    records = [r for r in gw.records(limit=10_000) if (r.get("endpoint") or "").startswith("cli.keys.")]
    assert [r["endpoint"] for r in records if r["admin"]["key_id"] == "k_cli"] == [
        "cli.keys.revoke", "cli.keys.rotate", "cli.keys.create",
    ]  # fmt: skip
    assert all(r["admin"]["by"].startswith("cli") for r in records)
    assert key not in _db_text(gw.audit_url) and new_key not in _db_text(gw.audit_url)


def test_cli_refuses_bad_input_naming_the_option(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, tmp_path: Path
) -> None:
    config = _write_config(tmp_path, _doc(sim_a, sim_b), gw)
    runner = CliRunner()
    for args, option in (
        (["keys", "create", "--tenant", "nobody"], "--tenant"),
        (["keys", "create", "--tenant", "acme-eu", "--model", "gpt-9"], "--model"),
        (["keys", "create", "--tenant", "acme-eu", "--role", "root"], "--role"),
        (["keys", "revoke", "k_app"], "gateway.yaml"),
        (["keys", "rotate", "k_missing"], "KEY_ID"),
    ):
        result = runner.invoke(cli, [*args, "--config", str(config)])
        assert result.exit_code == 2 and option in result.output.replace("\n", " "), result.output


def test_cli_static_prints_a_gateway_yaml_entry_and_stores_nothing() -> None:
    result = CliRunner().invoke(
        cli, ["keys", "create", "--static", "--tenant", "acme-eu", "--id", "k1", "--config", str(ROOT / "gateway.yaml")]
    )
    assert result.exit_code == 0, result.output
    key = result.output.split("API key (shown once): ")[1].split()[0]
    assert f"hash: {hash_key(key)}" in result.output and "id: k1" in result.output


# --- replicas: two gateway processes sharing PostgreSQL and Redis ---------------------------


class GatewayProcess:
    """``gateway serve`` in its own process (a second replica)."""

    def __init__(self, config: Path, audit_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "GATEWAY_AUDIT_URL": audit_url}
        args = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(self.port)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway process did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)
        self.sent = 0

    def chat(self, key: str) -> httpx.Response:
        self.sent += 1
        body = {"model": "ext-cheap", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
        return httpx.post(f"{self.url}{CHAT}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)

    def wait_status(self, key: str, status: int, *, within_s: float) -> float:
        start = time.monotonic()
        while True:
            r = self.chat(key)
            if r.status_code == status:
                return time.monotonic() - start
            assert time.monotonic() - start < within_s, f"still {r.status_code} after {within_s}s: {r.text}"
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module", autouse=True)
def keys_pg_url() -> Iterator[str]:
    """A PostgreSQL database of this module alone (the invariant check at the end of the
    module counts every record in it). Autouse, so it is set up before the module's gateways
    and dropped only after start_gateway's invariant check."""
    import asyncpg

    name = f"gw_test_keys_{uuid.uuid4().hex[:10]}"

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


def test_revocation_reaches_another_gateway_process_within_a_second(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    keys_pg_url: str,
    tmp_path: Path,
) -> None:
    pg_url = keys_pg_url
    migrate_database(pg_url)
    doc = _doc(sim_a, sim_b, redis=True)
    first = start_gateway(doc, audit_url=pg_url, migrate=False)
    config = _write_config(tmp_path, doc, first)
    second = GatewayProcess(config, pg_url, tmp_path / "second-gateway.log")
    try:
        # created on the first replica, usable on the second at once (Redis pub/sub)
        a = _admin(first, "POST", KEYS, json={"tenant": "acme-eu", "id": "k_replicated"}).json()
        assert second.wait_status(a["key"], 200, within_s=1.0) < 1.0
        assert _chat(first, a["key"]).status_code == 200
        # revoked through the first replica's API: the second refuses it within a second
        assert _admin(first, "DELETE", f"{KEYS}/k_replicated").status_code == 200
        took = second.wait_status(a["key"], 401, within_s=1.0)
        assert took < 1.0, f"revocation took {took:.2f}s to reach the other process"
        # revoked through the CLI: both replicas refuse it within a second
        b = _admin(first, "POST", KEYS, json={"tenant": "acme-eu", "id": "k_replicated_cli"}).json()
        second.wait_status(b["key"], 200, within_s=1.0)
        _cli(first, ["keys", "revoke", "k_replicated_cli"], config)
        assert second.wait_status(b["key"], 401, within_s=1.0) < 1.0
        assert _wait_status(first, b["key"], 401, within_s=1.0) < 1.0
    finally:
        second.stop()
    first.sent += second.sent  # the second process writes to the same audit database


# --- no database access per request ------------------------------------------------------------


class QueryCounter:
    """Counts SQL statements that touch ``api_keys`` on engines for one database URL."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement and conn.engine.url.database == self.database:
            with self._lock:
                self.count += 1


@pytest.fixture
def count_key_queries() -> Iterator[Callable[[str], QueryCounter]]:
    counters: list[QueryCounter] = []

    def make(url: str) -> QueryCounter:
        from sqlalchemy.engine import make_url

        counter = QueryCounter(str(make_url(url).database))
        event.listen(Engine, "before_cursor_execute", counter)
        counters.append(counter)
        return counter

    yield make
    for counter in counters:
        event.remove(Engine, "before_cursor_execute", counter)


def test_authentication_makes_no_database_query_per_request(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    count_key_queries: Callable[[str], QueryCounter],
) -> None:
    gw = start_gateway(_doc(sim_a, sim_b, redis=True))  # with Redis the backstop poll is every 10 s
    key = _admin(gw, "POST", KEYS, json={"tenant": "acme-eu"}).json()["key"]
    counter = count_key_queries(gw.audit_url)
    assert counter.count == 0
    for _ in range(20):
        assert _chat(gw, key).status_code == 200
        assert _chat(gw, "sk-unknown").status_code == 401
    assert counter.count <= 1, f"{counter.count} api_keys queries for 40 requests (at most one backstop poll)"


def test_keyring_authenticates_from_memory_and_reloads_only_on_change(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    migrate_database(url)
    doc = make_config(sim_a_url="http://127.0.0.1:9/v1", sim_b_url="http://127.0.0.1:9/v1", llama_url="http://x/v1")
    config = parse_config(doc)
    queries: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        queries.append(statement)

    async def run() -> None:
        store = KeyStore.from_url(url)
        ring = KeyRing(config.keys, config.tenants, store)
        admin = KeyAdmin(config, store, redis_url=None)
        try:
            body, _ = await admin.create({"tenant": "acme-eu", "id": "k_mem"}, actor=None, by="test")
            await ring.refresh()
            # this store's engine only: gateways other tests left running poll their own databases
            sync_engine = store._engine.sync_engine
            event.listen(sync_engine, "before_cursor_execute", count)
            try:
                for _ in range(1000):
                    assert ring.authenticate(f"Bearer {body['key']}").key_id == "k_mem"
                assert queries == []
                await ring.refresh()  # unchanged: one aggregate query, no reload
                assert len(queries) == 1 and "count" in queries[0].lower()
            finally:
                event.remove(sync_engine, "before_cursor_execute", count)
            await store.aclose()  # the database is gone for this ring: memory still answers
            assert ring.authenticate(f"Bearer {body['key']}").key_id == "k_mem"
            assert ring.key_limits["k_mem"].rpm is None and "k_app" in ring.key_limits
        finally:
            await store.aclose()

    asyncio.run(run())


# --- the change watcher --------------------------------------------------------------------------


def test_change_watcher_without_redis_polls() -> None:
    calls: list[float] = []

    async def refresh() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("a failing refresh is logged, never fatal")

    async def run() -> None:
        watcher = ChangeWatcher("t", refresh, redis_url=None, poll_interval_s=0.1)
        await watcher.start()
        await asyncio.sleep(0.55)
        await watcher.aclose()

    asyncio.run(run())
    assert 4 <= len(calls) <= 7


def test_change_watcher_with_redis_refreshes_on_publish() -> None:
    topic = f"{RUN}topic"

    async def run() -> None:
        changed = asyncio.Event()
        calls = 0

        async def refresh() -> None:
            nonlocal calls
            calls += 1
            if calls > 1:  # the first one is the catch-up right after subscribing
                changed.set()

        watcher = ChangeWatcher(topic, refresh, redis_url=REDIS_URL, poll_interval_s=5.0)
        await watcher.start()
        assert watcher.subscribed
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await publish(REDIS_URL, topic)
        await asyncio.wait_for(changed.wait(), timeout=1.0)
        assert time.monotonic() - started < 0.5  # pub/sub, not the 5 s poll
        await watcher.aclose()
        await publish(None, topic)  # no Redis: nothing to do, no error

    asyncio.run(run())


def test_change_watcher_polls_while_redis_is_unreachable() -> None:
    calls = 0

    async def refresh() -> None:
        nonlocal calls
        calls += 1

    async def run() -> None:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        watcher = ChangeWatcher("t", refresh, redis_url=dead, poll_interval_s=0.1)
        await watcher.start()  # never raises for Redis errors
        assert not watcher.subscribed
        # it keeps polling (each resubscribe attempt may take redis-py's own retries first)
        deadline = time.monotonic() + 10
        while calls < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await watcher.aclose()
        await publish(dead, "t")  # logged, not raised

    asyncio.run(run())
    assert calls >= 3


def test_migration_creates_and_drops_the_api_keys_table(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    migrate_database(url)

    async def tables() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
                return {r[0] for r in rows}
        finally:
            await engine.dispose()

    assert "api_keys" in asyncio.run(tables())
    migrate_database(url, "0002", downgrade=True)
    assert "api_keys" not in asyncio.run(tables())
