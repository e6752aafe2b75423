"""Gateway overhead and throughput, side by side with a direct call, a bare proxy floor and LiteLLM.

Usage (``make bench`` runs the first line):

    .venv/bin/python benchmarks/run_bench.py             # full run, ~12-15 min
    .venv/bin/python benchmarks/run_bench.py --quick     # ~3 min: 5 targets, 100/300 req/s, 5 s phases
    .venv/bin/python benchmarks/run_bench.py --only direct,floor,gateway
    .venv/bin/python benchmarks/run_bench.py --soak 30   # 30 min steady load, RSS sampled
    .venv/bin/python benchmarks/run_bench.py --profile gateway   # py-spy on the gateway under load

    --wait-load 0.7      before measuring, wait (up to --wait-max s) for the 1-min load average
                         to drop below this (2-core machines shared with test suites)

A benchmark, not a test. Every target runs as its own process with ONE worker, on loopback, in
front of the same upstream simulator (``upstream_sim.py``: raw ASGI on uvicorn + uvloop +
httptools, a fixed ``chat.completion`` or an SSE stream of 8 chunks):

- ``direct``      the upstream itself (the baseline every "added latency" is measured from);
- ``floor``       ``floor_proxy.py``: bare aiohttp pass-through (server + pooled client);
- ``gateway``     ``gateway serve`` with the full pipeline on the embedded defaults: API key,
                  classification, embedded regopy policy (+ decision cache), in-process rate
                  limits/budgets (tenant limits set, never reached), SQLite audit with the
                  decision record committed before the upstream call (the deployment is
                  ``external``: write-ahead, the strictest path), Prometheus metrics on;
- ``gateway-pg``  the same on PostgreSQL (throwaway database, migrated, dropped) + Redis
                  limits and shared breaker (unique key prefix, keys deleted afterwards);
- ``litellm``     LiteLLM proxy 1.106.12 (its own venv, ``benchmarks/.venv-litellm``, created
                  on first use), no database, ``LITELLM_MODE=PRODUCTION``, logging off, one
                  worker, master key set;
- ``gateway-telemetry-off`` / ``gateway-traces``: telemetry overhead (``prometheus: false``,
                  traces off) and (traces ``otlp_http`` to a collector sink in this process that
                  decodes the spans; per-stage span timings come from there).

Phases per target, in this order (each after the server is idle again): saturation, stream
TTFT, then the fixed offered loads (the overloading ones last, so a backlog cannot spill into
another phase). Fixed offered loads (100, 300, 1000 req/s, open loop: the built-in aiohttp
generator starts a request every 1/rate s whatever the answers do, so a slow server is not
excused by the generator waiting) and saturation (closed loop, 50 connections: ``hey -c 50``
when ``hey`` — Debian package ``hey`` — is on PATH, else the built-in generator with 50
workers); stream TTFT: paced streams (20/s) from an aiohttp client here.

Per phase: achieved req/s, errors, p50/p90/p99 latency; the server process's CPU seconds
per request (user+system, psutil) and its peak RSS over the whole target run. Added latency
= target percentile - direct percentile at the same offered load. For gateway targets the
Prometheus stage histograms (classification, policy evaluation, audit commit) are scraped
after the run.

Results: ``benchmarks/results/bench.json``, ``bench.md`` and ``bench.png`` (``--soak``:
``soak.json``/``soak.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
PY = sys.executable
LITELLM_VERSION = "1.106.12"
LITELLM_VENV = BENCH / ".venv-litellm"
KEY = "sk-bench-app-0123456789"
BODY = json.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "Summarise the quarterly report in two sentences, please."}],
        "max_tokens": 64,
    }
)
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True})
RATES = (100, 300, 1000)
WORKERS = 50  # hey workers for the paced phases and connections at saturation

ALL_TARGETS = (
    "direct",
    "floor",
    "gateway",
    "gateway-process",
    "gateway-pg",
    "gateway-pg-process",
    "litellm",
    "gateway-telemetry-off",
    "gateway-traces",
)


# -- helpers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> float:
    return os.getloadavg()[0]


def wait_for_load(limit: float, max_s: float) -> float:
    """Poll the 1-min load average until it is below ``limit`` (at most ``max_s`` s)."""
    deadline = time.monotonic() + max_s
    while loadavg() >= limit and time.monotonic() < deadline:
        print(f"  load average {loadavg():.2f} >= {limit}; waiting ...", flush=True)
        time.sleep(15)
    return loadavg()


def wait_http(url: str, *, method: str = "GET", body: str | None = None, timeout_s: float = 90.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
            req.add_header("content-type", "application/json")
            req.add_header("authorization", f"Bearer {KEY}")
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = exc
        except Exception as exc:
            last = exc
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s}s: {last}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class ProcWatch:
    """Samples a process tree's RSS (peak) and reads its CPU seconds."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_rss = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return []

    def rss(self) -> int:
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def cpu_s(self) -> float:
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss()
            self.peak_rss = max(self.peak_rss, rss)
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str  # base URL, chat at url + /v1/chat/completions
    log: Path
    metrics_url: str | None = None
    cleanup: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for fn in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                fn()


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    return subprocess.Popen(
        argv,
        stdout=fh,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


# -- load generation ------------------------------------------------------------------------

_HEY_PCT = re.compile(r"^\s*(\d+)%% in ([\d.]+) secs".replace("%%", "%"), re.M)
_HEY_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+) responses", re.M)
_HEY_ERRORS = re.compile(r"^\s*\[(\d+)\]\s+(.+)$", re.M)
_HEY_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def hey(url: str, *, duration_s: float, rate: float | None, workers: int = WORKERS, body: str = BODY) -> dict[str, Any]:
    argv = ["hey", "-z", f"{duration_s:g}s", "-c", str(workers), "-t", "20", "-m", "POST", "-T", "application/json"]
    argv += ["-H", f"Authorization: Bearer {KEY}", "-d", body]
    if rate:
        argv += ["-q", f"{rate / workers:g}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=duration_s + 60).stdout
    pcts = {int(p): float(s) * 1000 for p, s in _HEY_PCT.findall(out)}
    statuses = {int(code): int(n) for code, n in _HEY_STATUS.findall(out)}
    errors_part = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    errors = {msg.strip()[:160]: int(n) for n, msg in _HEY_ERRORS.findall(errors_part)}
    # hey -z cancels the requests in flight when the duration ends; those are not failures
    # of the server (at most one per worker).
    cancelled = sum(n for msg, n in errors.items() if "canceled" in msg or "cancelled" in msg)
    ok = statuses.get(200, 0)
    failed = sum(n for code, n in statuses.items() if code != 200) + sum(errors.values()) - min(cancelled, workers)
    rps_match = _HEY_RPS.search(out)
    total = ok + failed
    return {
        "requests": total,
        "ok": ok,
        "errors": failed,
        "error_rate": failed / total if total else 1.0,
        "rps": ok / duration_s if rps_match else 0.0,
        "p50_ms": pcts.get(50, float("nan")),
        "p90_ms": pcts.get(90, float("nan")),
        "p99_ms": pcts.get(99, float("nan")),
        "statuses": statuses,
        "error_samples": dict(list(errors.items())[:3]),
    }


async def _py_load(url: str, duration_s: float, rate: float | None, workers: int, body: str) -> dict[str, Any]:
    """Built-in generator: open loop at ``rate`` (a request started every 1/rate s whatever the
    answers do), or closed loop with ``workers`` concurrent callers."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    data = body.encode()
    connector = aiohttp.TCPConnector(limit=0 if rate else workers)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:

        async def one() -> None:
            nonlocal in_window
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=data, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 200:
                        t1 = time.perf_counter()
                        lat.append((t1 - t0) * 1000)
                        in_window += t1 <= end
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        in_window = 0  # answers that arrived within the phase: the achieved rate
        start = time.perf_counter()
        end = start + duration_s
        if rate:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while True:
                due = start + i / rate
                if due >= end:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks, timeout=20)
        else:

            async def worker() -> None:
                while time.perf_counter() < end:
                    await one()

            await asyncio.gather(*(worker() for _ in range(workers)))
    ok = statuses.get(200, 0)
    failed = sum(n for c, n in statuses.items() if c != 200) + sum(errors.values())
    total = ok + failed
    return {
        "requests": total,
        "ok": ok,
        "errors": failed,
        "error_rate": failed / total if total else 1.0,
        "rps": in_window / duration_s,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "statuses": statuses,
        "error_samples": dict(list(errors.items())[:3]),
    }


def load(
    url: str, *, duration_s: float, rate: float | None, workers: int = WORKERS, body: str = BODY
) -> dict[str, Any]:
    """Fixed offered rate: the built-in open-loop generator (``hey -q`` paces each worker with
    its own ticker, all in phase: 50 workers at 2 req/s each send bursts of 50 requests every
    0.5 s, which measures queueing behind the burst, not the added latency). Saturation: hey
    with ``workers`` connections when installed (Go, cheaper per request), else built-in."""
    if rate is None and shutil.which("hey"):
        return hey(url, duration_s=duration_s, rate=None, workers=workers, body=body)
    return run_async(_py_load(url, duration_s, rate, workers, body))


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


async def _ttft(url: str, n: int, rate: float) -> dict[str, Any]:
    """``n`` streams started ``rate`` per second; time to the first content chunk and to [DONE]."""
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    first: list[float] = []
    total: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            got_first = False
            try:
                async with session.post(url, data=STREAM_BODY.encode(), headers=headers) as resp:
                    if resp.status != 200:
                        errors += 1
                        await resp.read()
                        return
                    async for line in resp.content:
                        if not got_first and line.startswith(b"data:") and b'"content"' in line:
                            first.append((time.perf_counter() - t0) * 1000)
                            got_first = True
                        if line.startswith(b"data: [DONE]"):
                            break
                total.append((time.perf_counter() - t0) * 1000)
                if not got_first:
                    errors += 1
            except Exception:
                errors += 1

        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return {
        "streams": n,
        "errors": errors,
        "ttft_p50_ms": pct(first, 50),
        "ttft_p90_ms": pct(first, 90),
        "ttft_p99_ms": pct(first, 99),
        "total_p50_ms": pct(total, 50),
    }


# -- OTLP trace sink ------------------------------------------------------------------------


class TraceSink:
    """An OTLP/HTTP trace receiver in this process (a thread with its own loop): answers 200
    to every export and keeps each span's duration by name."""

    def __init__(self) -> None:
        self.port = free_port()
        self.durations: dict[str, list[float]] = {}
        self.exports = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        from aiohttp import web
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        async def traces(request: web.Request) -> web.Response:
            msg = ExportTraceServiceRequest()
            msg.ParseFromString(await request.read())
            self.exports += 1
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
                        self.durations.setdefault(span.name, []).append(ms)
            return web.Response(
                body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
            )

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/traces", traces)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def reset(self) -> None:
        self.durations = {}

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "count": len(v),
                "p50_ms": round(pct(v, 50), 4),
                "p90_ms": round(pct(v, 90), 4),
                "p99_ms": round(pct(v, 99), 4),
                "mean_ms": round(statistics.fmean(v), 4),
            }
            for name, v in sorted(self.durations.items())
        }


# -- targets --------------------------------------------------------------------------------


def start_upstream(workdir: Path) -> Server:
    port = free_port()
    log = workdir / "upstream.log"
    proc = spawn("upstream", [PY, str(BENCH / "upstream_sim.py"), "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models")
    return Server("upstream", proc, url, log)


def start_floor(workdir: Path, upstream: str) -> Server:
    port = free_port()
    log = workdir / "floor.log"
    proc = spawn("floor", [PY, str(BENCH / "floor_proxy.py"), "--port", str(port), "--upstream", upstream], log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/chat/completions", method="POST", body=BODY)
    return Server("floor", proc, url, log)


def gateway_config(
    workdir: Path,
    upstream: str,
    *,
    audit_url: str,
    redis: str | None,
    telemetry: dict[str, Any],
    durability: str = "fsync",
) -> Path:
    import yaml

    cfg: dict[str, Any] = {
        "policy": {"engine": "embedded", "path": str(ROOT / "policies")},
        "audit": {
            "url": audit_url,
            "signing_key_file": str(workdir / "signing-key.pem"),
            "digest_secret_file": str(workdir / "digest.key"),
            "durability": durability,
        },
        "telemetry": {"logs": "json", **telemetry},
        "deployments": [
            {
                "id": "bench-upstream",
                "adapter": "openai_compat",
                "model": "bench-model",
                "api_base": f"{upstream}/v1",
                "locality": "external",  # write-ahead audit: the decision is durable before the call
                "jurisdiction": "EU",
                "region": "eu-west",
                "retains_data": False,
                "trains_on_data": False,
                "capabilities": ["stream", "tools", "json"],
                "context_window": 32000,
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.3},
                "timeout_s": 30,
            }
        ],
        "aliases": {"bench": {"strategy": "cost", "deployments": ["bench-upstream"]}},
        "tenants": {
            "bench": {
                "home_region": "eu",
                "default_level": "internal",
                "allowed": {
                    "public": {"any": True},
                    "internal": {"jurisdictions": ["EU"]},
                    "confidential": {"locality": ["local"]},
                    "restricted": {"locality": ["local"]},
                },
                # limits are checked and counted on every request, never reached
                "limits": {"rpm": 100_000_000, "tpm": 10_000_000_000, "usd_per_day": 1_000_000.0},
            }
        },
        "keys": [
            {
                "id": "k_bench",
                "hash": "sha256:" + hashlib.sha256(KEY.encode()).hexdigest(),
                "tenant": "bench",
                "roles": ["app"],
            }
        ],
    }
    if redis:
        cfg["limits_store"] = {
            "kind": "redis",
            "url": redis,
            "key_prefix": f"sgwbench{os.getpid()}{uuid.uuid4().hex[:6]}:",
        }
    path = workdir / f"gateway-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_gateway(workdir: Path, upstream: str, *, variant: str, sink: TraceSink | None) -> Server:
    telemetry: dict[str, Any] = {"traces": "off", "prometheus": True}
    redis = None
    cleanup: list[Any] = []
    tag = uuid.uuid4().hex[:8]
    audit_url = f"sqlite+aiosqlite:///{workdir}/audit-{tag}.db"
    if variant == "gateway-telemetry-off":
        telemetry = {"traces": "off", "prometheus": False}
    elif variant == "gateway-traces":
        assert sink is not None
        telemetry = {"traces": "otlp_http", "endpoint": f"http://127.0.0.1:{sink.port}", "prometheus": True}
    elif variant.startswith("gateway-pg"):
        db = f"sgw_bench_{tag}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"], check=True)
        audit_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
        redis = "redis://127.0.0.1:6379/0"

        def drop() -> None:
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                check=False,
            )

        cleanup.append(drop)
    durability = "process" if variant.endswith("-process") else "fsync"
    config = gateway_config(
        workdir, upstream, audit_url=audit_url, redis=redis, telemetry=telemetry, durability=durability
    )
    if redis:
        import yaml

        prefix = yaml.safe_load(config.read_text())["limits_store"]["key_prefix"]

        def flush() -> None:
            import redis as redis_lib

            r = redis_lib.Redis.from_url("redis://127.0.0.1:6379/0")
            keys = list(r.scan_iter(match=prefix + "*", count=1000))
            if keys:
                r.delete(*keys)

        cleanup.append(flush)
    gw = str(Path(PY).parent / "gateway")
    subprocess.run([gw, "migrate", "--config", str(config)], check=True, cwd=str(ROOT), capture_output=True)
    port = free_port()
    log = workdir / f"{variant}.log"
    proc = spawn(variant, [gw, "serve", "--config", str(config), "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz")
    except RuntimeError:
        print(log.read_text()[-3000:])
        raise
    server = Server(variant, proc, url, log, cleanup=cleanup)
    if telemetry.get("prometheus"):
        server.metrics_url = url + "/metrics"
    return server


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"  creating {LITELLM_VENV} with litellm[proxy]=={LITELLM_VERSION} (first use, a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True
    )
    return exe


def start_litellm(workdir: Path, upstream: str) -> Server:
    import yaml

    exe = ensure_litellm()
    cfg = {
        "model_list": [
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": "openai/bench-model",
                    "api_base": f"{upstream}/v1",
                    "api_key": "sk-upstream",
                },
            }
        ],
        # LiteLLM's production recommendations that apply without a database: no verbose or
        # debug logging, JSON logs, production mode (env), a master key.
        "litellm_settings": {"set_verbose": False, "json_logs": True, "request_timeout": 30},
        "general_settings": {"master_key": KEY},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    port = free_port()
    log = workdir / "litellm.log"
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MODE": "PRODUCTION",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
        "LITELLM_TELEMETRY": "False",
    }
    argv = [str(exe), "--config", str(path), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"]
    proc = spawn("litellm", argv, log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/chat/completions", method="POST", body=BODY, timeout_s=180)
    except RuntimeError:
        print(log.read_text()[-3000:])
        raise
    return Server("litellm", proc, url, log)


# -- prometheus -----------------------------------------------------------------------------

_PROM_LINE = re.compile(r"^(gateway_\w+?)_(bucket|sum|count)\{([^}]*)\}\s+([\d.eE+-]+|\+Inf|NaN)$")


def scrape_raw(url: str | None) -> dict[str, dict[str, Any]]:
    """The gateway's ``*_duration`` histograms from /metrics: buckets (cumulative), sum, count."""
    import urllib.request

    if not url:
        return {}
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception:
        return {}
    hist: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        m = _PROM_LINE.match(line)
        if not m or "duration" not in m.group(1):
            continue
        name, part, labels, value = m.groups()
        h = hist.setdefault(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if part == "bucket":
            le = re.search(r'le="([^"]+)"', labels)
            if le:
                bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
                h["buckets"][bound] = h["buckets"].get(bound, 0.0) + float(value)
        elif part == "sum":
            h["sum"] += float(value)
        else:
            h["count"] += float(value)
    return hist


def stage_delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per histogram, what a phase added: count, mean and bucket-interpolated p50/p99 (ms)."""
    out: dict[str, Any] = {}
    for name, h1 in after.items():
        h0 = before.get(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        count = h1["count"] - h0["count"]
        if count <= 0:
            continue
        buckets = {b: c - h0["buckets"].get(b, 0.0) for b, c in h1["buckets"].items()}

        def quantile(q: float, buckets: dict[float, float] = buckets, count: float = count) -> float:
            target = q * count
            prev_bound, prev_count = 0.0, 0.0
            for bound, cum in sorted(buckets.items()):
                if cum >= target:
                    if bound == float("inf"):
                        return prev_bound * 1000
                    frac = (target - prev_count) / (cum - prev_count) if cum > prev_count else 1.0
                    return (prev_bound + (bound - prev_bound) * frac) * 1000
                prev_bound, prev_count = bound, cum
            return float("nan")

        out[name.removeprefix("gateway_").removesuffix("_duration")] = {
            "count": int(count),
            "mean_ms": round((h1["sum"] - h0["sum"]) / count * 1000, 4),
            "p50_ms~": round(quantile(0.5), 4),
            "p99_ms~": round(quantile(0.99), 4),
        }
    return out


# -- the run --------------------------------------------------------------------------------


def settle(watch: ProcWatch, *, max_s: float = 45.0, busy: float = 0.15) -> float:
    """Wait until the server is idle again (CPU below ``busy`` of a core over 1 s): an
    overloaded server drains its backlog before the next phase starts. Returns the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        c0 = watch.cpu_s()
        time.sleep(1.0)
        if watch.cpu_s() - c0 < busy:
            break
    return round(time.monotonic() - t0, 1)


def run_target(
    name: str,
    server: Server,
    *,
    phase_s: float,
    sat_s: float,
    streams: int,
    rates: tuple[int, ...],
    sink: TraceSink | None = None,
) -> dict[str, Any]:
    chat = server.url + "/v1/chat/completions"
    watch = ProcWatch(server.proc.pid)
    result: dict[str, Any] = {"target": name, "load_start": round(loadavg(), 2), "fixed": {}}
    try:
        load(chat, duration_s=2, rate=None, workers=8)  # warm-up: connections, caches, JIT-free paths
        r_settle = settle(watch)
        cpu0, stages0 = watch.cpu_s(), scrape_raw(server.metrics_url)
        r = load(chat, duration_s=sat_s, rate=None)
        r["settle_s"] = r_settle
        r["cpu_ms_per_req"] = round((watch.cpu_s() - cpu0) / max(r["ok"], 1) * 1000, 3)
        if server.metrics_url:
            r["stages"] = stage_delta(stages0, scrape_raw(server.metrics_url))
        result["saturation"] = r
        print(
            f"  {name:>22} saturation (c={WORKERS}): {r['rps']:8.1f} req/s, err {r['errors']} "
            f"({r['error_rate']:.3%}), p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms, "
            f"cpu {r['cpu_ms_per_req']:.2f} ms/req",
            flush=True,
        )
        settle(watch)
        t = run_async(_ttft(chat, streams, rate=20))
        result["stream"] = t
        print(f"  {name:>22} stream TTFT p50 {t['ttft_p50_ms']:.2f} p99 {t['ttft_p99_ms']:.2f} ms", flush=True)
        for rate in rates:
            settle(watch)
            cpu0, stages0 = watch.cpu_s(), scrape_raw(server.metrics_url)
            if sink is not None:
                sink.reset()
            r = load(chat, duration_s=phase_s, rate=rate)
            r["cpu_ms_per_req"] = round((watch.cpu_s() - cpu0) / max(r["ok"], 1) * 1000, 3)
            if server.metrics_url:
                r["stages"] = stage_delta(stages0, scrape_raw(server.metrics_url))
            if sink is not None:
                time.sleep(6)  # the batch span processor exports every 5 s
                r["spans"] = sink.summary()
            result["fixed"][str(rate)] = r
            print(
                f"  {name:>22} @{rate:>5}/s: {r['rps']:8.1f} req/s ok, err {r['errors']}, "
                f"p50 {r['p50_ms']:.2f} p90 {r['p90_ms']:.2f} p99 {r['p99_ms']:.2f} ms, "
                f"cpu {r['cpu_ms_per_req']:.2f} ms/req",
                flush=True,
            )
    finally:
        watch.stop()
    result["peak_rss_mb"] = round(watch.peak_rss / 2**20, 1)
    result["load_end"] = round(loadavg(), 2)
    return result


def added(results: dict[str, Any]) -> None:
    """Target minus direct, per fixed rate and percentile (ms); TTFT likewise."""
    direct = results.get("direct")
    if not direct:
        return
    for _name, r in results.items():
        r["added"] = {}
        for rate, phase in r["fixed"].items():
            base = direct["fixed"].get(rate)
            if base:
                r["added"][rate] = {q: round(phase[f"{q}_ms"] - base[f"{q}_ms"], 3) for q in ("p50", "p90", "p99")}
        if "stream" in r and "stream" in direct:
            r["stream"]["ttft_added_p50_ms"] = round(r["stream"]["ttft_p50_ms"] - direct["stream"]["ttft_p50_ms"], 3)
            r["stream"]["ttft_added_p99_ms"] = round(r["stream"]["ttft_p99_ms"] - direct["stream"]["ttft_p99_ms"], 3)


def sustainable(r: dict[str, Any]) -> float:
    """Max req/s with < 0.1 % errors: the best of saturation and the fixed rates that kept up."""
    best = 0.0
    sat = r.get("saturation")
    if sat and sat["error_rate"] < 0.001:
        best = sat["rps"]
    for rate, p in r["fixed"].items():  # an offered rate counts only if it was kept up with
        if p["error_rate"] < 0.001 and p["rps"] >= 0.98 * float(rate):
            best = max(best, p["rps"])
    return best


def targets_verdict(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's targets for each full-pipeline gateway that ran (the default ``fsync``
    durability and ``process``, on SQLite and PostgreSQL + Redis), against the same run's
    floor and LiteLLM."""
    out: list[dict[str, Any]] = []
    floor, lite = results.get("floor"), results.get("litellm")
    for name in ("gateway", "gateway-process", "gateway-pg", "gateway-pg-process"):
        gw = results.get(name)
        if not gw:
            continue

        def verdict(target: str, value: str, met: bool, name: str = name) -> None:
            out.append({"gateway": name, "target": target, "value": value, "met": met})

        if floor and "100" in gw.get("added", {}) and "100" in floor.get("added", {}):
            g, f = gw["added"]["100"], floor["added"]["100"]
            verdict(
                "added p50 at 100 req/s <= 1.5x floor's",
                f"{g['p50']:.2f} ms vs {1.5 * f['p50']:.2f} ms (floor {f['p50']:.2f})",
                g["p50"] <= 1.5 * f["p50"],
            )
            verdict(
                "added p99 at 100 req/s <= 2x floor's",
                f"{g['p99']:.2f} ms vs {2 * f['p99']:.2f} ms (floor {f['p99']:.2f})",
                g["p99"] <= 2 * f["p99"],
            )
        best = sustainable(gw)
        if lite:
            need = 10 * sustainable(lite)
            verdict("max sustainable req/s >= 10x LiteLLM's", f"{best:.0f} vs {need:.0f}", best >= need)
        if floor:
            need = 0.5 * sustainable(floor)
            verdict("max sustainable req/s >= 0.5x floor's", f"{best:.0f} vs {need:.0f}", best >= need)
    return out


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    env = report["environment"]
    lines = [
        f"Measured {env['date']} on {env['machine']} ({env['cpus']} CPUs), Python {env['python']}, "
        f"load generator {env['load_generator']}; 1-min load average {env['load_before']} before, "
        f"{env['load_after']} after. Mode: {report['mode']}.",
        "",
        "| target | added p50/p90/p99 ms @100 | added p50/p99 @300 | added p50/p99 @1000 | "
        "achieved @1000 | max req/s (<0.1% err) | saturation err | TTFT p50/p99 ms (added p50) | "
        "CPU ms/req (sat) | peak RSS MB |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, r in results.items():
        a = r.get("added", {})

        def cell(rate: str, qs: tuple[str, ...], a: dict[str, Any] = a) -> str:
            if rate not in a:
                return "—"
            return " / ".join(f"{a[rate][q]:.2f}" for q in qs)

        s = r.get("stream", {})
        sat = r.get("saturation", {})
        lines.append(
            f"| {name} | {cell('100', ('p50', 'p90', 'p99'))} | {cell('300', ('p50', 'p99'))} | "
            f"{cell('1000', ('p50', 'p99'))} | {r['fixed'].get('1000', {}).get('rps', 0):,.0f} | "
            f"{sustainable(r):,.0f} | {sat.get('error_rate', 0):.2%} | "
            f"{s.get('ttft_p50_ms', float('nan')):.2f} / {s.get('ttft_p99_ms', float('nan')):.2f} "
            f"({s.get('ttft_added_p50_ms', 0):+.2f}) | {sat.get('cpu_ms_per_req', float('nan')):.2f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "Absolute latency (ms, p50 / p99) per offered load:", ""]
    lines += ["| target | @100 | @300 | @1000 | saturation (c=50) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        cells = []
        for rate in ("100", "300", "1000"):
            p = r["fixed"].get(rate)
            cells.append(f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}" if p else "—")
        sat = r.get("saturation", {})
        cells.append(f"{sat.get('p50_ms', float('nan')):.2f} / {sat.get('p99_ms', float('nan')):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    stage_rows = []
    for name, r in results.items():
        phases = [(f"{k} req/s", v) for k, v in r["fixed"].items()] + [("saturation", r.get("saturation", {}))]
        for phase, data in phases:
            for metric, v in data.get("stages", {}).items():
                stage_rows.append(
                    f"| {name} | {phase} | {metric} | {v['count']:,} | {v['mean_ms']:.3f} | "
                    f"{v['p50_ms~']:.3f} | {v['p99_ms~']:.3f} |"
                )
    if stage_rows:
        lines += ["", "Per-stage timings from the gateway's /metrics, per phase (p50/p99 interpolated in buckets):", ""]
        lines += ["| target | phase | stage | count | mean ms | p50 ms | p99 ms |", "|---|---|---|---:|---:|---:|---:|"]
        lines += stage_rows
    spans = report.get("spans")
    if spans:
        lines += ["", "Per-stage spans at 100 req/s (gateway-traces run, decoded by the OTLP sink):", ""]
        lines += ["| span | count | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
        for name, v in spans.items():
            lines.append(f"| {name} | {v['count']:,} | {v['p50_ms']:.3f} | {v['p90_ms']:.3f} | {v['p99_ms']:.3f} |")
    if report.get("verdict"):
        lines += ["", "| gateway | issue target | measured | met |", "|---|---|---|:-:|"]
        for v in report["verdict"]:
            lines.append(f"| {v['gateway']} | {v['target']} | {v['value']} | {'yes' if v['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax = axes[0]
    x = range(len(names))
    for i, q in enumerate(("p50", "p99")):
        vals = [max(results[n].get("added", {}).get("100", {}).get(q, 0.0), 0.01) for n in names]
        ax.bar([xi + (i - 0.5) * 0.38 for xi in x], vals, width=0.38, label=f"added {q}")
    ax.set_yscale("log")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("ms over direct (log)")
    ax.set_title("Added latency at 100 req/s")
    ax.legend()
    ax = axes[1]
    ax.bar(list(x), [sustainable(results[n]) for n in names], color="tab:green")
    ax.set_yscale("log")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("req/s (log)")
    ax.set_title("Max sustainable req/s (<0.1% errors, 1 worker)")
    ax = axes[2]
    for n in names:
        rates = [int(k) for k in results[n]["fixed"]]
        ax.plot(rates, [results[n]["fixed"][str(k)]["p99_ms"] for k in rates], marker="o", label=n)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered req/s")
    ax.set_ylabel("p99 ms (log)")
    ax.set_title("p99 latency vs offered load")
    ax.legend(fontsize=7)
    env = report["environment"]
    fig.suptitle(f"Sovereign Gateway overhead — {env['date']}, {env['cpus']} CPUs, load {env['load_before']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def environment(gen: str) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()}, {cpu}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_generator": gen,
    }


@contextlib.contextmanager
def upstream_running(workdir: Path) -> Iterator[Server]:
    up = start_upstream(workdir)
    try:
        yield up
    finally:
        up.stop()


def bench(args: argparse.Namespace) -> None:
    phase_s, sat_s, streams = (5.0, 5.0, 100) if args.quick else (12.0, 15.0, 240)
    # --quick: the five main targets and the two lower rates (~3 min); the full run adds the
    # telemetry variants and 1000 req/s (which overloads the gateways and LiteLLM, whose
    # backlogs then take a while to drain)
    quick_targets = [n for n in ALL_TARGETS if "telemetry" not in n and "traces" not in n and "pg-process" not in n]
    default = quick_targets if args.quick else ALL_TARGETS
    names = [n.strip() for n in args.only.split(",")] if args.only else list(default)
    rates = RATES[:2] if args.quick else RATES
    gen = (
        "built-in open-loop aiohttp (fixed rates) + "
        + (
            "hey " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True).stdout
            if shutil.which("hey")
            else "built-in closed loop"
        )
        + " (saturation, c=50)"
    )
    env = environment(gen)
    env["load_before"] = (
        round(wait_for_load(args.wait_load, args.wait_max), 2) if args.wait_load else round(loadavg(), 2)
    )
    results: dict[str, Any] = {}
    spans: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sgw-bench-") as tmp, upstream_running(Path(tmp)) as up:
        workdir = Path(tmp)
        sink = TraceSink() if "gateway-traces" in names else None
        for name in names:
            print(f"== {name}", flush=True)
            if name == "direct":
                server = Server("direct", up.proc, up.url, up.log)
            elif name == "floor":
                server = start_floor(workdir, up.url)
            elif name == "litellm":
                server = start_litellm(workdir, up.url)
            else:
                server = start_gateway(workdir, up.url, variant=name, sink=sink)
            try:
                traced = sink if name == "gateway-traces" else None
                results[name] = run_target(
                    name, server, phase_s=phase_s, sat_s=sat_s, streams=streams, rates=rates, sink=traced
                )
                if traced is not None:
                    spans = results[name]["fixed"].get("100", {}).get("spans", {})
            finally:
                if name != "direct":
                    server.stop()
    env["load_after"] = round(loadavg(), 2)
    added(results)
    report = {"mode": "quick" if args.quick else "full", "environment": env, "results": results, "spans": spans}
    report["verdict"] = targets_verdict(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.output
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    (RESULTS / f"{stem}.md").write_text(md)
    chart(report, RESULTS / f"{stem}.png")
    print(md)
    print(f"results: {RESULTS / stem}.json .md .png")


def soak(args: argparse.Namespace) -> None:
    minutes = args.soak
    env = environment("hey" if shutil.which("hey") else "built-in aiohttp")
    env["load_before"] = round(loadavg(), 2)
    with tempfile.TemporaryDirectory(prefix="sgw-soak-") as tmp, upstream_running(Path(tmp)) as up:
        workdir = Path(tmp)
        server = start_gateway(workdir, up.url, variant="gateway", sink=None)
        try:
            watch = ProcWatch(server.proc.pid, interval_s=args.sample_s)
            chat = server.url + "/v1/chat/completions"
            load(chat, duration_s=min(30, minutes * 60 / 10), rate=args.soak_rate)  # warm-up (not counted)
            rss0 = watch.rss()
            t0 = time.monotonic()
            watch.samples.clear()
            print(f"soak: {minutes} min at {args.soak_rate} req/s, RSS after warm-up {rss0 / 2**20:.1f} MB", flush=True)
            r = load(chat, duration_s=minutes * 60, rate=args.soak_rate)
            rss1 = watch.rss()
            watch.stop()
        finally:
            server.stop()
    samples = [(round(t - t0, 1), round(rss / 2**20, 2)) for t, rss in watch.samples]
    mid = len(samples) // 2
    second_half_growth = (samples[-1][1] - samples[mid][1]) / samples[mid][1] * 100 if len(samples) > 2 else 0.0
    report = {
        "environment": {**env, "load_after": round(loadavg(), 2)},
        "minutes": minutes,
        "rate": args.soak_rate,
        "load": r,
        "rss_start_mb": round(rss0 / 2**20, 2),
        "rss_end_mb": round(rss1 / 2**20, 2),
        "rss_max_mb": max(s[1] for s in samples) if samples else None,
        "growth_pct": round((rss1 - rss0) / rss0 * 100, 2),
        "second_half_growth_pct": round(second_half_growth, 2),
        "samples": samples,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2))
    md = (
        f"Soak {env['date']}: {minutes} min at {args.soak_rate} req/s offered, {r['ok']:,} ok, {r['errors']} errors, "
        f"p50 {r['p50_ms']:.2f} / p99 {r['p99_ms']:.2f} ms; RSS {report['rss_start_mb']} MB after warm-up -> "
        f"{report['rss_end_mb']} MB at the end (max {report['rss_max_mb']} MB): growth {report['growth_pct']:+.2f} % "
        f"(second half {report['second_half_growth_pct']:+.2f} %), target <= 5 %: "
        f"{'met' if report['growth_pct'] <= 5 else 'not met'}. Load average {env['load_before']} -> "
        f"{report['environment']['load_after']}.\n"
    )
    (RESULTS / "soak.md").write_text(md)
    print(md)


def profile(args: argparse.Namespace) -> None:
    """py-spy (``--profile gateway``) on a gateway under saturation for ``--profile-s`` seconds;
    writes a flame graph SVG and the top functions (raw) under results/."""
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="sgw-prof-") as tmp, upstream_running(Path(tmp)) as up:
        workdir = Path(tmp)
        server = start_gateway(workdir, up.url, variant=args.profile, sink=None)
        try:
            chat = server.url + "/v1/chat/completions"
            load(chat, duration_s=3, rate=None, workers=8)
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / f"profile-{args.profile}"
            spy = subprocess.Popen(
                [pyspy, "record", "-p", str(server.proc.pid), "-d", str(args.profile_s), "-r", "200", "-f", "raw",
                 "-o", f"{out}.txt", "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            r = load(chat, duration_s=args.profile_s, rate=args.profile_rate or None)
            spy.wait(timeout=60)
            print(f"under profiler: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms")
        finally:
            server.stop()
    print(top_functions(Path(f"{out}.txt")))


def top_functions(raw: Path, n: int = 40) -> str:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    lines = [f"{total} samples", "", "inclusive:"]
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"{c / total:6.1%}  {f}")
    lines += ["", "self:"]
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"{c / total:6.1%}  {f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="short phases (~3 min in all)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    parser.add_argument("--output", default="bench", help="results file stem under benchmarks/results/")
    parser.add_argument("--wait-load", type=float, default=0.0, help="wait for the 1-min load average below this")
    parser.add_argument("--wait-max", type=float, default=600.0)
    parser.add_argument("--soak", type=float, nargs="?", const=30.0, help="soak MINUTES (default 30)")
    parser.add_argument("--soak-rate", type=float, default=200.0)
    parser.add_argument("--sample-s", type=float, default=5.0, help="soak RSS sampling interval (s)")
    parser.add_argument("--profile", help="py-spy a target under load: gateway or gateway-pg")
    parser.add_argument("--profile-s", type=int, default=20)
    parser.add_argument("--profile-rate", type=float, default=0.0, help="offered req/s while profiling (0: saturation)")
    args = parser.parse_args()
    if args.soak:
        soak(args)
    elif args.profile:
        profile(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
