"""Configuration: process settings (environment) and the ``gateway.yaml`` document.

:class:`Settings` comes from the environment (prefix ``GATEWAY_``) and points at the YAML file;
:class:`GatewayConfig` is that file: deployments, model aliases, tenants and API keys (hashes
only). :func:`load_config` validates it strictly (unknown keys are errors) and raises
:class:`~gateway.errors.ConfigError` naming the file, the path inside it and the reason.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters import ADAPTER_KINDS
from gateway.context import DataLevel
from gateway.errors import ConfigError

__all__ = [
    "AliasConfig",
    "AuditConfig",
    "ClassificationConfig",
    "DeploymentConfig",
    "GatewayConfig",
    "HealthCheckConfig",
    "KeyConfig",
    "Limits",
    "LimitsStoreConfig",
    "PolicyConfig",
    "Price",
    "ResidencyRule",
    "SavingsConfig",
    "Settings",
    "TenantConfig",
    "load_config",
    "with_env_overrides",
]


class Settings(BaseSettings):
    """Process settings from the environment.

    GATEWAY_CONFIG: path to gateway.yaml. GATEWAY_AUDIT_URL: SQLAlchemy async URL that overrides
    ``audit.url``. GATEWAY_REDIS_URL: overrides ``limits_store.url`` (kind ``redis``), so a
    password can come from a secret rather than the file (:func:`with_env_overrides`).
    GATEWAY_HOST / GATEWAY_PORT: listen address (default 127.0.0.1:8080).
    """

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    config: Path = Path("gateway.yaml")
    audit_url: str | None = None
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """Prices in USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class DeploymentConfig(_Strict):
    """One model deployment the gateway may route to (a model on a backend in a place).

    ``timeout_s``: per-try timeout (for streams, the idle timeout between chunks), seconds;
    ``retries``: extra tries on this deployment after a retryable failure (backoff with jitter)
    before falling over to the next eligible one. ``tokenizer``: the model's own tokenizer for
    counting tokens when the upstream reports no usage (llama.cpp streams): ``smollm2`` or a
    ``.gguf`` path (gateway/tokens.py); unset: the 4-characters-per-token estimate.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    adapter: str
    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    locality: Literal["local", "external"]
    jurisdiction: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    region: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    retains_data: bool = False
    trains_on_data: bool = False
    capabilities: tuple[str, ...] = ()
    context_window: int = Field(gt=0, lt=2**31)  # tokens; counts beyond I-JSON ints could not be recorded
    price: Price
    quality: float = Field(default=0.5, ge=0, le=1)
    weight: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=0, ge=0, le=10)
    tokenizer: str | None = Field(default=None, pattern=r"^(smollm2|.+\.gguf)$")

    def credentials_present(self) -> bool:
        """False when ``api_key_env`` names an environment variable that is not set."""
        return not self.api_key_env or bool(os.environ.get(self.api_key_env))

    def api_key(self) -> str | None:
        """The provider API key read from ``api_key_env`` at call time (None if unset)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def policy_view(self, *, healthy: bool = True) -> dict[str, Any]:
        """The deployment as it appears in ``input.deployments`` of the policy contract."""
        return {
            "id": self.id,
            "adapter": self.adapter,
            "locality": self.locality,
            "jurisdiction": self.jurisdiction,
            "region": self.region,
            "retains_data": self.retains_data,
            "trains_on_data": self.trains_on_data,
            "capabilities": list(self.capabilities),
            "context_window": self.context_window,
            "price": self.price.model_dump(),
            "quality": self.quality,
            "healthy": healthy,
        }


class AliasConfig(_Strict):
    """A model name clients use ("auto", "chat") that maps to several deployments."""

    deployments: tuple[str, ...] = Field(min_length=1)
    strategy: Literal["cost", "weighted", "ordered"] = "cost"


class ResidencyRule(_Strict):
    """Where data of one level may go: anywhere, or only to listed localities/jurisdictions."""

    any: bool = False
    locality: tuple[Literal["local", "external"], ...] | None = None
    jurisdictions: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ResidencyRule:
        if not self.any and not self.locality and not self.jurisdictions:
            raise ValueError("a residency rule needs any: true, a locality list or a jurisdictions list")
        return self


class Limits(_Strict):
    """Rate limits and budgets of one tenant or key; an unset field is no limit.

    ``rpm``: requests per minute. ``tpm``: tokens (prompt + completion) per minute.
    ``usd_per_day`` / ``usd_per_month``: spend in USD per UTC calendar day / month, priced from
    the deployments' ``price``. Minutes are fixed windows aligned to the epoch minute.
    """

    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    usd_per_day: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    usd_per_month: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class LimitsStoreConfig(_Strict):
    """Where limit counters live: ``memory`` (this process only; the embedded default) or
    ``redis`` (``url``; shared by every replica). ``on_error`` says what a request gets when
    Redis cannot be reached: ``closed`` (503 limits_unavailable, nothing sent) or ``open``
    (admitted unlimited; the audit record says the limits were skipped). ``key_prefix``
    namespaces the Redis keys; ``timeout_s`` bounds each Redis call (seconds)."""

    kind: Literal["memory", "redis"] = "memory"
    url: str | None = None
    on_error: Literal["closed", "open"] = "closed"
    key_prefix: str = Field(default="sgw:limits:", min_length=1, max_length=64)
    timeout_s: float = Field(default=0.5, gt=0, le=30)

    @model_validator(mode="after")
    def _url(self) -> LimitsStoreConfig:
        if self.kind == "redis":
            if not self.url or not self.url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("kind redis needs url: redis://host:port/db (or rediss://, unix://)")
        elif self.url is not None:
            raise ValueError("url is only for kind: redis")
        return self


class TenantConfig(_Strict):
    """A tenant: home region, default (floor) data level and per-level residency rules.

    ``capture_prompts``: ask the policy to oblige encrypted prompt capture for this tenant
    (needs ``audit.capture_public_key_file``). ``redact_external``: labels or label prefixes
    the policy obliges the gateway to redact before data reaches an external deployment;
    ``restore_redacted``: put the original values back into the answer for the client.
    ``limits``: the tenant's rate limits and budgets, shared by all its keys (see :class:`Limits`).
    ``cost_ceiling_usd``: per data level, the most one request may cost at worst (USD, priced
    from the deployment registry; policies/cost.rego). ``models``: the deployment ids this
    tenant may use at all (policies/tenant_models.rego); None means every deployment.
    """

    home_region: str
    default_level: str = "internal"
    allowed: dict[str, ResidencyRule]
    capture_prompts: bool = False
    redact_external: tuple[str, ...] = ()
    restore_redacted: bool = True
    limits: Limits = Limits()
    cost_ceiling_usd: dict[str, float] = Field(default_factory=dict)
    models: tuple[str, ...] | None = None

    @field_validator("cost_ceiling_usd")
    @classmethod
    def _ceilings(cls, value: dict[str, float]) -> dict[str, float]:
        for key, usd in value.items():
            DataLevel.parse(key)
            if usd < 0:
                raise ValueError(f"cost ceiling for {key} must be >= 0 USD")
        return value

    @field_validator("default_level")
    @classmethod
    def _level(cls, value: str) -> str:
        return DataLevel.parse(value).label

    @field_validator("allowed")
    @classmethod
    def _levels(cls, value: dict[str, ResidencyRule]) -> dict[str, ResidencyRule]:
        for key in value:
            DataLevel.parse(key)
        return value

    @property
    def floor(self) -> DataLevel:
        """The tenant's default data level; requests are never classified below it."""
        return DataLevel.parse(self.default_level)

    def policy_view(self) -> dict[str, Any]:
        """The ``input.tenant`` object of the policy contract."""
        return {
            "floor": self.default_level,
            "allowed": {k: v.model_dump(exclude_none=True) for k, v in self.allowed.items()},
            "capture_prompts": self.capture_prompts,
            "redact_external": list(self.redact_external),
            "cost_ceiling_usd": dict(self.cost_ceiling_usd),
            "models": list(self.models) if self.models is not None else None,
        }


class KeyConfig(_Strict):
    """An API key, stored as ``sha256:<hex>`` of the key; the key itself is never stored.

    ``all_tenants``: for auditor keys, read every tenant's records (default: own tenant only).
    ``limits``: this key's own rate limits and budgets, checked together with its tenant's
    (the most restrictive wins; admin keys are not exempt). ``allowed_models``: the model
    names (aliases or deployment ids) this key may request; None means all.
    """

    id: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    tenant: str
    roles: tuple[Literal["app", "admin", "auditor"], ...] = ("app",)
    all_tenants: bool = False
    limits: Limits = Limits()
    allowed_models: tuple[str, ...] | None = None


class TelemetryConfig(_Strict):
    """OpenTelemetry and logs (gateway/telemetry.py).

    ``traces`` / ``metrics``: where spans and metrics are pushed — ``off``, ``console``,
    ``otlp_http`` or ``otlp_grpc`` (to ``endpoint``, e.g. ``http://collector:4318`` for HTTP,
    ``http://collector:4317`` for gRPC; unset: the OTLP exporters' defaults and their
    ``OTEL_EXPORTER_OTLP_*`` variables). ``prometheus``: serve the metrics on ``GET /metrics``.
    ``export_interval_s``: metric push interval. ``logs``: ``json`` lines (with request and
    trace ids) or ``text``.
    """

    traces: Literal["off", "console", "otlp_http", "otlp_grpc"] = "off"
    metrics: Literal["off", "console", "otlp_http", "otlp_grpc"] = "off"
    endpoint: str | None = None
    prometheus: bool = True
    service_name: str = "sovereign-gateway"
    export_interval_s: float = Field(default=10.0, gt=0)
    logs: Literal["json", "text"] = "json"


class PolicyConfig(_Strict):
    """Policy engine selection. ``path``: a directory of .rego files (relative to the config).

    ``engine``: ``embedded`` (regopy, in-process) or ``opa`` (an OPA server at ``url``, e.g.
    ``http://127.0.0.1:8181``, required then). ``timeout_ms``: deadline of one decision.
    ``cache_size``: entries of the decision cache (0 turns it off; gateway/policy/cache.py).
    ``poll_interval_s``: how often each worker checks the database for a newly activated
    policy version when no Redis carries change notifications (gateway/policy/manager.py).
    ``opa_push``: the gateway pushes the active version to OPA (Policy and Data APIs); turn it
    off when OPA loads bundles itself (gateway/policy/opa.py).
    """

    engine: Literal["embedded", "opa"] = "embedded"
    path: str = "policies"
    url: str | None = None
    timeout_ms: float = Field(default=1000.0, gt=0)
    cache_size: int = Field(default=10_000, ge=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    opa_push: bool = True

    @model_validator(mode="after")
    def _opa_url(self) -> PolicyConfig:
        if self.engine == "opa":
            from gateway.policy.opa import opa_address

            if not self.url:
                raise _PathError("policy.url", "required when policy.engine is opa")
            try:
                opa_address(self.url)
            except ValueError as exc:
                raise _PathError("policy.url", str(exc)) from None
        return self


_LABEL = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


class ClassificationConfig(_Strict):
    """Data classification: ``label_levels`` maps a label or label prefix (``secret``,
    ``pii``, ``pii.email``) to the data level a match implies; the longest matching prefix
    wins. Entries are merged over the defaults ``{secret: restricted, pii: confidential}``.
    ``engine``: ``builtin`` (default; fast, validated formats) or ``presidio`` (Presidio's
    recognizers, offline; needs the ``presidio`` extra; finds no secrets and fewer IDs — see
    ``gateway/classify/presidio.py``)."""

    engine: Literal["builtin", "presidio"] = "builtin"
    label_levels: dict[str, str] = {}

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value == "presidio" and importlib.util.find_spec("presidio_analyzer") is None:
            raise ValueError("engine 'presidio' needs presidio-analyzer: pip install 'sovereign-gateway[presidio]'")
        return value

    @field_validator("label_levels")
    @classmethod
    def _label_levels(cls, value: dict[str, str]) -> dict[str, str]:
        for label, level in value.items():
            if not _LABEL.fullmatch(label):
                raise ValueError(f"{label!r} is not a dotted label prefix such as 'pii' or 'pii.email'")
            DataLevel.parse(level)
        return {label: DataLevel.parse(level).label for label, level in value.items()}

    def levels(self) -> dict[str, DataLevel]:
        """The effective label prefix → level map (defaults, then the configured entries)."""
        merged = {"secret": DataLevel.RESTRICTED, "pii": DataLevel.CONFIDENTIAL}
        merged.update({label: DataLevel.parse(level) for label, level in self.label_levels.items()})
        return merged


class AuditConfig(_Strict):
    """Audit store: an SQLAlchemy async URL (relative sqlite paths are relative to cwd), the
    Ed25519 checkpoint signing key (PEM; created with mode 0600 if missing — mount a real
    secret in production), the secret keying prompt/response HMAC digests (same), the
    auditors' X25519 public key (PEM) for prompt capture obligations, and how often the chain
    head is signed (entries, seconds).

    ``durability`` says what a committed record survives before the request goes on:
    ``fsync`` (default) — power loss: each group commit is flushed to stable storage (SQLite
    ``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``), one fsync (~1-4 ms on a VM
    disk) on every request's path; ``process`` — a crash of the gateway, not of the database
    host's OS (SQLite WAL ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``), for
    a commit in tens of microseconds (benchmarks/README.md).

    ``witness_file``: where each signed checkpoint is also appended (JSON lines, fsync'd)
    outside the database, so that deleting a chain's tail together with its checkpoints is
    detected by ``gateway audit verify`` (gateway/audit/ledger.py). ``auto`` (default): beside
    an SQLite database file (``<file>-witness.jsonl``), none for PostgreSQL; null: none; a
    path: there (relative to cwd) — best on another disk or host than the database, or an
    append-only file, since whoever can rewrite both can rewrite history."""

    url: str = "sqlite+aiosqlite:///.gateway/audit.db"
    durability: Literal["fsync", "process"] = "fsync"
    signing_key_file: str = ".gateway/audit-signing-key.pem"
    digest_secret_file: str = ".gateway/audit-digest.key"
    capture_public_key_file: str | None = None
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_s: float = Field(default=10.0, gt=0)
    witness_file: str | None = "auto"


class BreakerConfig(_Strict):
    """Circuit breaker per deployment: consecutive retryable failures that open it, and the
    seconds it stays open (the policy then sees the deployment as not healthy).

    When ``limits_store.kind`` is ``redis``, the breaker state is shared through that same
    Redis (``limits_store.url``, keys under ``limits_store.key_prefix`` + ``breaker:``): a
    breaker opened by one gateway replica is open in all. Each replica reads the shared state
    every ``sync_interval_s`` seconds in the background (the per-request check stays local);
    if Redis is down, each replica keeps its own breaker (see ``gateway/breaker.py``)."""

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    sync_interval_s: float = Field(default=1.0, gt=0, le=60)


class HealthCheckConfig(_Strict):
    """Background health checks: every ``interval_s`` seconds each deployment gets a cheap
    probe through its adapter (``GET {api_base}/models``, no tokens spent) that must answer
    within ``timeout_s``; after ``failures`` consecutive failed probes the policy sees it as
    not healthy until a probe succeeds again. ``enabled: false`` turns the probes off."""

    enabled: bool = True
    interval_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=3.0, gt=0, le=60)
    failures: int = Field(default=2, ge=1)


class ServerConfig(_Strict):
    """Request handling: body size limit (bytes), the overall deadline of a request's upstream
    tries (seconds; each try's timeout is cut to what is left), the circuit breaker and the
    background health checks.

    ``unknown_params``: what happens to a top-level request field the endpoint does not know
    (gateway/wire): ``drop`` it (named in the ``x-gateway-dropped-params`` response header) or
    ``reject`` the request (400 naming it). Unknown fields are never forwarded unread.
    """

    max_body_bytes: int = Field(default=1_048_576, gt=0)
    unknown_params: Literal["drop", "reject"] = "drop"
    deadline_s: float = Field(default=300.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()
    health: HealthCheckConfig = HealthCheckConfig()


class SavingsConfig(_Strict):
    """The reference for the "open models saved X%" figure: what the same tokens would have
    cost on this external model (USD per million tokens, e.g. a provider's list price)."""

    reference_name: str = "reference external model"
    reference_price: Price | None = None


class GatewayConfig(_Strict):
    """The whole ``gateway.yaml`` document. ``source`` is the file it came from."""

    server: ServerConfig = ServerConfig()
    policy: PolicyConfig = PolicyConfig()
    audit: AuditConfig = AuditConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    classification: ClassificationConfig = ClassificationConfig()
    limits_store: LimitsStoreConfig = LimitsStoreConfig()
    savings: SavingsConfig = SavingsConfig()
    deployments: tuple[DeploymentConfig, ...] = Field(min_length=1)
    aliases: dict[str, AliasConfig] = {}
    tenants: dict[str, TenantConfig] = Field(min_length=1)
    keys: tuple[KeyConfig, ...] = ()
    source: str = Field(default="<memory>", exclude=True)

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        ids = [d.id for d in self.deployments]
        for i, dep_id in enumerate(ids):
            if dep_id in ids[:i]:
                raise _PathError(f"deployments.{i}.id", f"duplicate deployment id {dep_id!r}")
        for i, dep in enumerate(self.deployments):
            if dep.adapter not in ADAPTER_KINDS:
                known = sorted(ADAPTER_KINDS)
                raise _PathError(f"deployments.{i}.adapter", f"unknown adapter {dep.adapter!r}; known: {known}")
            if dep.adapter == "openai_compat" and not dep.api_base:
                raise _PathError(f"deployments.{i}.api_base", "required for adapter openai_compat")
        for name, alias in self.aliases.items():
            if name in ids:
                raise _PathError(f"aliases.{name}", "alias name collides with a deployment id")
            for j, dep_id in enumerate(alias.deployments):
                if dep_id not in ids:
                    raise _PathError(f"aliases.{name}.deployments.{j}", f"unknown deployment {dep_id!r}")
        key_ids: set[str] = set()
        for i, key in enumerate(self.keys):
            for j, model in enumerate(key.allowed_models or ()):
                if model not in self.aliases and model not in ids:
                    raise _PathError(f"keys.{i}.allowed_models.{j}", f"unknown model {model!r}")
            if key.tenant not in self.tenants:
                raise _PathError(f"keys.{i}.tenant", f"unknown tenant {key.tenant!r}")
            if key.id in key_ids:
                raise _PathError(f"keys.{i}.id", f"duplicate key id {key.id!r}")
            key_ids.add(key.id)
        return self

    def deployment(self, dep_id: str) -> DeploymentConfig:
        """The deployment with this id. Raises KeyError if unknown."""
        for dep in self.deployments:
            if dep.id == dep_id:
                return dep
        raise KeyError(dep_id)

    def candidates(self, model: str) -> tuple[tuple[DeploymentConfig, ...], str] | None:
        """Deployments behind a model name (alias or deployment id) and the strategy to use.

        Returns None when the name is neither an alias nor a deployment id.
        """
        alias = self.aliases.get(model)
        if alias is not None:
            return tuple(self.deployment(d) for d in alias.deployments), alias.strategy
        for dep in self.deployments:
            if dep.id == model:
                return (dep,), "ordered"
        return None


class _PathError(ValueError):
    """A semantic config error at a dotted path (turned into ConfigError by load_config)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def parse_config(document: Any, *, source: str = "<memory>") -> GatewayConfig:
    """Validate a parsed YAML/dict document. Raises ConfigError(source, path, reason)."""
    if not isinstance(document, dict):
        raise ConfigError(source, "<root>", "expected a mapping at the top level")
    try:
        config = GatewayConfig.model_validate({**document, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _PathError):
            raise ConfigError(source, ctx_error.path, ctx_error.reason) from None
        raise ConfigError(source, _dotted(tuple(err["loc"])), err["msg"]) from None
    return config


def with_env_overrides(config: GatewayConfig, settings: Settings) -> GatewayConfig:
    """``config`` with ``limits_store.url`` replaced by ``settings.redis_url``
    (GATEWAY_REDIS_URL) when set. Raises ConfigError when it is set but ``limits_store.kind``
    is not ``redis`` (the variable would silently do nothing) or is not a Redis URL."""
    if not settings.redis_url:
        return config
    if config.limits_store.kind != "redis":
        raise ConfigError(config.source, "limits_store.kind", "GATEWAY_REDIS_URL is set but the kind is not redis")
    try:
        store = LimitsStoreConfig.model_validate({**config.limits_store.model_dump(), "url": settings.redis_url})
    except ValidationError as exc:
        reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError("GATEWAY_REDIS_URL", "limits_store.url", reason) from None
    return config.model_copy(update={"limits_store": store})


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a gateway.yaml file.

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation; the message names
            the file, the dotted path inside it (``deployments.2.price.input_per_mtok``) and
            the reason.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "<file>", f"cannot read: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>"
        raise ConfigError(file, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(document, source=file)
