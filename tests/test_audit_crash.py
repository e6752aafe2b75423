"""Crash test: SIGKILL the gateway with ~200 requests in flight. After a restart the audit
chains still verify, and every response a client received has its record."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.cli import migrate_database
from tests.conftest import APP_KEY, ROOT, _records, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.servers import free_port

IN_FLIGHT = 200


def _start(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GATEWAY_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway did not start")


async def _fire(port: int, kill_after_answers: int, proc: subprocess.Popen[bytes]) -> list[str]:
    """Send IN_FLIGHT concurrent requests; SIGKILL the gateway once ``kill_after_answers``
    responses arrived, with the rest still in flight. Returns the answered request ids."""
    answered: list[str] = []
    enough = asyncio.Event()
    limits = httpx.Limits(max_connections=IN_FLIGHT + 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as client:

        async def one(i: int) -> str | None:
            # staggered over ~2 s: however fast the gateway is, requests are still arriving and
            # in flight when the kill lands (at once, all 200 could be answered before it)
            await asyncio.sleep(i * 0.01)
            try:
                r = await client.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {APP_KEY}"},
                    json={"model": "external", "messages": [{"role": "user", "content": f"request {i}"}]},
                )
            except httpx.HTTPError:
                return None
            if r.status_code != 200:
                return None
            answered.append(r.headers["x-request-id"])
            if len(answered) >= kill_after_answers:
                enough.set()
            return r.headers["x-request-id"]

        async def killer() -> None:
            await asyncio.wait_for(enough.wait(), timeout=60)
            proc.send_signal(signal.SIGKILL)

        results: list[Any] = await asyncio.gather(*(one(i) for i in range(IN_FLIGHT)), killer())
    return [r for r in results[:-1] if r]


@pytest.mark.parametrize("durability", ["fsync", "process"])
def test_sigkill_with_requests_in_flight_loses_no_answered_record_and_chains_verify(
    tmp_path: Path, sim_a: ProviderSimulator, sim_b: ProviderSimulator, durability: str
) -> None:
    """Both durability levels survive a crash of the gateway process (``process`` gives up
    only a crash of the database host's OS, which a test cannot stage here)."""
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    audit_url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    doc["audit"] = {
        "url": audit_url,
        "signing_key_file": str(tmp_path / "signing.pem"),
        "digest_secret_file": str(tmp_path / "digest.key"),
        "checkpoint_every": 50,
        "durability": durability,
    }
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc))
    migrate_database(audit_url)
    log = tmp_path / "gateway.log"
    port = free_port()

    sim_a.behave(delay_s=0.2)  # keep requests in flight at the upstream
    proc = _start(config, port, log)
    answered = asyncio.run(_fire(port, 20, proc))
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < len(answered) < IN_FLIGHT, f"{len(answered)} answered: the kill should land mid-flight"

    sim_a.reset()
    proc = _start(config, port, log)  # restart: a new chain
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"authorization": f"Bearer {APP_KEY}"},
        json={"model": "external", "messages": [{"role": "user", "content": "after restart"}]},
    )
    assert r.status_code == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)

    verify = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.count("OK") == 2  # the killed chain and the restarted one

    recorded = {row["request_id"]: row for row in asyncio.run(_records(audit_url, limit=100_000))}
    missing = [rid for rid in answered if rid not in recorded]
    assert not missing, f"{len(missing)} answered requests have no record"
    assert all(recorded[rid]["status"] == "ok" for rid in answered)
