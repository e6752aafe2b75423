"""Application factory: ``create_app()`` builds the FastAPI app; its lifespan wires the stages.

Nothing is created at import time: the config is loaded, the policy compiled, the audit store
connected and the adapters created when the app starts, and released when it stops.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from adapters import create_adapter
from gateway.api import admin as admin_routes
from gateway.api import audit as audit_routes
from gateway.api import openai as openai_routes
from gateway.api import openapi as openapi_doc
from gateway.api import policies as policy_routes
from gateway.api.errors import install_error_handlers
from gateway.audit.capture import PromptSealer
from gateway.audit.digest import Digester
from gateway.audit.ledger import Signer
from gateway.audit.store import AuditStore
from gateway.auth import KeyRing
from gateway.breaker import CircuitBreaker, SharedCircuitBreaker
from gateway.classify import Classifier
from gateway.config import GatewayConfig, Settings, load_config, with_env_overrides
from gateway.context import RequestContext
from gateway.errors import ConfigError, GatewayError, NotFound
from gateway.execute import Executor
from gateway.health import HealthMonitor
from gateway.keystore import KEYS_TOPIC, KeyAdmin, KeyStore
from gateway.limits import build_limiter
from gateway.notify import ChangeWatcher, namespaced
from gateway.policy import PolicyBundle, PolicyEngine, load_bundle
from gateway.policy.cache import CachedEngine
from gateway.policy.embedded import EmbeddedEngine, PolicyLoadError, check_bundle
from gateway.policy.manager import TOPIC as POLICY_TOPIC
from gateway.policy.manager import PolicyManager
from gateway.policy.opa import OpaEngine
from gateway.policy.store import PolicyStore
from gateway.policy.testing import PolicyCase, load_tests
from gateway.service import Gateway
from gateway.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry, configure_logging
from gateway.tokens import TokenCounter, build_token_counter

__all__ = ["StaticParts", "build_gateway", "create_app", "load_static_parts"]

log = logging.getLogger("gateway")


@dataclass
class StaticParts:
    """What a config refers to on disk, loaded and checked without starting anything:
    the policy bundle (compiled, builtins checked), the audit keys (created if missing, as the
    gateway does at start), the adapters and the tokenizers."""

    policy_dir: Path
    bundle: PolicyBundle
    signer: Signer
    digester: Digester
    sealer: PromptSealer | None
    adapters: dict[str, Any]
    token_counters: dict[str, TokenCounter]
    policy_tests: list[PolicyCase]


def load_static_parts(config: GatewayConfig) -> StaticParts:
    """Load and check every file ``config`` names. Raises ConfigError naming the field.
    No database, network or telemetry is touched (``gateway config check`` runs only this)."""
    policy_dir = Path(config.policy.path)
    if not policy_dir.is_absolute() and config.source not in ("<memory>", ""):
        policy_dir = Path(config.source).resolve().parent / policy_dir
    try:
        bundle = load_bundle(policy_dir)
        check_bundle(bundle)
        policy_tests = load_tests(policy_dir)
    except (OSError, ValueError, PolicyLoadError) as exc:
        raise ConfigError(config.source, "policy.path", str(exc)) from exc
    try:
        signer = Signer.from_file(Path(config.audit.signing_key_file))
    except (OSError, ValueError) as exc:
        raise ConfigError(config.source, "audit.signing_key_file", str(exc)) from exc
    try:
        digester = Digester.from_file(Path(config.audit.digest_secret_file))
    except (OSError, ValueError) as exc:
        raise ConfigError(config.source, "audit.digest_secret_file", str(exc)) from exc
    sealer = None
    if config.audit.capture_public_key_file:
        try:
            sealer = PromptSealer.from_file(Path(config.audit.capture_public_key_file))
        except (OSError, ValueError) as exc:
            raise ConfigError(config.source, "audit.capture_public_key_file", str(exc)) from exc
    kinds = sorted({d.adapter for d in config.deployments})
    adapters = {kind: create_adapter(kind) for kind in kinds}
    token_counters: dict[str, TokenCounter] = {}  # local token counts when usage is missing
    config_dir = Path(config.source).resolve().parent if config.source not in ("<memory>", "") else None
    for i, dep in enumerate(config.deployments):
        if dep.tokenizer:
            try:
                token_counters[dep.id] = build_token_counter(dep.tokenizer, base=config_dir)
            except (OSError, ValueError) as exc:
                raise ConfigError(config.source, f"deployments.{i}.tokenizer", str(exc)) from exc
    return StaticParts(policy_dir, bundle, signer, digester, sealer, adapters, token_counters, policy_tests)


async def build_gateway(config: GatewayConfig, *, audit_url: str | None = None) -> Gateway:
    """Wire every stage from ``config``. Raises ConfigError if a file it names cannot load."""
    parts = load_static_parts(config)
    policy_dir, bundle, signer, digester, sealer = (
        parts.policy_dir, parts.bundle, parts.signer, parts.digester, parts.sealer,
    )  # fmt: skip
    adapters, token_counters = parts.adapters, parts.token_counters
    engine: PolicyEngine
    if config.policy.engine == "opa":  # url validated by PolicyConfig
        engine = OpaEngine(
            bundle, url=config.policy.url or "", timeout_ms=config.policy.timeout_ms, push=config.policy.opa_push
        )
    else:
        engine = EmbeddedEngine(bundle, timeout_ms=config.policy.timeout_ms)
    if config.policy.cache_size:
        engine = CachedEngine(engine, size=config.policy.cache_size)
    breaker_cfg, health_cfg = config.server.breaker, config.server.health
    breaker: CircuitBreaker
    if config.limits_store.kind == "redis" and config.limits_store.url:  # shared with the limits store's Redis
        breaker = SharedCircuitBreaker(
            config.limits_store.url,
            deployments=[d.id for d in config.deployments],
            prefix=config.limits_store.key_prefix,
            failures=breaker_cfg.failures,
            cooldown_s=breaker_cfg.cooldown_s,
            sync_interval_s=breaker_cfg.sync_interval_s,
            timeout_s=config.limits_store.timeout_s,
        )
    else:
        breaker = CircuitBreaker(failures=breaker_cfg.failures, cooldown_s=breaker_cfg.cooldown_s)
    health = HealthMonitor(
        config.deployments,
        adapters,
        interval_s=health_cfg.interval_s,
        timeout_s=health_cfg.timeout_s,
        failures=health_cfg.failures,
        enabled=health_cfg.enabled,
    )
    # run-time API keys: in memory, reloaded when the keys topic says so (gateway/notify.py)
    key_store = KeyStore.from_url(audit_url or config.audit.url)
    keyring = KeyRing(config.keys, config.tenants, key_store)
    try:
        await keyring.refresh()
    except GatewayError as exc:  # the static keys still work; the watcher keeps trying
        log.warning("API keys in the database not loaded yet: %s", exc.message)
    notify_url = config.limits_store.url if config.limits_store.kind == "redis" else None
    key_watcher = ChangeWatcher(namespaced(config, KEYS_TOPIC), keyring.refresh, redis_url=notify_url)
    audit = AuditStore.from_url(
        audit_url or config.audit.url,
        signer,
        checkpoint_every=config.audit.checkpoint_every,
        checkpoint_interval_s=config.audit.checkpoint_interval_s,
        durability=config.audit.durability,
        witness=config.audit.witness_file,
    )
    policies = PolicyManager(
        engine,
        PolicyStore(audit.engine),
        file_bundle=bundle,
        source=str(policy_dir),
        redis_url=notify_url,
        default_tests=parts.policy_tests,
        topic=namespaced(config, POLICY_TOPIC),
    )
    policy_watcher = ChangeWatcher(
        namespaced(config, POLICY_TOPIC),
        policies.refresh,
        redis_url=notify_url,
        poll_interval_s=config.policy.poll_interval_s,
    )
    gateway = Gateway(
        config=config,
        keyring=keyring,
        classifier=Classifier.from_config(config.classification),
        engine=engine,
        executor=Executor(
            adapters,
            breaker,
            deadline_s=config.server.deadline_s,
        ),
        limiter=build_limiter(config, keyring.key_limits),
        digester=digester,
        sealer=sealer,
        audit=audit,
        health=health,
        key_admin=KeyAdmin(config, key_store, redis_url=notify_url, on_change=keyring.refresh),
        watchers=[key_watcher, policy_watcher],
        policies=policies,
        token_counters=token_counters,
        telemetry=Telemetry(
            config.telemetry,
            breaker_open=lambda: {d.id: not breaker.healthy(d.id) for d in config.deployments},
            deployments={d.id: (d.adapter, d.model) for d in config.deployments},
            models=config.aliases,
        ),
    )
    await _bootstrap_policy(gateway, policies)
    breaker.start()  # background tasks start once every stage is built
    health.start()
    await key_watcher.start()
    await policy_watcher.start()
    return gateway


async def _bootstrap_policy(gateway: Gateway, policies: PolicyManager) -> None:
    """Store ``policy.path``'s bundle and follow the database's active revision; an
    activation at start is recorded like any other (request id ``sys_…``). With the database
    unreachable the file bundle serves and the policy watcher retries."""
    try:
        activation = await policies.bootstrap()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("policy store unavailable at start (%s); serving %s", type(exc).__name__, policies.engine.revision)
        return
    if activation is not None:
        ctx = RequestContext(endpoint="policy.bootstrap", request_id=f"sys_{uuid.uuid4().hex}")
        ctx.admin = {"action": "policy.bootstrap", **activation}
        ctx.status, ctx.http_status = "ok", 200
        try:
            await gateway.audit.record_outcome(ctx)
        except GatewayError as exc:
            log.warning("policy activation at start not recorded: %s", exc.message)


async def close_gateway(gateway: Gateway) -> None:
    """Release the stages' threads, pools and connections (background tasks first)."""
    for watcher in gateway.watchers:
        await watcher.aclose()
    await gateway.health.aclose()
    await gateway.executor.breaker.aclose()
    await gateway.engine.aclose()
    await gateway.executor.aclose()
    await gateway.limiter.aclose()
    await gateway.audit.aclose()
    if gateway.key_admin is not None:
        await gateway.key_admin.aclose()
    gateway.telemetry.shutdown()


def create_app(
    config: GatewayConfig | None = None, settings: Settings | None = None, *, freeze_gc: bool = False
) -> FastAPI:
    """The gateway ASGI app. Without ``config``, loads ``settings.config`` (gateway.yaml).

    ``freeze_gc`` (``gateway serve``: one app per process): once wired, the objects built at
    start (config, compiled policy, metadata, instruments) move to the collector's permanent
    generation (``gc.freeze``) and the youngest generation is collected every 20,000
    allocations instead of 700 (``gc.set_threshold``): a request allocates thousands of
    short-lived containers that reference counting frees anyway, and the collector's rescans
    of them cost ~30 % of the CPU per request at saturation (benchmarks/README.md). Objects in
    reference cycles wait a little longer. Not for processes that build many apps (tests)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = with_env_overrides(config or load_config(settings.config), settings)
        configure_logging(cfg.telemetry.logs)
        gateway = await build_gateway(cfg, audit_url=settings.audit_url)
        app.state.gateway = gateway
        if freeze_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            await close_gateway(gateway)

    app = FastAPI(
        title="Sovereign Gateway",
        summary="Policy-aware, OpenAI-compatible LLM gateway",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(openai_routes.ModelRoutes)  # the model endpoints' hot path

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """Liveness and readiness: policy revision and audit store reachability."""
        gateway: Gateway = request.app.state.gateway
        body: dict[str, Any] = {"status": "ok", "policy_revision": gateway.engine.revision, "audit": "ok"}
        if isinstance(gateway.engine, CachedEngine):
            body["policy_cache"] = gateway.engine.stats.as_dict()
        try:
            await gateway.audit.check()
        except GatewayError as exc:
            body.update(status="degraded", audit=exc.message)
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition of the gateway's metrics (``telemetry.prometheus``)."""
        gateway: Gateway = request.app.state.gateway
        if not gateway.config.telemetry.prometheus:
            raise NotFound("metrics are off (telemetry.prometheus: false)")
        return Response(gateway.telemetry.prometheus_text(), media_type=PROMETHEUS_CONTENT_TYPE)

    app.include_router(openai_routes.router)  # first: the model endpoints are the hot path
    app.include_router(admin_routes.router)
    app.include_router(policy_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(openai_routes.fallback_router)  # last: it matches every path
    openapi_doc.document(app)  # request bodies and error shapes of the raw-body routes
    return app
