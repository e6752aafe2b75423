"""Direct HTTP adapter for any OpenAI-compatible server.

Covers llama.cpp, vLLM, Ollama, SGLang, DeepSeek, Qwen DashScope (compatible mode), Moonshot,
Mistral and OpenAI itself: ``POST {api_base}/chat/completions`` with a Bearer key, SSE
``data: {...}`` lines ending with ``data: [DONE]`` for streams (OpenAI API reference,
"Create chat completion" / "Streaming").

Requests go out on one pooled ``aiohttp.ClientSession`` (keep-alive, up to 512 connections):
measured in ``benchmarks/run_bench.py`` it costs a fraction of httpx's CPU per request
(httpcore scans every pooled connection on each request). Bodies are written and read with
orjson. Health probes stay on httpx (:func:`probe_http`, shared with the litellm adapter).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp
import httpx
import orjson

from adapters.base import (
    AdapterError,
    Target,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    json_safe,
)

__all__ = [
    "AIOHTTP_ERRORS",
    "HTTPX_ERRORS",
    "PROBE_FAILS",
    "OpenAICompatAdapter",
    "http_error",
    "map_aiohttp_error",
    "map_httpx_error",
    "probe_http",
]

HTTPX_ERRORS: Mapping[type[Exception], type[AdapterError]] = MappingProxyType(
    {
        # timeouts: no answer, or no next stream chunk, in time
        httpx.TimeoutException: UpstreamTimeout,
        httpx.ConnectTimeout: UpstreamTimeout,
        httpx.ReadTimeout: UpstreamTimeout,
        httpx.WriteTimeout: UpstreamTimeout,
        httpx.PoolTimeout: UpstreamTimeout,
        # the connection failed or broke before a complete answer
        httpx.HTTPError: UpstreamConnectError,
        httpx.RequestError: UpstreamConnectError,
        httpx.TransportError: UpstreamConnectError,
        httpx.NetworkError: UpstreamConnectError,
        httpx.ConnectError: UpstreamConnectError,
        httpx.ReadError: UpstreamConnectError,
        httpx.WriteError: UpstreamConnectError,
        httpx.CloseError: UpstreamConnectError,
        httpx.ProtocolError: UpstreamConnectError,
        httpx.RemoteProtocolError: UpstreamConnectError,
        httpx.LocalProtocolError: UpstreamConnectError,
        httpx.ProxyError: UpstreamConnectError,
        httpx.UnsupportedProtocol: UpstreamConnectError,
        httpx.InvalidURL: UpstreamConnectError,
        # an answer arrived but is not usable
        httpx.DecodingError: UpstreamProtocolError,
        httpx.TooManyRedirects: UpstreamProtocolError,
        httpx.HTTPStatusError: UpstreamProtocolError,
        httpx.CookieConflict: UpstreamProtocolError,
        httpx.StreamError: UpstreamProtocolError,
        httpx.StreamConsumed: UpstreamProtocolError,
        httpx.StreamClosed: UpstreamProtocolError,
        httpx.ResponseNotRead: UpstreamProtocolError,
        httpx.RequestNotRead: UpstreamProtocolError,
    }
)
"""Every exception class httpx exports → the adapter error it becomes (a test fails when an
httpx upgrade adds a class missing here)."""

_HTTPX_CATCH = (httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict, httpx.StreamError)


def map_httpx_error(exc: Exception, *, timeout_s: float) -> AdapterError:
    """The adapter error for an httpx exception (most specific mapped class in its MRO)."""
    for cls in type(exc).__mro__:
        kind = HTTPX_ERRORS.get(cls)
        if kind is not None:
            if kind is UpstreamTimeout:
                return UpstreamTimeout(f"no answer within {timeout_s:g}s ({type(exc).__name__})")
            return kind(_client_error_text(exc))
    return UpstreamProtocolError(f"unexpected HTTP client error {type(exc).__name__}")


AIOHTTP_ERRORS: Mapping[type[BaseException], type[AdapterError]] = MappingProxyType(
    {
        # timeouts: no connection, no answer, or no next stream chunk in time
        TimeoutError: UpstreamTimeout,
        asyncio.TimeoutError: UpstreamTimeout,
        aiohttp.ServerTimeoutError: UpstreamTimeout,
        aiohttp.ConnectionTimeoutError: UpstreamTimeout,
        aiohttp.SocketTimeoutError: UpstreamTimeout,
        # the connection failed or broke before a complete answer
        aiohttp.ClientError: UpstreamConnectError,
        aiohttp.ClientConnectionError: UpstreamConnectError,
        aiohttp.ClientOSError: UpstreamConnectError,
        aiohttp.ClientConnectorError: UpstreamConnectError,
        aiohttp.ServerDisconnectedError: UpstreamConnectError,
        aiohttp.ClientPayloadError: UpstreamConnectError,
        aiohttp.InvalidURL: UpstreamConnectError,
        # an answer arrived but is not usable (e.g. a stream line over the read buffer)
        aiohttp.ClientResponseError: UpstreamProtocolError,
        ValueError: UpstreamProtocolError,
    }
)
"""aiohttp exception classes (and the builtins it raises) → the adapter error they become;
the most specific class in an exception's MRO wins."""

_AIOHTTP_CATCH = (aiohttp.ClientError, TimeoutError, ValueError)


def map_aiohttp_error(exc: BaseException, *, timeout_s: float) -> AdapterError:
    """The adapter error for an aiohttp (or timeout) exception."""
    for cls in type(exc).__mro__:
        kind = AIOHTTP_ERRORS.get(cls)
        if kind is not None:
            if kind is UpstreamTimeout:
                return UpstreamTimeout(f"no answer within {timeout_s:g}s ({type(exc).__name__})")
            return kind(_client_error_text(exc))
    return UpstreamProtocolError(f"unexpected HTTP client error {type(exc).__name__}")


_NESTED_ERROR = re.compile(r"<\w+: \d+, message=['\"](.*?)['\"]>")


def _client_error_text(exc: BaseException) -> str:
    """An aiohttp error as plain words for the client and the record: its text, with a nested
    ``<TransferEncodingError: 400, message='...'>`` reduced to the message, and no class
    names; a bare exception gets a phrase for its kind."""
    text = _NESTED_ERROR.sub(r"\1", str(exc))[:300].strip()
    if text:
        return text
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the upstream's answer was cut off"
    return "the connection to the upstream failed"


def _loads(data: bytes | str) -> Any:
    """An upstream JSON body or stream event. orjson (strict: valid Unicode, no NaN); what
    only Python's json accepts is repaired instead of refused — ``NaN``/``Infinity`` (some
    servers write them for logprobs) become null, unpaired surrogates U+FFFD — so nothing
    the gateway relays or records is invalid JSON. Raises ValueError if not JSON at all."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json_safe(json.loads(data))


def _dumps(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError:  # values orjson refuses (NaN kept by json.loads, ints beyond 64 bits)
        return json.dumps(payload).encode()


def _proxy_for(scheme: str, netloc: str) -> str | None:
    """The proxy the environment names for ``scheme://netloc`` (``HTTPS_PROXY``/``HTTP_PROXY``/
    ``ALL_PROXY``, ``NO_PROXY`` honoured, as httpx does), or None."""
    host = netloc.rsplit("@", 1)[-1]
    if urllib.request.proxy_bypass(host.split(":")[0] if not host.startswith("[") else host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(scheme) or proxies.get("all")


def _upstream_message(response: httpx.Response) -> str:
    """The upstream's own error message, if its body carries one, else the raw text."""
    return _message_of(response.text, response.status_code)


_TRACEBACK = re.compile(r'Traceback \(most recent call last\)|^\s*File "[^"]*", line \d+', re.MULTILINE)
"""A Python traceback in an upstream's error text (llama-cpp-python's server sends them)."""


def _message_of(body: str, status: int) -> str:
    """The upstream's own error message in ``body``, if it carries one, else the raw text. A
    message holding a stack trace is withheld: the client and the record get the status only
    (input.yaml: "no internal names or stack traces")."""
    message = _raw_message(body, status)
    if _TRACEBACK.search(message):
        return f"upstream internal error (HTTP {status}; its stack trace is withheld)"
    return message


def _raw_message(body: str, status: int) -> str:
    text = body[:2000]
    try:
        data = json_safe(json.loads(text))
    except ValueError:
        return text.strip() or f"HTTP {status}"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return text.strip() or f"HTTP {status}"


_VALIDATION_500 = re.compile(r"\d+ validation errors?:")
"""Start of a pydantic ``ValidationError`` text. llama-cpp-python's server (0.3.x) answers a
request its schema refuses (a ``developer`` role, a token-id prompt, an unknown
``response_format``) with HTTP 500 and this text as the message."""


def http_error(body: str, status: int) -> UpstreamHTTPError:
    """The :class:`UpstreamHTTPError` for a non-2xx answer: the upstream's message and status,
    except a 500 whose message is a request-validation report (:data:`_VALIDATION_500`), which
    is the request's fault and becomes a 422 — not retried elsewhere, and not a failure that
    counts toward the deployment's breaker (five such requests would otherwise take it out
    for every client)."""
    raw = _raw_message(body, status)
    if status == 500 and _VALIDATION_500.match(raw):
        # llama-cpp-python appends where it failed ('File ".../app.py", line 376, ...'): keep
        # the report, drop the trace
        trace = _TRACEBACK.search(raw)
        return UpstreamHTTPError((raw[: trace.start()] if trace else raw).strip(), status=422)
    return UpstreamHTTPError(_message_of(body, status), status=status)


PROBE_FAILS = frozenset({401, 403})
"""Non-5xx answers to a health probe that still mean the backend cannot serve (key refused)."""


async def probe_http(client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
    """``GET url`` as a health probe (see :meth:`adapters.base.Adapter.health`).

    Raises UpstreamConnectError / UpstreamTimeout (via :func:`map_httpx_error`) when the
    backend cannot be reached within ``timeout_s`` seconds, UpstreamHTTPError for 5xx, 401
    and 403. Any other status means the server is up.
    """
    try:
        response = await client.get(url, headers=dict(headers), timeout=httpx.Timeout(timeout_s))
    except _HTTPX_CATCH as exc:
        raise map_httpx_error(exc, timeout_s=timeout_s) from exc
    if response.status_code >= 500 or response.status_code in PROBE_FAILS:
        raise UpstreamHTTPError(
            f"health probe GET {url} answered {response.status_code}: {_upstream_message(response)[:200]}",
            status=response.status_code,
        )


class OpenAICompatAdapter:
    """Talks HTTP directly to an OpenAI-compatible ``/v1`` API: requests on one pooled aiohttp
    session (created on first use, inside the running loop), health probes on httpx."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            follow_redirects=False,
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30),
                # proxy variables are honoured as httpx did, looked up once per origin
                # (_proxy_for) rather than per request; 1 MiB read buffer: stream lines (one
                # JSON event each) up to 2 MiB
                trust_env=False,
                read_bufsize=2**20,
                auto_decompress=True,
            )
        return self._session

    def _proxy(self, url: str) -> str | None:
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        if key not in self._proxies:
            self._proxies[key] = _proxy_for(origin[0].rstrip(":"), origin[2] if len(origin) > 2 else "")
        return self._proxies[key]

    @staticmethod
    def _parts(target: Target, body: dict[str, Any], path: str) -> tuple[str, dict[str, str], bytes]:
        headers = {"content-type": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        url = f"{(target.api_base or '').rstrip('/')}/{path}"
        return url, headers, _dumps({**body, "model": target.model})

    @staticmethod
    def _timeout(target: Target) -> aiohttp.ClientTimeout:
        # like httpx.Timeout(timeout_s, connect=min(timeout_s, 10)): each read (the answer,
        # or the next stream chunk) within timeout_s
        return aiohttp.ClientTimeout(total=None, sock_connect=min(target.timeout_s, 10.0), sock_read=target.timeout_s)

    async def complete(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream chat completion. Returns the upstream's ``chat.completion`` dict.

        Raises UpstreamConnectError, UpstreamTimeout, UpstreamHTTPError (non-2xx) or
        UpstreamProtocolError (2xx without a JSON object carrying ``choices``, or a choice
        without a message that says something: text, tool calls, a refusal or audio — content
        is null only beside those, OpenAI API reference "The chat completion object").
        """
        answer = await self._post(target, body, "chat/completions", "choices")
        for choice in answer["choices"]:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or not (
                isinstance(message.get("content"), str)
                or any(message.get(k) for k in ("tool_calls", "function_call", "refusal", "audio"))
            ):
                raise UpstreamProtocolError("upstream answer has a choice without a message (no content or tool calls)")
        return answer

    async def complete_text(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream legacy text completion (``POST {api_base}/completions``). Returns the
        upstream's ``text_completion`` dict. Raises like :meth:`complete`; UpstreamProtocolError
        when a choice has no ``text`` string."""
        answer = await self._post(target, body, "completions", "choices")
        if not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in answer["choices"]):
            raise UpstreamProtocolError("upstream answer has a choice without text")
        return answer

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """Embeddings (``POST {api_base}/embeddings``). Returns the upstream's ``list`` dict of
        embeddings. Raises like :meth:`complete`; UpstreamProtocolError without ``data`` or
        when an item's ``embedding`` is neither a flat list of numbers nor a base64 string
        (llama.cpp's server, for a model without pooling, answers one vector per token)."""
        data = await self._post(target, body, "embeddings", "data")
        for item in data["data"]:
            vector = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(vector, str):
                continue
            if not isinstance(vector, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
            ):
                raise UpstreamProtocolError("upstream embedding is not a flat list of numbers")
        return data

    async def _post(self, target: Target, body: dict[str, Any], path: str, required: str) -> dict[str, Any]:
        """POST a JSON request; the answer must be a JSON object with a non-empty list ``required``."""
        url, headers, payload = self._parts(target, body, path)
        try:
            async with self._http().post(
                url,
                data=payload,
                headers=headers,
                timeout=self._timeout(target),
                allow_redirects=False,
                proxy=self._proxy(url),
            ) as response:
                raw = await response.read()
                status = response.status
        except _AIOHTTP_CATCH as exc:
            raise map_aiohttp_error(exc, timeout_s=target.timeout_s) from exc
        if status >= 400:
            raise http_error(raw.decode("utf-8", "replace"), status)
        try:
            data = _loads(raw)
        except ValueError as exc:
            raise UpstreamProtocolError("upstream answered with a body that is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get(required), list) or not data[required]:
            raise UpstreamProtocolError(f"upstream answer has no {required}")
        return data

    def stream(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streamed chat completion: yields each ``chat.completion.chunk`` dict until [DONE].

        A stream that ends without ``data: [DONE]`` raises UpstreamConnectError; a line that is
        not JSON raises UpstreamProtocolError; no chunk within ``timeout_s`` raises
        UpstreamTimeout.
        """
        return self._stream(target, body, "chat/completions")

    def stream_text(self, target: Target, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streamed legacy text completion: yields ``text_completion`` chunk dicts until
        [DONE]. Raises like :meth:`stream`."""
        return self._stream(target, body, "completions")

    async def _stream(self, target: Target, body: dict[str, Any], path: str) -> AsyncIterator[dict[str, Any]]:
        url, headers, payload = self._parts(target, {**body, "stream": True}, path)
        try:
            response = await self._http().post(
                url,
                data=payload,
                headers=headers,
                timeout=self._timeout(target),
                allow_redirects=False,
                proxy=self._proxy(url),
            )
        except _AIOHTTP_CATCH as exc:
            raise map_aiohttp_error(exc, timeout_s=target.timeout_s) from exc
        done = False
        try:
            if response.status >= 400:
                raw = await response.read()
                raise http_error(raw.decode("utf-8", "replace"), response.status)
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = _loads(data)
                except ValueError as exc:
                    raise UpstreamProtocolError("upstream sent a malformed stream event") from exc
                if not isinstance(chunk, dict):
                    raise UpstreamProtocolError("upstream sent a stream event that is not an object")
                if "error" in chunk and "choices" not in chunk:
                    raise UpstreamHTTPError(f"upstream stream error: {chunk['error']}", status=502)
                yield chunk
            if not done:
                raise UpstreamConnectError("upstream closed the stream before [DONE]")
        except _AIOHTTP_CATCH as exc:
            raise map_aiohttp_error(exc, timeout_s=target.timeout_s) from exc
        finally:
            if done:
                response.release()  # back to the pool (the body ended with [DONE])
            else:
                response.close()  # unread data: never reuse the connection

    async def health(self, target: Target) -> None:
        """Health probe: ``GET {api_base}/models`` (OpenAI "List models"; served by vLLM,
        llama.cpp, Ollama, SGLang and the hosted APIs) with the deployment's key, within
        ``target.timeout_s``. Raises as :func:`probe_http` says."""
        headers = {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        await probe_http(self._client, f"{(target.api_base or '').rstrip('/')}/models", headers, target.timeout_s)

    async def aclose(self) -> None:
        """Close the pooled HTTP clients."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        await self._client.aclose()
