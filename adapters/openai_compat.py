"""Direct HTTP adapter for any OpenAI-compatible server.

Covers llama.cpp, vLLM, Ollama, SGLang, DeepSeek, Qwen DashScope (compatible mode), Moonshot,
Mistral and OpenAI itself: ``POST {api_base}/chat/completions`` with a Bearer key, SSE
``data: {...}`` lines ending with ``data: [DONE]`` for streams (OpenAI API reference,
"Create chat completion" / "Streaming").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from adapters.base import (
    Target,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = ["OpenAICompatAdapter"]


def _upstream_message(response: httpx.Response) -> str:
    """The upstream's own error message, if its body carries one, else the raw text."""
    text = response.text[:2000]
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip() or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return text.strip() or f"HTTP {response.status_code}"


class OpenAICompatAdapter:
    """Talks HTTP directly to an OpenAI-compatible ``/v1`` API with one pooled httpx client."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            follow_redirects=False,
        )

    def _request(self, target: Target, body: dict[str, Any]) -> httpx.Request:
        headers = {"content-type": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        url = f"{(target.api_base or '').rstrip('/')}/chat/completions"
        payload = {**body, "model": target.model}
        return self._client.build_request(
            "POST",
            url,
            headers=headers,
            content=json.dumps(payload).encode(),
            timeout=httpx.Timeout(target.timeout_s, connect=min(target.timeout_s, 10.0)),
        )

    async def complete(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream chat completion. Returns the upstream's ``chat.completion`` dict.

        Raises UpstreamConnectError, UpstreamTimeout, UpstreamHTTPError (non-2xx) or
        UpstreamProtocolError (2xx without a JSON object carrying ``choices``).
        """
        try:
            response = await self._client.send(self._request(target, body))
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"timed out after {target.timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise UpstreamConnectError(f"connection failed: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise UpstreamHTTPError(_upstream_message(response), status=response.status_code)
        try:
            data = response.json()
        except ValueError as exc:
            raise UpstreamProtocolError("upstream answered with a body that is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise UpstreamProtocolError("upstream answer has no choices")
        return data

    async def stream(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streamed chat completion: yields each ``chat.completion.chunk`` dict until [DONE].

        A stream that ends without ``data: [DONE]`` raises UpstreamConnectError; a line that is
        not JSON raises UpstreamProtocolError; no chunk within ``timeout_s`` raises
        UpstreamTimeout.
        """
        request = self._request(target, {**body, "stream": True})
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"timed out after {target.timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise UpstreamConnectError(f"connection failed: {type(exc).__name__}") from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise UpstreamHTTPError(_upstream_message(response), status=response.status_code)
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise UpstreamProtocolError("upstream sent a malformed stream event") from exc
                if not isinstance(chunk, dict):
                    raise UpstreamProtocolError("upstream sent a stream event that is not an object")
                if "error" in chunk and "choices" not in chunk:
                    raise UpstreamHTTPError(f"upstream stream error: {chunk['error']}", status=502)
                yield chunk
            if not done:
                raise UpstreamConnectError("upstream closed the stream before [DONE]")
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"no stream data for {target.timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise UpstreamConnectError(f"stream broken: {type(exc).__name__}") from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the pooled HTTP client."""
        await self._client.aclose()
