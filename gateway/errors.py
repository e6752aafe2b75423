"""The gateway's one error tree.

Every error a request can end in is a :class:`GatewayError`; each subclass knows its HTTP
status and its OpenAI error ``type`` so the API layer renders them all the same way, in the
OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``::

    GatewayError                    500 api_error
    ├── ConfigError                 (start-up only: file, path inside it, reason)
    ├── InvalidRequest              400 invalid_request_error (param names the field)
    │   ├── PayloadTooLarge         413 invalid_request_error
    │   └── ClientDisconnected      499 invalid_request_error (the client went away)
    ├── AuthenticationFailed        401 authentication_error
    ├── PermissionDenied            403 permission_error
    │   └── PolicyDenied            403 permission_error, code policy_denied (+ reasons)
    ├── NotFound                    404 not_found_error
    ├── MethodNotAllowed            405 invalid_request_error
    ├── Conflict                    409 invalid_request_error (the resource's state forbids it)
    ├── RateLimited                 429 rate_limit_error (+ Retry-After, the limit it hit)
    ├── UpstreamError               upstream status or 502, upstream_error
    ├── PolicyUnavailable           503 service_unavailable (policy engine failed: deny)
    ├── AuditUnavailable            503 service_unavailable (audit store down: no egress)
    └── LimitsUnavailable           503 service_unavailable (limits store down, fail closed)

Third-party exceptions are mapped to these at the boundary (``raise X(...) from exc``); the
API layer never shows a stack trace or an internal class name.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuditUnavailable",
    "AuthenticationFailed",
    "ClientDisconnected",
    "ConfigError",
    "Conflict",
    "GatewayError",
    "InvalidRequest",
    "LimitsUnavailable",
    "MethodNotAllowed",
    "NoHealthyDeployment",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PolicyDenied",
    "PolicyUnavailable",
    "RateLimited",
    "UpstreamError",
]


class GatewayError(Exception):
    """Base of every gateway error.

    Attributes:
        status: HTTP status code the API answers with.
        error_type: OpenAI error ``type`` string.
        code: short machine-readable code (OpenAI ``code``), or None.
        param: the request field at fault (dotted path), or None.
        outcome: the audit record's status for a request that ends in this error.
    """

    status: int = 500
    error_type: str = "api_error"
    code: str | None = "internal_error"
    outcome: str = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers for this error (none by default)."""
        return {}


class ConfigError(GatewayError):
    """The configuration is invalid; raised at start-up, naming file, path and reason."""

    code = "config_error"

    def __init__(self, file: str, path: str, reason: str) -> None:
        self.file = file
        self.path = path
        self.reason = reason
        super().__init__(f"{file}: {path}: {reason}")


class InvalidRequest(GatewayError):
    """The request is malformed; ``param`` names the offending field."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"
    outcome = "invalid"


class PayloadTooLarge(InvalidRequest):
    """The request body exceeds the configured limit (bytes)."""

    status = 413
    code = "payload_too_large"


class ClientDisconnected(InvalidRequest):
    """The client went away before its answer began: mid-body (nothing was sent anywhere), or
    while the gateway waited for an upstream (the upstream call is cancelled). 499, nginx's
    "client closed request" that Kong logs and LiteLLM's proxy raises — no one reads it —
    and status ``client_disconnected`` in the record. (A stream left after its first byte
    is recorded ``client_disconnected`` with the 200 it had begun.)"""

    status = 499
    code = "client_disconnected"
    outcome = "client_disconnected"


class AuthenticationFailed(GatewayError):
    """Missing, malformed or unknown API key."""

    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"
    outcome = "unauthorized"


class PermissionDenied(GatewayError):
    """The caller is authenticated but not allowed to do this."""

    status = 403
    error_type = "permission_error"
    code = "permission_denied"
    outcome = "forbidden"


class PolicyDenied(PermissionDenied):
    """The routing policy left no eligible deployment; ``reasons`` are auditor-readable."""

    code = "policy_denied"
    outcome = "denied"

    def __init__(self, message: str, *, reasons: list[str]) -> None:
        super().__init__(message)
        self.reasons = reasons

    def body(self) -> dict[str, Any]:
        """OpenAI error shape plus ``error.reasons`` (list of sentences)."""
        out = super().body()
        out["error"]["reasons"] = self.reasons
        return out


class NoHealthyDeployment(PolicyDenied):
    """The policy's only reason to exclude every deployment is that none is healthy (breaker
    open, failed health checks, no credentials): an outage, answered 503 so clients retry,
    still recorded as a deny with the policy's reasons."""

    status = 503
    error_type = "service_unavailable"
    code = "no_healthy_deployment"

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (seconds): a breaker cooldown or the next health probe."""
        return {"Retry-After": "5"}


class NotFound(GatewayError):
    """Unknown route, model alias or resource."""

    status = 404
    error_type = "not_found_error"
    code = "not_found"
    outcome = "invalid"


class MethodNotAllowed(GatewayError):
    """The route exists but not for this HTTP method."""

    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"
    outcome = "invalid"


class Conflict(GatewayError):
    """The request conflicts with the resource's state (an id already taken, a revoked or
    static API key); ``param`` names the field."""

    status = 409
    error_type = "invalid_request_error"
    code = "conflict"
    outcome = "invalid"


class RateLimited(GatewayError):
    """A rate limit or budget would be exceeded by this request; nothing was reserved or sent.

    ``limit`` names the rule (``"key k_app: 3 requests per minute"``); ``retry_after_s`` is
    the whole number of seconds (>= 1) until that rule's window ends, sent as ``Retry-After``.
    ``code`` is ``rate_limit_exceeded`` (requests, tokens) or ``budget_exceeded`` (USD).
    """

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    outcome = "rate_limited"

    def __init__(self, message: str, *, limit: str, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.limit = limit
        self.retry_after_s = max(1, int(retry_after_s))

    def body(self) -> dict[str, Any]:
        """OpenAI error shape plus ``error.limit`` (the rule's name) and ``error.retry_after_s``."""
        out = super().body()
        out["error"]["limit"] = self.limit
        out["error"]["retry_after_s"] = self.retry_after_s
        return out

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (RFC 9110 section 10.2.3)."""
        return {"Retry-After": str(self.retry_after_s)}


class UpstreamError(GatewayError):
    """Every eligible deployment failed, or one answered a non-retryable error.

    ``status`` is the upstream's 4xx when it was a client error (the client's fault), else 502.
    """

    status = 502
    error_type = "upstream_error"
    code = "upstream_error"
    outcome = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class PolicyUnavailable(GatewayError):
    """The policy engine errored or timed out; fail closed (deny, no egress)."""

    status = 503
    error_type = "service_unavailable"
    code = "policy_unavailable"
    outcome = "denied"


class AuditUnavailable(GatewayError):
    """The audit store cannot commit a record; fail closed (no egress)."""

    status = 503
    error_type = "service_unavailable"
    code = "audit_unavailable"
    outcome = "audit_unavailable"


class LimitsUnavailable(GatewayError):
    """The limits store (Redis) is unreachable and ``limits_store.on_error`` is ``closed``:
    the request is refused before anything is reserved or sent."""

    status = 503
    error_type = "service_unavailable"
    code = "limits_unavailable"
    outcome = "limits_unavailable"
