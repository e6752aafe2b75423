"""The adapter contract: how the gateway talks to one kind of model backend.

Adapters speak the OpenAI chat-completions shape on the gateway side whatever the backend's
own wire format is: :meth:`Adapter.complete` returns an OpenAI ``chat.completion`` dict,
:meth:`Adapter.stream` yields OpenAI ``chat.completion.chunk`` dicts; the legacy text
completions (:meth:`Adapter.complete_text`, :meth:`Adapter.stream_text`) and
:meth:`Adapter.embed` return their OpenAI shapes too. Adapters never import
``gateway``; they raise the errors below, which the gateway maps at its boundary::

    AdapterError                 (retryable: may the gateway try the next eligible deployment?)
    ├── UpstreamConnectError     connection refused/reset/closed before an answer  retryable
    ├── UpstreamTimeout          connect/read/idle timeout                          retryable
    ├── UpstreamHTTPError        non-2xx answer; retryable for 5xx and 429 only
    └── UpstreamProtocolError    a 2xx answer that is not the wire format          retryable
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Adapter",
    "AdapterError",
    "Target",
    "UpstreamConnectError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
]


@dataclass(frozen=True)
class Target:
    """Where and how to call one deployment.

    ``model`` is the backend's model name, ``api_base`` its base URL (``.../v1`` for
    OpenAI-compatible servers), ``api_key`` the credential (None for keyless local servers),
    ``timeout_s`` the per-attempt timeout in seconds (for streams: the idle timeout between
    chunks).
    """

    deployment_id: str
    model: str
    api_base: str | None
    api_key: str | None
    timeout_s: float


class AdapterError(Exception):
    """An upstream call failed. ``retryable`` says whether another deployment may be tried."""

    retryable = True
    error_class = "upstream_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class UpstreamConnectError(AdapterError):
    """Could not connect, or the connection closed before a complete answer."""

    error_class = "connect_error"


class UpstreamTimeout(AdapterError):
    """The upstream did not answer (or send the next stream chunk) within the timeout."""

    error_class = "timeout"


class UpstreamHTTPError(AdapterError):
    """The upstream answered a non-2xx status; retryable only for 5xx and 429.

    A 4xx other than 429 (bad request, context too long, content refusal) is the request's
    fault and is returned to the client rather than tried elsewhere.
    """

    error_class = "http_error"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, status=status)
        self.retryable = status >= 500 or status == 429


class UpstreamProtocolError(AdapterError):
    """The upstream answered 2xx with something that is not the expected wire format."""

    error_class = "protocol_error"


class Adapter(Protocol):
    """One backend kind. Instances are created once in the app's lifespan and shared."""

    async def complete(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Run a non-stream chat completion. ``body`` is an OpenAI request (model replaced).

        Returns an OpenAI ``chat.completion`` dict. Raises AdapterError subclasses.
        """
        ...

    def stream(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run a streamed chat completion; yields OpenAI ``chat.completion.chunk`` dicts.

        Raises AdapterError subclasses, before the first chunk or mid-stream.
        """
        ...

    async def health(self, target: Target) -> None:
        """A cheap liveness probe of the backend (no prompt, no tokens spent), bounded by
        ``target.timeout_s``. Returns when the backend is up.

        Raises UpstreamConnectError / UpstreamTimeout when it cannot be reached in time, and
        UpstreamHTTPError when it answers 5xx, 401 or 403 (down, or the key is refused). Any
        other answer (even a 404 for a server without a model list) means alive.
        """
        ...

    async def complete_text(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Run a non-stream legacy text completion (``prompt``). Returns an OpenAI
        ``text_completion`` dict. Raises AdapterError subclasses."""
        ...

    def stream_text(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run a streamed legacy text completion; yields OpenAI ``text_completion`` chunk
        dicts (``choices[].text``). Raises AdapterError subclasses."""
        ...

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Embed ``body["input"]`` (a string, strings, or token ids). Returns an OpenAI
        embeddings ``list`` dict (``data[].embedding``, ``usage.prompt_tokens``). Raises
        AdapterError subclasses."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_safe(obj: Any) -> Any:
    """``obj`` with what JSON text cannot carry repaired: non-finite floats (Python's json
    reads ``NaN``/``Infinity``; some servers write them for logprobs) become None, unpaired
    UTF-16 surrogates (a ``\\ud800`` escape decodes to one) U+FFFD, in keys too. Containers
    are copied; everything else comes back as is."""
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {json_safe(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
