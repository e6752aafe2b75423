"""API keys managed at run time: the ``api_keys`` table and the admin operations on it.

Next to the static keys of gateway.yaml (``keys:``), admins create, list, rotate and revoke
keys through ``/v1/admin/keys`` (gateway/api/admin.py) or ``gateway keys …`` (gateway/cli.py);
both call :class:`KeyAdmin`. The table lives in the audit database (the registry shares it).

Only ``sha256:<hex>`` of a key is stored; the key is returned once, by create and rotate, and
can never be read back. Rotation gives the same key id a new secret (the old one stops
working at once, or after ``grace_s`` seconds); revocation is final. Every change bumps the
row's ``generation`` and is announced on the ``keys`` topic (gateway/notify.py), so each
replica's :class:`~gateway.auth.KeyRing` reloads within about a second; requests themselves
never read this table.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.models import api_keys
from gateway.audit.store import make_engine
from gateway.auth import generate_key, hash_key
from gateway.config import GatewayConfig, Limits
from gateway.context import Principal
from gateway.errors import AuditUnavailable, Conflict, GatewayError, InvalidRequest, NotFound, PermissionDenied
from gateway.notify import namespaced, publish

__all__ = [
    "KEYS_TOPIC",
    "KeyAdmin",
    "KeyCreate",
    "KeyRotate",
    "KeyStore",
    "StoredKey",
]

log = logging.getLogger("gateway.keystore")

KEYS_TOPIC = "keys"
"""The change-notification topic of the key registry (Redis channel ``sovereign-gateway:keys``)."""

KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
MAX_GRACE_S = 7 * 86400

Role = Literal["app", "admin", "auditor"]
_M = TypeVar("_M", bound=BaseModel)


class KeyCreate(BaseModel):
    """Body of ``POST /v1/admin/keys``. ``id``: optional (default ``k_<16 hex>``); ``roles``:
    app, admin, auditor; ``allowed_models``: aliases or deployment ids (None: all);
    ``limits``: see :class:`~gateway.config.Limits`; ``expires_at``: ISO 8601 time (UTC if
    no offset), in the future."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=KEY_ID_PATTERN)
    tenant: str = Field(min_length=1, max_length=128)
    roles: tuple[Role, ...] = Field(default=("app",), min_length=1, max_length=3)
    all_tenants: StrictBool = False
    allowed_models: tuple[str, ...] | None = Field(default=None, max_length=256)
    limits: Limits = Limits()
    expires_at: dt.datetime | None = None


class KeyRotate(BaseModel):
    """Body of ``POST /v1/admin/keys/{id}/rotate`` (optional): ``grace_s``, seconds the
    old key keeps working (0 to 7 days; default 0: it stops at once)."""

    model_config = ConfigDict(extra="forbid")

    grace_s: float = Field(default=0.0, ge=0, le=MAX_GRACE_S, allow_inf_nan=False)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Aware UTC (SQLite gives naive times back; naive input is UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class StoredKey:
    """One row of ``api_keys``: the key's settings and its hashes (never the key)."""

    id: str
    tenant: str
    key_hash: str
    roles: tuple[str, ...]
    all_tenants: bool
    allowed_models: tuple[str, ...] | None
    limits: Limits
    created_at: dt.datetime
    created_by: str
    previous_hash: str | None = None
    previous_valid_until: dt.datetime | None = None
    rotated_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    def status(self, now: dt.datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now`` (default: the current time)."""
        now = now or _now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def view(self) -> dict[str, Any]:
        """The public JSON form (no hash, no key): what list, create and rotate return."""
        return {
            "object": "api_key",
            "id": self.id,
            "tenant": self.tenant,
            "roles": list(self.roles),
            "all_tenants": self.all_tenants,
            "allowed_models": list(self.allowed_models) if self.allowed_models is not None else None,
            "limits": self.limits.model_dump(exclude_none=True),
            "source": "database",
            "status": self.status(),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "rotated_at": _iso(self.rotated_at),
            "previous_key_valid_until": _iso(self.previous_valid_until),
            "revoked_at": _iso(self.revoked_at),
            "expires_at": _iso(self.expires_at),
        }


def _row(row: Any) -> StoredKey:
    models = json.loads(row.allowed_models) if row.allowed_models is not None else None
    return StoredKey(
        id=row.id,
        tenant=row.tenant,
        key_hash=row.key_hash,
        roles=tuple(json.loads(row.roles)),
        all_tenants=bool(row.all_tenants),
        allowed_models=tuple(models) if models is not None else None,
        limits=Limits.model_validate(json.loads(row.limits)),
        created_at=_utc(row.created_at) or _now(),
        created_by=row.created_by,
        previous_hash=row.previous_hash,
        previous_valid_until=_utc(row.previous_valid_until),
        rotated_at=_utc(row.rotated_at),
        revoked_at=_utc(row.revoked_at),
        expires_at=_utc(row.expires_at),
    )


class KeyStore:
    """The ``api_keys`` table on an async engine (SQLite or PostgreSQL).

    Every method raises AuditUnavailable (503) when the database cannot be reached or the
    table is missing (run ``gateway migrate``).
    """

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self._engine = engine
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str) -> KeyStore:
        """A store on its own engine for ``url`` (SQLAlchemy async URL); closed by aclose."""
        return cls(make_engine(url), owns_engine=True)

    async def aclose(self) -> None:
        """Dispose of the engine if this store created it."""
        if self._owns_engine:
            await self._engine.dispose()

    async def fingerprint(self) -> tuple[int, int, str]:
        """A value that changes whenever any key changes: (rows, sum of generations, last
        update). One cheap aggregate query; a replica reloads only when it differs."""
        query = select(func.count(), func.coalesce(func.sum(api_keys.c.generation), 0), func.max(api_keys.c.updated_at))
        try:
            async with self._engine.connect() as conn:
                count, generations, updated = (await conn.execute(query)).one()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"key registry unavailable: {type(exc).__name__}") from exc
        return int(count), int(generations), str(updated)

    async def load(self) -> list[StoredKey]:
        """Every key, revoked and expired ones included, ordered by creation time."""
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))).all()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"key registry unavailable: {type(exc).__name__}") from exc
        return [_row(r) for r in rows]

    async def get(self, key_id: str) -> StoredKey | None:
        """The key with this id, or None."""
        try:
            async with self._engine.connect() as conn:
                row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"key registry unavailable: {type(exc).__name__}") from exc
        return _row(row) if row is not None else None

    async def insert(self, key: StoredKey) -> None:
        """Add a new key. Raises Conflict (param ``id``) if the id is taken."""
        now = _now()
        values = {
            "id": key.id,
            "tenant": key.tenant,
            "key_hash": key.key_hash,
            "roles": json.dumps(list(key.roles)),
            "all_tenants": key.all_tenants,
            "allowed_models": json.dumps(list(key.allowed_models)) if key.allowed_models is not None else None,
            "limits": json.dumps(key.limits.model_dump(exclude_none=True)),
            "created_at": key.created_at,
            "created_by": key.created_by,
            "expires_at": key.expires_at,
            "updated_at": now,
            "generation": 1,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(api_keys).values(values))
        except IntegrityError:
            raise Conflict(f"an API key with id {key.id!r} already exists", param="id", code="key_exists") from None
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"key registry unavailable: {type(exc).__name__}") from exc

    async def _update(self, key_id: str, values: dict[str, Any]) -> StoredKey:
        """Apply ``values`` to a live (not revoked) key and bump its generation."""
        stmt = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(**values, updated_at=_now(), generation=api_keys.c.generation + 1)
        )
        try:
            async with self._engine.begin() as conn:
                changed = (await conn.execute(stmt)).rowcount
                row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        except (SQLAlchemyError, OSError) as exc:
            raise AuditUnavailable(f"key registry unavailable: {type(exc).__name__}") from exc
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", param="key_id")
        if not changed:
            raise Conflict(f"API key {key_id!r} is revoked", param="key_id", code="key_revoked")
        return _row(row)

    async def rotate(self, key_id: str, new_hash: str, *, grace_s: float = 0.0) -> StoredKey:
        """Replace the key's hash; the old one stays valid for ``grace_s`` seconds (0: none).
        Raises NotFound, or Conflict when the key is revoked."""
        now = _now()
        current = await self.get(key_id)
        if current is None:
            raise NotFound(f"no API key with id {key_id!r}", param="key_id")
        grace = grace_s > 0
        return await self._update(
            key_id,
            {
                "key_hash": new_hash,
                "previous_hash": current.key_hash if grace else None,
                "previous_valid_until": now + dt.timedelta(seconds=grace_s) if grace else None,
                "rotated_at": now,
            },
        )

    async def revoke(self, key_id: str) -> StoredKey:
        """Mark the key revoked now (final). Raises NotFound, or Conflict if already revoked."""
        return await self._update(key_id, {"revoked_at": _now(), "previous_hash": None, "previous_valid_until": None})


def _param(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _validate(model: type[_M], body: Mapping[str, Any]) -> _M:
    """Validate an admin request body. Raises InvalidRequest naming the first bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{param}: {msg}", param=param) from None


class KeyAdmin:
    """Key management with the checks both the admin API and the CLI apply.

    ``config``: tenants, models and the static keys. ``store``: the registry table.
    ``redis_url``: where change notifications go (see gateway/notify.py; None: replicas poll).
    ``on_change``: called after each change before the caller answers (the local KeyRing's
    refresh, so this replica applies it at once).

    ``actor``: the admin's Principal, or None for the CLI (the operator, unscoped). An admin
    bound to its tenant (``all_tenants`` false) manages only its tenant's keys and cannot
    create ``all_tenants`` keys. Each mutation returns ``(response body, audit detail)``; the
    detail names the key id and tenant, never the key or its hash.
    """

    def __init__(
        self,
        config: GatewayConfig,
        store: KeyStore,
        *,
        redis_url: str | None,
        on_change: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._redis_url = redis_url
        self._on_change = on_change
        self._static = {k.id: k for k in config.keys}

    async def aclose(self) -> None:
        """Close the store (its engine, when it owns one)."""
        await self._store.aclose()

    async def _changed(self) -> None:
        """Apply a committed change here at once and tell the other replicas. A failing local
        reload is logged, not raised: the change is made, and the watcher retries it."""
        await publish(self._redis_url, namespaced(self._config, KEYS_TOPIC))
        if self._on_change is not None:
            try:
                await self._on_change()
            except GatewayError as exc:
                log.warning("API key change saved but not reloaded here yet: %s", exc.message)

    @staticmethod
    def _scope(actor: Principal | None, tenant: str, *, param: str) -> None:
        if actor is not None and not actor.all_tenants and tenant != actor.tenant:
            raise PermissionDenied(f"this admin key is bound to tenant {actor.tenant!r}", param=param)

    async def _own(self, key_id: str, actor: Principal | None) -> StoredKey:
        if key_id in self._static:
            raise Conflict(
                f"API key {key_id!r} is defined in the configuration file (static) and cannot be changed "
                "at run time (admin API or CLI); remove or replace its entry under keys: in gateway.yaml",
                param="key_id",
                code="static_key",
            )
        key = await self._store.get(key_id)
        if key is None or (actor is not None and not actor.all_tenants and key.tenant != actor.tenant):
            raise NotFound(f"no API key with id {key_id!r}", param="key_id")
        return key

    async def create(
        self, body: Mapping[str, Any], *, actor: Principal | None, by: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Create a key from a :class:`KeyCreate` body; the response holds ``key`` (shown once).

        Raises InvalidRequest (unknown tenant or model, past ``expires_at``; param names the
        field), PermissionDenied (another tenant, all_tenants by a bound admin), Conflict (id
        taken, or the id of a static key), AuditUnavailable (database).
        """
        spec = _validate(KeyCreate, body)
        if spec.tenant not in self._config.tenants:
            raise InvalidRequest(f"tenant: unknown tenant {spec.tenant!r}", param="tenant")
        self._scope(actor, spec.tenant, param="tenant")
        if spec.all_tenants and actor is not None and not actor.all_tenants:
            raise PermissionDenied(
                "an admin key bound to one tenant cannot create all_tenants keys", param="all_tenants"
            )
        ids = {d.id for d in self._config.deployments}
        for i, model in enumerate(spec.allowed_models or ()):
            if model not in self._config.aliases and model not in ids:
                raise InvalidRequest(f"allowed_models[{i}]: unknown model {model!r}", param=f"allowed_models[{i}]")
        expires_at = _utc(spec.expires_at)
        if expires_at is not None and expires_at <= _now():
            raise InvalidRequest("expires_at: must be in the future", param="expires_at")
        key_id = spec.id or f"k_{secrets.token_hex(8)}"
        if key_id in self._static:
            raise Conflict(f"id {key_id!r} is a static key in the configuration file", param="id", code="key_exists")
        secret = generate_key()
        stored = StoredKey(
            id=key_id,
            tenant=spec.tenant,
            key_hash=hash_key(secret),
            roles=tuple(dict.fromkeys(spec.roles)),
            all_tenants=spec.all_tenants,
            allowed_models=spec.allowed_models,
            limits=spec.limits,
            created_at=_now(),
            created_by=by,
            expires_at=expires_at,
        )
        await self._store.insert(stored)
        await self._changed()
        detail = {"by": by, "key_id": key_id, "tenant": spec.tenant, "roles": list(stored.roles)}
        return {**stored.view(), "key": secret}, detail

    async def list(self, *, actor: Principal | None, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key the actor may see (static ones first, ``source: config``), no secrets.
        ``tenant`` narrows the list. Raises PermissionDenied for another tenant."""
        if tenant is not None:
            self._scope(actor, tenant, param="tenant")
        elif actor is not None and not actor.all_tenants:
            tenant = actor.tenant
        out = [
            {
                "object": "api_key",
                "id": k.id,
                "tenant": k.tenant,
                "roles": list(k.roles),
                "all_tenants": k.all_tenants,
                "allowed_models": list(k.allowed_models) if k.allowed_models is not None else None,
                "limits": k.limits.model_dump(exclude_none=True),
                "source": "config",
                "status": "active",
            }
            for k in self._config.keys
            if tenant is None or k.tenant == tenant
        ]
        out += [k.view() for k in await self._store.load() if tenant is None or k.tenant == tenant]
        return out

    async def rotate(
        self, key_id: str, body: Mapping[str, Any], *, actor: Principal | None, by: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """New secret for ``key_id`` (returned once as ``key``); the old one stops working
        (after ``grace_s``). Raises NotFound, Conflict (static or revoked key), InvalidRequest."""
        spec = _validate(KeyRotate, body)
        key = await self._own(key_id, actor)
        secret = generate_key()
        stored = await self._store.rotate(key_id, hash_key(secret), grace_s=spec.grace_s)
        await self._changed()
        detail = {"by": by, "key_id": key_id, "tenant": key.tenant, "grace_s": spec.grace_s}
        return {**stored.view(), "key": secret}, detail

    async def revoke(self, key_id: str, *, actor: Principal | None, by: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Revoke ``key_id`` now, on every replica within about a second. Raises NotFound,
        Conflict (static or already revoked key)."""
        key = await self._own(key_id, actor)
        stored = await self._store.revoke(key_id)
        await self._changed()
        return stored.view(), {"by": by, "key_id": key_id, "tenant": key.tenant}
