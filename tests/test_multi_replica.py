"""Scale-out without containers (issue 10): two gateway *processes* (``gateway serve``, each on
its own port, as two replicas behind a load balancer would run) sharing one PostgreSQL (audit
ledger, policy versions) and one Redis (limits, change notices), upstream = the provider
simulator. A key's limit holds across both, a policy activated through one is in force on the
other within a second, and after both stop every audit chain (one per process) verifies with
the one shared signing key.

Needs PostgreSQL and Redis on 127.0.0.1 (as the rest of the suite). The Redis keys live under
a prefix of this module's own and are deleted at the end; the database is created and dropped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.audit.digest import Digester
from gateway.audit.ledger import Signer
from gateway.audit.store import AuditStore
from gateway.auth import hash_key
from gateway.cli import migrate_database
from tests.conftest import ROOT
from tests.support.provider_sim import ProviderSimulator
from tests.support.redis_keys import REDIS_URL, drop_keys_async, run_prefix
from tests.support.servers import free_port

LIMITED_KEY = "sk-test-mr-limited"  # rpm 3
APP_KEY = "sk-test-mr-app"  # unlimited
ADMIN_KEY = "sk-test-mr-admin"
CHAT = "/v1/chat/completions"


def _body(text: str) -> dict[str, Any]:
    return {"model": "ext-sim", "messages": [{"role": "user", "content": text}], "max_tokens": 8}


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def post(self, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(path, json=body, headers={"authorization": f"Bearer {key}"})


@dataclass
class Cluster:
    replicas: list[Replica]
    audit_url: str
    public_key: Any
    sim: ProviderSimulator
    prefix: str
    sent: int = 0

    def post(self, replica: Replica, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
        self.sent += 1
        return replica.post(path, key, body)

    def stop(self) -> None:
        """SIGTERM both (graceful: uvicorn drains, the lifespan signs a final checkpoint)."""
        for r in self.replicas:
            r.client.close()
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        for r in self.replicas:
            try:
                r.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait(timeout=5)


async def _admin_sql(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _config(sim: ProviderSimulator, tmp: Path, prefix: str) -> dict[str, Any]:
    return {
        "policy": {"path": str(ROOT / "policies"), "timeout_ms": 2000, "poll_interval_s": 1.0},
        "server": {"health": {"enabled": False}},
        "audit": {
            "signing_key_file": str(tmp / "keys" / "audit-signing-key.pem"),
            "digest_secret_file": str(tmp / "keys" / "audit-digest.key"),
            "checkpoint_interval_s": 2,
        },
        "limits_store": {"kind": "redis", "url": REDIS_URL, "key_prefix": prefix, "on_error": "closed"},
        "deployments": [
            {
                "id": "ext-sim",
                "adapter": "openai_compat",
                "model": "sim-model",
                "api_base": sim.base_url,
                "locality": "external",
                "jurisdiction": "EU",
                "region": "eu-west",
                "capabilities": ["stream"],
                "context_window": 32768,
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
                "timeout_s": 10,
            }
        ],
        "tenants": {
            "acme-eu": {
                "home_region": "eu",
                "default_level": "public",
                "allowed": {"public": {"any": True}, "internal": {"jurisdictions": ["EU"]}},
            }
        },
        "keys": [
            {"id": "k_limited", "hash": hash_key(LIMITED_KEY), "tenant": "acme-eu", "limits": {"rpm": 3}},
            {"id": "k_app", "hash": hash_key(APP_KEY), "tenant": "acme-eu"},
            {
                "id": "k_admin",
                "hash": hash_key(ADMIN_KEY),
                "tenant": "acme-eu",
                "roles": ["admin", "app"],
                "all_tenants": True,
            },
        ],
    }


def _start(name: str, config: Path, audit_url: str, workdir: Path) -> Replica:
    port = free_port()
    log = workdir / f"{name}.log"
    env = {**os.environ, "GATEWAY_AUDIT_URL": audit_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("GATEWAY_CONFIG", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Replica(name, port, process, log)


def _wait_healthy(replica: Replica, deadline: float) -> None:
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"{replica.name} exited ({replica.process.returncode}):\n{replica.log.read_text()}")
        try:
            if replica.client.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{replica.name} not healthy in time:\n{replica.log.read_text()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("multi-replica")
    db = f"gw_mr_{uuid.uuid4().hex[:10]}"
    prefix = run_prefix("mr")
    asyncio.run(_admin_sql(f'CREATE DATABASE "{db}"'))
    audit_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    replicas: list[Replica] = []
    with ProviderSimulator(name="ext-sim") as sim:
        try:
            migrate_database(audit_url)
            config = _config(sim, tmp, prefix)
            # the replicas share one signing key and digest secret (a Secret in Kubernetes),
            # made once before they start, as the compose init service and the chart do
            signer = Signer.from_file(Path(config["audit"]["signing_key_file"]))
            Digester.from_file(Path(config["audit"]["digest_secret_file"]))
            path = tmp / "gateway.yaml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            for name in ("replica-a", "replica-b"):
                replicas.append(_start(name, path, audit_url, tmp))
            deadline = time.monotonic() + 90
            for replica in replicas:
                _wait_healthy(replica, deadline)
            found = Cluster(replicas, audit_url, signer.public_key, sim, prefix)
            yield found
        finally:
            Cluster(replicas, audit_url, None, sim, prefix).stop()
            asyncio.run(drop_keys_async(prefix))
            asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def _wait_for_room_in_this_minute(needed_s: float = 12.0) -> None:
    """Limits count per epoch minute: start a burst early enough to finish inside one."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.2)


def test_a_key_limited_to_3_rpm_gets_exactly_3_of_10_requests_across_both_replicas(cluster: Cluster) -> None:
    a, b = cluster.replicas
    _wait_for_room_in_this_minute()
    cluster.sim.reset()
    answers = []
    for i in range(10):
        replica = (a, b)[i % 2]
        r = cluster.post(replica, CHAT, LIMITED_KEY, _body(f"request {i}"))
        answers.append((replica.name, r.status_code))
    assert Counter(status for _, status in answers) == {200: 3, 429: 7}, answers
    assert {name for name, status in answers if status == 200} == {"replica-a", "replica-b"}
    assert len(cluster.sim.requests) == 3, "only admitted requests reached the provider"
    # the other key is not affected by this one's limit
    assert cluster.post(b, CHAT, APP_KEY, _body("another key")).status_code == 200


def test_a_policy_activated_through_one_replica_is_in_force_on_the_other_within_a_second(cluster: Cluster) -> None:
    a, b = cluster.replicas
    assert cluster.post(b, CHAT, APP_KEY, _body("before")).status_code == 200
    switched = cluster.post(a, "/v1/admin/policies/killswitch", ADMIN_KEY, {"blocked": True, "reason": "INC-7"})
    assert switched.status_code == 200, switched.text
    revision = switched.json()["to"]
    activated_at = time.monotonic()
    while True:
        r = cluster.post(b, CHAT, APP_KEY, _body("during"))
        elapsed = time.monotonic() - activated_at
        if r.status_code == 403:
            break
        assert r.status_code == 200, r.text
        assert elapsed < 1.0, "the kill switch was not in force on the other replica within a second"
        time.sleep(0.05)
    assert elapsed < 1.0
    assert "kill switch" in r.text
    cluster.sim.reset()
    assert cluster.post(b, CHAT, APP_KEY, _body("blocked")).status_code == 403
    assert cluster.sim.requests == []
    policies = b.client.get("/v1/admin/policies", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert policies.json()["active"] == revision

    # and back, the other way round
    reopened = cluster.post(b, "/v1/admin/policies/killswitch", ADMIN_KEY, {"blocked": False, "reason": "INC-7 over"})
    assert reopened.status_code == 200, reopened.text
    reopened_at = time.monotonic()
    while (r := cluster.post(a, CHAT, APP_KEY, _body("after"))).status_code == 403:
        assert time.monotonic() - reopened_at < 1.0, "re-opening did not reach the other replica within a second"
        time.sleep(0.05)
    assert r.status_code == 200, r.text


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_through_the_compose_load_balancer_config_both_replicas_serve_and_streams_pass(
    cluster: Cluster, tmp_path: Path
) -> None:
    """deploy/nginx.conf in front of the two processes (host names swapped for their ports):
    requests are spread over both replicas, and an SSE stream passes through."""
    a, b = cluster.replicas
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    conf = conf.replace("gateway-1:8080", f"127.0.0.1:{a.port}").replace("gateway-2:8080", f"127.0.0.1:{b.port}")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    assert f"127.0.0.1:{a.port}" in conf and f"listen 127.0.0.1:{port};" in conf
    (tmp_path / "nginx.conf").write_text(conf, encoding="utf-8")
    nginx = subprocess.Popen(
        [
            "nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log"),
            "-g", f"daemon off; pid {tmp_path / 'nginx.pid'};",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        lb = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 10
        while True:
            try:
                if lb.get("/nginx-health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and nginx.poll() is None, (tmp_path / "error.log").read_text()
            time.sleep(0.1)
        auth = {"authorization": f"Bearer {APP_KEY}"}
        ids = []
        for i in range(6):
            cluster.sent += 1
            r = lb.post(CHAT, json=_body(f"via lb {i}"), headers=auth)
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
        cluster.sent += 1
        with lb.stream("POST", CHAT, json={**_body("stream via lb"), "stream": True}, headers=auth) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in s.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and len(lines) > 2
        lb.close()
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)

    async def chains_of(request_ids: list[str]) -> set[str]:
        store = AuditStore.from_url(cluster.audit_url)
        try:
            return {r["chain_id"] for r in await store.list(limit=1000) if r["request_id"] in request_ids}
        finally:
            await store.aclose()

    assert len(asyncio.run(chains_of(ids))) == 2, "the balancer sent requests to both replicas"


def test_after_both_stop_every_audit_chain_verifies(cluster: Cluster) -> None:
    cluster.stop()
    assert all(r.process.returncode is not None for r in cluster.replicas)

    async def check() -> tuple[Any, list[dict[str, Any]], int]:
        store = AuditStore.from_url(cluster.audit_url)
        try:
            report = await store.verify([cluster.public_key])
            records = await store.list(limit=1000)
            return report, records, await store.count(include_system=False)
        finally:
            await store.aclose()

    report, records, count = asyncio.run(check())
    assert report.ok, report.summary()
    chains = {r["chain_id"] for r in records}
    assert len(chains) == 2, f"one chain per process, got {chains}"
    assert set(report.chains) == chains
    assert count == cluster.sent, "one audit record per request, on whichever replica took it"
    limited = Counter(r["status"] for r in records if r["key_id"] == "k_limited")
    assert limited == {"ok": 3, "rate_limited": 7}
    # the CLI says the same as the store
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--config", str(_config_path(cluster))],
        env={**os.environ, "GATEWAY_AUDIT_URL": cluster.audit_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _config_path(cluster: Cluster) -> Path:
    return cluster.replicas[0].log.parent / "gateway.yaml"
