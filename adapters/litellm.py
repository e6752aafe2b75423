"""litellm adapter for providers with their own wire format (Anthropic, Bedrock, Vertex…).

litellm translates an OpenAI-shaped request to the provider's format and back. Importing it
must not phone home: litellm fetches a remote model cost map at import unless
``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set first (litellm docs, "Custom pricing / local
cost map"), so this module sets it before the (lazy) import.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any

from adapters.base import (
    AdapterError,
    Target,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    json_safe,
)

__all__ = ["LITELLM_ERRORS", "LiteLLMAdapter", "import_litellm"]


def import_litellm() -> Any:
    """Import litellm with network-free settings (local cost map, no telemetry)."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


_BY_STATUS = "status"  # map by the exception's HTTP status_code (retryable for 5xx and 429 only)

LITELLM_ERRORS: Mapping[str, type[AdapterError] | str] = MappingProxyType(
    {
        # transport
        "Timeout": UpstreamTimeout,
        "APIConnectionError": UpstreamConnectError,
        "MidStreamFallbackError": UpstreamConnectError,
        # the provider answered an HTTP error: keep its status
        "APIError": _BY_STATUS,
        "AuthenticationError": _BY_STATUS,
        "BadGatewayError": _BY_STATUS,
        "BadRequestError": _BY_STATUS,
        "CallerCredentialAuthenticationError": _BY_STATUS,
        "CallerCredentialRateLimitError": _BY_STATUS,
        "ContentPolicyViolationError": _BY_STATUS,
        "ContextWindowExceededError": _BY_STATUS,
        "EndpointNotSupportedByModelError": _BY_STATUS,
        "ImageFetchError": _BY_STATUS,
        "InternalServerError": _BY_STATUS,
        "InvalidRequestError": _BY_STATUS,
        "JSONSchemaValidationError": _BY_STATUS,
        "MalformedRequestFieldError": _BY_STATUS,
        "NotFoundError": _BY_STATUS,
        "PaymentRequiredError": _BY_STATUS,
        "PermissionDeniedError": _BY_STATUS,
        "RateLimitError": _BY_STATUS,
        "RejectedRequestError": _BY_STATUS,
        "ServiceUnavailableError": _BY_STATUS,
        "UnprocessableEntityError": _BY_STATUS,
        "UnsupportedEndpointError": _BY_STATUS,
        "UnsupportedParamsError": _BY_STATUS,
        # litellm-internal conditions or an answer that is not the wire format
        "APIResponseValidationError": UpstreamProtocolError,
        "BlockedPiiEntityError": UpstreamProtocolError,
        "BudgetExceededError": UpstreamProtocolError,
        "GuardrailRaisedException": UpstreamProtocolError,
        "LiteLLMUnknownProvider": UpstreamProtocolError,
        "MockException": UpstreamProtocolError,
        "ModelNotMappedError": UpstreamProtocolError,
        "ModifyResponseException": UpstreamProtocolError,
        "OpenAIError": UpstreamProtocolError,
        "SensitiveDataRouteException": UpstreamProtocolError,
        "VectorStoreSearchError": UpstreamProtocolError,
    }
)
"""Every exception class in ``litellm.exceptions`` (by name) → the adapter error it becomes;
a test fails when a litellm upgrade adds a class missing here."""


def _map_error(exc: Exception) -> AdapterError:
    """Map a litellm / openai-SDK exception to the adapter error tree."""
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc)[:2000]
    for cls in type(exc).__mro__:
        kind = LITELLM_ERRORS.get(cls.__name__)
        if kind is None:
            continue
        if kind == _BY_STATUS:
            if isinstance(status, int) and status >= 400:
                return UpstreamHTTPError(message, status=status)
            return UpstreamProtocolError(f"{type(exc).__name__}: {message}")
        assert not isinstance(kind, str)
        return kind(message)
    if "Timeout" in type(exc).__name__:
        return UpstreamTimeout(message)
    if isinstance(status, int) and status >= 400:
        return UpstreamHTTPError(message, status=status)
    return UpstreamProtocolError(f"{type(exc).__name__}: {message}")


class LiteLLMAdapter:
    """Calls providers through ``litellm.acompletion``; ``Target.model`` is litellm's name
    (``anthropic/claude-3-5-haiku-latest``)."""

    ANTHROPIC_API_BASE = "https://api.anthropic.com"
    ANTHROPIC_VERSION = "2023-06-01"

    def __init__(self) -> None:
        self._litellm = import_litellm()
        self._probe_client: Any = None  # httpx.AsyncClient, created on the first health probe

    def _kwargs(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options", "user")}
        kwargs.update(model=target.model, timeout=target.timeout_s, num_retries=0)
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if target.api_key:
            kwargs["api_key"] = target.api_key
        return kwargs

    async def _call(self, fn: Any, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """One non-stream litellm call (``acompletion``, ``atext_completion``...) as a dict."""
        try:
            response = await fn(**self._kwargs(target, body))
        except Exception as exc:  # litellm raises many classes; all are mapped here
            raise _map_error(exc) from exc
        # JSON-safe like openai_compat's strict parsing: litellm relays what providers send
        data: dict[str, Any] = json_safe(response.model_dump(exclude_none=True))
        return data

    async def _stream(self, fn: Any, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """One streamed litellm call, chunks as dicts, usage last."""
        kwargs = self._kwargs(target, body)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await fn(**kwargs)
            async for chunk in response:
                yield json_safe(chunk.model_dump(exclude_none=True))
        except AdapterError:
            raise
        except Exception as exc:
            raise _map_error(exc) from exc

    async def complete(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream completion; returns an OpenAI ``chat.completion`` dict."""
        return await self._call(self._litellm.acompletion, target, body)

    def stream(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streamed completion; yields OpenAI ``chat.completion.chunk`` dicts, usage last."""
        return self._stream(self._litellm.acompletion, target, body)

    async def complete_text(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream legacy text completion through ``litellm.atext_completion`` (litellm
        turns it into a chat call for providers without one); returns a ``text_completion``."""
        return await self._call(self._litellm.atext_completion, target, body)

    def stream_text(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streamed legacy text completion; yields ``text_completion`` chunk dicts."""
        return self._stream(self._litellm.atext_completion, target, body)

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Embeddings through ``litellm.aembedding``; returns an OpenAI embeddings ``list``."""
        return await self._call(self._litellm.aembedding, target, body)

    async def health(self, target: Target) -> None:
        """Health probe by the provider's model list, no tokens spent: ``anthropic/...`` →
        ``GET {api_base or https://api.anthropic.com}/v1/models`` (Anthropic API "List
        Models", ``x-api-key`` + ``anthropic-version``); another provider with an ``api_base``
        → ``GET {api_base}/models`` (the OpenAI shape most providers copy). A provider with
        neither (Bedrock, Vertex without a base URL) has no probe here and passes; the
        circuit breaker still guards it. Raises as :func:`adapters.openai_compat.probe_http`."""
        import httpx

        from adapters.openai_compat import probe_http

        if target.model.startswith("anthropic/"):
            url = f"{(target.api_base or self.ANTHROPIC_API_BASE).rstrip('/')}/v1/models"
            headers = {"anthropic-version": self.ANTHROPIC_VERSION}
            if target.api_key:
                headers["x-api-key"] = target.api_key
        elif target.api_base:
            url = f"{target.api_base.rstrip('/')}/models"
            headers = {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        else:
            return
        if self._probe_client is None:
            self._probe_client = httpx.AsyncClient(follow_redirects=False)
        await probe_http(self._probe_client, url, headers, target.timeout_s)

    async def aclose(self) -> None:
        """Close the health-probe client; litellm keeps its own clients for calls."""
        if self._probe_client is not None:
            await self._probe_client.aclose()
            self._probe_client = None
