"""litellm adapter for providers with their own wire format (Anthropic, Bedrock, Vertex…).

litellm translates an OpenAI-shaped request to the provider's format and back. Importing it
must not phone home: litellm fetches a remote model cost map at import unless
``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set first (litellm docs, "Custom pricing / local
cost map"), so this module sets it before the (lazy) import.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from adapters.base import (
    AdapterError,
    Target,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = ["LiteLLMAdapter", "import_litellm"]


def import_litellm() -> Any:
    """Import litellm with network-free settings (local cost map, no telemetry)."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def _map_error(exc: Exception) -> AdapterError:
    """Map a litellm / openai-SDK exception to the adapter error tree."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc)[:2000]
    if "Timeout" in name:
        return UpstreamTimeout(message)
    if name == "APIConnectionError":
        return UpstreamConnectError(message)
    if isinstance(status, int) and status >= 400:
        return UpstreamHTTPError(message, status=status)
    return UpstreamProtocolError(f"{name}: {message}")


class LiteLLMAdapter:
    """Calls providers through ``litellm.acompletion``; ``Target.model`` is litellm's name
    (``anthropic/claude-3-5-haiku-latest``)."""

    def __init__(self) -> None:
        self._litellm = import_litellm()

    def _kwargs(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options", "user")}
        kwargs.update(model=target.model, timeout=target.timeout_s, num_retries=0)
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if target.api_key:
            kwargs["api_key"] = target.api_key
        return kwargs

    async def complete(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream completion; returns an OpenAI ``chat.completion`` dict."""
        try:
            response = await self._litellm.acompletion(**self._kwargs(target, body))
        except Exception as exc:  # litellm raises many classes; all are mapped here
            raise _map_error(exc) from exc
        data: dict[str, Any] = response.model_dump(exclude_none=True)
        return data

    async def stream(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streamed completion; yields OpenAI ``chat.completion.chunk`` dicts, usage last."""
        kwargs = self._kwargs(target, body)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await self._litellm.acompletion(**kwargs)
            async for chunk in response:
                yield chunk.model_dump(exclude_none=True)
        except AdapterError:
            raise
        except Exception as exc:
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        """litellm keeps its own clients; nothing to release here."""
