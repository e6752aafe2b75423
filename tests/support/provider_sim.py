"""Loopback HTTP simulator of upstream LLM providers, for tests and benchmarks.

:class:`ProviderSimulator` runs a real aiohttp server on ``127.0.0.1`` (free port)
in a background thread with its own asyncio event loop, so both synchronous
pytest code and async code can use it. It speaks:

* OpenAI ``POST /v1/chat/completions`` (JSON, and SSE when ``"stream": true``),
* OpenAI ``POST /v1/embeddings`` (deterministic 8-dimensional vectors),
* OpenAI ``POST /v1/completions`` (legacy text completions: one choice per prompt
  string, times ``n``; JSON, and SSE ``text_completion`` chunks when streamed),
* OpenAI ``GET /v1/models``,
* Anthropic ``POST /v1/messages`` (JSON, and the Anthropic SSE event sequence).

Normal answers are deterministic: the reply text is
``"simulated reply from {name}: " + <last user message text, first 40 chars>``.
Tokens are whitespace-separated words: prompt tokens count the words of every
message (plus the Anthropic ``system`` prompt), completion tokens the words of
the reply. ``max_tokens`` (or OpenAI ``max_completion_tokens``) truncates the
reply to that many words, and the finish reason becomes ``"length"`` (OpenAI) /
``"max_tokens"`` (Anthropic).

Chat completions honour ``n`` (n identical choices, non-stream), ``stop`` (the reply is
cut before the first stop string), JSON mode (``response_format`` json_object /
json_schema: the reply becomes ``{"reply": text}``) and ``tools``: unless
``tool_choice`` is ``"none"``, the answer is one call of the named (or first) tool with
arguments ``{"text": <last user text, first 40 chars>}`` and finish reason
``"tool_calls"`` (streamed as tool-call deltas).

Every request is recorded as a :class:`ReceivedRequest` (see
:attr:`ProviderSimulator.requests`), before any misbehaviour is applied; every streamed
chat completion, when its handler ends, as a :class:`StreamRecord` (see
:attr:`ProviderSimulator.streams`): how many content chunks it wrote and whether it
finished, so a test can see a client (the gateway) close a stream early.

Misbehaviours are set with :meth:`ProviderSimulator.behave`, which *replaces*
the current :class:`Behaviour`; they apply to the POST endpoints (chat
completions, messages, embeddings), not to ``GET /v1/models`` — the gateway's
health probe, which :meth:`~ProviderSimulator.fail_health` makes fail (503, a
delay or a dropped connection) and :meth:`~ProviderSimulator.heal` restores:

``delay_s``
    Sleep this long before doing anything else (including the other behaviours).
``close_connection``
    Accept the request, then drop the TCP connection without sending a single
    response byte (for streams too: before the first byte).
``status`` / ``body`` / ``headers``
    Answer this HTTP status with this JSON body (and extra headers, e.g.
    ``Retry-After``), also for stream requests. When only ``status`` is given the
    body is an error in the endpoint's dialect: OpenAI
    ``{"error": {"message": "simulated failure", "type": "server_error"}}`` or,
    on ``/v1/messages``, Anthropic ``{"type": "error", "error": {"type":
    "api_error", "message": "simulated failure"}}``.
    When only ``body`` is given the status is 200.
``stream_cut_after=N``
    Stream requests: send N content chunks (OpenAI content deltas / Anthropic
    ``content_block_delta`` events; fewer if the reply is shorter), then close
    the connection abruptly (no final chunk, no ``[DONE]`` / ``message_stop``).
``stream_stall_s``
    Stream requests: after N content chunks (``stream_cut_after`` if given,
    else 1) pause this many seconds, then carry on (or cut, if asked to).
``stream_chunk_delay_s``
    Stream requests: sleep this long before each content chunk (a slow model), so a
    client that goes away mid-answer leaves the rest ungenerated
    (:attr:`ProviderSimulator.streams` shows how far it got).
``stream_malformed_after=N``
    Stream requests: after N content chunks emit one malformed SSE line
    (``data: {not json``), then carry on normally.
``omit_usage``
    Never include ``usage`` (non-stream bodies, OpenAI usage chunk even when
    ``stream_options.include_usage`` is set, Anthropic stream events).
``times``
    Apply the behaviour to the next ``times`` requests only, then revert to
    normal answers. ``None`` means until :meth:`~ProviderSimulator.behave` or
    :meth:`~ProviderSimulator.reset` is called again.

The server does no per-request logging and sustains thousands of requests per
second; pass ``record_requests=False`` in long benchmarks to keep memory flat
(:attr:`ProviderSimulator.request_count` still counts).

Example::

    with ProviderSimulator(name="ext-a") as sim:
        sim.behave(status=503, times=1)
        httpx.post(sim.base_url + "/chat/completions", json={...})  # 503
        httpx.post(sim.base_url + "/chat/completions", json={...})  # 200
        assert len(sim.requests) == 2
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

from aiohttp import web

from tests.support.servers import AiohttpThread

__all__ = [
    "ANTHROPIC_ERROR_BODY",
    "DEFAULT_ERROR_BODY",
    "EMBEDDING_DIM",
    "Behaviour",
    "ProviderSimulator",
    "ReceivedRequest",
    "StreamRecord",
]

#: Error body of OpenAI-style endpoints when ``status`` is set without ``body``.
DEFAULT_ERROR_BODY: dict[str, Any] = {"error": {"message": "simulated failure", "type": "server_error"}}
#: Error body answered by ``/v1/messages`` when ``status`` is set without ``body``.
ANTHROPIC_ERROR_BODY: dict[str, Any] = {
    "type": "error",
    "error": {"type": "api_error", "message": "simulated failure"},
}
#: Dimension of the vectors returned by ``/v1/embeddings``.
EMBEDDING_DIM = 8

_SNIPPET_CHARS = 40
_MALFORMED_LINE = b"data: {not json\n\n"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the simulator received it.

    ``headers`` has lower-cased names; ``json`` is the parsed body, or ``None``
    when the body was empty or not valid JSON; ``body`` is the raw bytes.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    json: Any
    body: bytes
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StreamRecord:
    """How one streamed chat completion ended, as the simulator saw it: ``content_chunks``
    of the answer's ``total_chunks`` content chunks written; ``finished`` when the whole
    answer and ``data: [DONE]`` were written (False: the client went away, or the stream was
    cut on purpose)."""

    path: str
    content_chunks: int
    total_chunks: int
    finished: bool


@dataclass
class Behaviour:
    """How the simulator answers; see the module docstring for each field."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] | None = None
    delay_s: float | None = None
    close_connection: bool = False
    stream_cut_after: int | None = None
    stream_stall_s: float | None = None
    stream_malformed_after: int | None = None
    omit_usage: bool = False
    times: int | None = None
    stream_chunk_delay_s: float | None = None

    @property
    def overrides_response(self) -> bool:
        """True when the answer is a canned ``status``/``body`` response."""
        return self.status is not None or self.body is not None


_NORMAL = Behaviour()


class _Abort(Exception):
    """Raised internally when the client went away or the stream was cut."""


def _text_of(content: Any) -> str:
    """Text of an OpenAI/Anthropic message content (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return str(content)


def _count_words(text: str) -> int:
    return len(text.split())


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _prompt_words(messages: Sequence[Any], system: Any = None) -> int:
    total = _count_words(_text_of(system))
    for message in messages:
        if isinstance(message, dict):
            total += _count_words(_text_of(message.get("content")))
    return total


def _shape_chat_reply(reply: _Reply, payload: dict[str, Any]) -> None:
    """Apply a chat request's ``stop`` (cut before the first stop string) and JSON mode
    (``response_format`` json_object/json_schema: the reply as ``{"reply": text}``)."""
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str) and s]
    for s in stops:
        if s and s in reply.content:
            reply.content = reply.content[: reply.content.index(s)]
            reply.words = reply.content.split()
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        reply.content = json.dumps({"reply": reply.content})
        reply.words = reply.content.split()


def _tool_call(payload: dict[str, Any], user_text: str, call_id: str) -> dict[str, Any] | None:
    """A call of the requested tool (``tool_choice`` naming a function) or else the first of
    ``tools``, with arguments ``{"text": <user text, first 40 chars>}``; None without tools
    or with ``tool_choice: "none"``."""
    tools = payload.get("tools")
    choice = payload.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    name = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
    if not isinstance(name, str):
        first = tools[0] if isinstance(tools[0], dict) else {}
        name = (first.get("function") or {}).get("name") or "tool"
    arguments = json.dumps({"text": user_text[:_SNIPPET_CHARS]})
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(digest[i] - 127.5) / 127.5 for i in range(EMBEDDING_DIM)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_dumps(obj),
        status=status,
        headers=headers,
        content_type="application/json",
    )


@dataclass
class _Reply:
    """A computed deterministic reply."""

    content: str
    words: list[str]
    truncated: bool
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.words)


class ProviderSimulator:
    """A fake OpenAI/Anthropic provider on loopback; see the module docstring.

    Args:
        name: Appears in every reply ("simulated reply from {name}: ...").
        models: Model ids listed by ``GET /v1/models``.
        record_requests: Keep a :class:`ReceivedRequest` per request.
        shutdown_timeout_s: How long :meth:`stop` waits for in-flight handlers.
    """

    def __init__(
        self,
        name: str = "sim",
        *,
        models: Sequence[str] = ("sim-model",),
        record_requests: bool = True,
        shutdown_timeout_s: float = 0.5,
    ) -> None:
        self.name = name
        self.models = list(models)
        self.record_requests = record_requests
        self._shutdown_timeout_s = shutdown_timeout_s
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._streams: list[StreamRecord] = []
        self._request_count = 0
        self._behaviour: Behaviour | None = None
        self._models_behaviour: Behaviour | None = None
        self.health_probes = 0
        """``GET /v1/models`` requests received (what gateway health checks call)."""
        self._remaining: int | None = None
        self._ids = itertools.count(1)
        self._server = AiohttpThread(self._app, name=f"provider-sim-{name}", shutdown_timeout_s=shutdown_timeout_s)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start serving on 127.0.0.1 at a free port; returns ``self``."""
        self._server.start()
        return self

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._wrap(self._chat))
        app.router.add_post("/v1/messages", self._wrap(self._messages))
        app.router.add_post("/v1/embeddings", self._wrap(self._embeddings))
        app.router.add_post("/v1/completions", self._wrap(self._completions))
        app.router.add_get("/v1/models", self._models)
        return app

    def stop(self) -> None:
        """Stop the server and its thread (idempotent)."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        """The bound TCP port (only while started)."""
        if self._server.port is None:
            raise RuntimeError("ProviderSimulator is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """API base, ``url + "/v1"`` (what OpenAI/Anthropic SDK clients expect)."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Snapshot (a copy) of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> ReceivedRequest | None:
        """The most recent recorded request, or ``None``."""
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def streams(self) -> list[StreamRecord]:
        """Streamed chat completions whose handler has ended since start/reset, oldest first."""
        with self._lock:
            return list(self._streams)

    @property
    def request_count(self) -> int:
        """Number of requests received since start/reset (counted even unrecorded)."""
        with self._lock:
            return self._request_count

    @property
    def behaviour(self) -> Behaviour | None:
        """The active behaviour, or ``None`` when answering normally."""
        with self._lock:
            return self._behaviour

    def behave(
        self,
        status: int | None = None,
        body: Any = None,
        delay_s: float | None = None,
        close_connection: bool = False,
        stream_cut_after: int | None = None,
        stream_stall_s: float | None = None,
        stream_malformed_after: int | None = None,
        omit_usage: bool = False,
        times: int | None = None,
        headers: dict[str, str] | None = None,
        stream_chunk_delay_s: float | None = None,
    ) -> Behaviour:
        """Replace the current behaviour; returns the new :class:`Behaviour`."""
        behaviour = Behaviour(
            status=status,
            body=body,
            headers=headers,
            delay_s=delay_s,
            close_connection=close_connection,
            stream_cut_after=stream_cut_after,
            stream_stall_s=stream_stall_s,
            stream_malformed_after=stream_malformed_after,
            omit_usage=omit_usage,
            times=times,
            stream_chunk_delay_s=stream_chunk_delay_s,
        )
        self.set_behaviour(behaviour)
        return behaviour

    def set_behaviour(self, behaviour: Behaviour | None) -> None:
        """Replace the current behaviour with ``behaviour`` (``None``: normal)."""
        with self._lock:
            if behaviour is not None and behaviour.times is not None and behaviour.times <= 0:
                behaviour = None
            self._behaviour = replace(behaviour) if behaviour is not None else None
            self._remaining = behaviour.times if behaviour is not None else None

    def clear_behaviour(self) -> None:
        """Go back to normal answers (recorded requests are kept)."""
        self.set_behaviour(None)

    def fail_health(
        self, status: int | None = 503, *, delay_s: float | None = None, close_connection: bool = False
    ) -> None:
        """Make ``GET /v1/models`` (a gateway's health probe) fail: answer ``status`` (None:
        no canned answer), after ``delay_s`` seconds, or drop the connection. The POST
        endpoints are unaffected. :meth:`heal` (or :meth:`reset`) undoes it."""
        with self._lock:
            self._models_behaviour = Behaviour(status=status, delay_s=delay_s, close_connection=close_connection)

    def heal(self) -> None:
        """``GET /v1/models`` answers normally again."""
        with self._lock:
            self._models_behaviour = None

    def reset(self) -> None:
        """Forget recorded requests and the request count, and answer normally."""
        with self._lock:
            self._models_behaviour = None
            self.health_probes = 0
            self._requests.clear()
            self._streams.clear()
            self._request_count = 0
            self._behaviour = None
            self._remaining = None

    def reply_text(self, user_text: str) -> str:
        """The normal (untruncated) reply content for a last user message text."""
        return f"simulated reply from {self.name}: {user_text[:_SNIPPET_CHARS]}"

    # ------------------------------------------------------------------ internals

    def _take_behaviour(self) -> Behaviour:
        with self._lock:
            behaviour = self._behaviour
            if behaviour is None:
                return _NORMAL
            if self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self._behaviour = None
                    self._remaining = None
            return behaviour

    def _wrap(
        self,
        handler: Callable[[web.Request, Any, Behaviour], Awaitable[web.StreamResponse]],
    ) -> Handler:
        """Record the request, apply delay/close/status behaviours, then dispatch."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            self._record(request, raw, payload)
            behaviour = self._take_behaviour()
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)
            if behaviour.close_connection:
                return self._drop(request)
            if behaviour.overrides_response:
                body = behaviour.body
                if body is None:
                    body = ANTHROPIC_ERROR_BODY if request.path == "/v1/messages" else DEFAULT_ERROR_BODY
                return _json_response(body, behaviour.status or 200, behaviour.headers)
            return await handler(request, payload, behaviour)

        return wrapped

    def _record(self, request: web.Request, raw: bytes, payload: Any) -> None:
        if not self.record_requests:
            with self._lock:
                self._request_count += 1
            return
        entry = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=payload,
            body=raw,
        )
        with self._lock:
            self._request_count += 1
            self._requests.append(entry)

    @staticmethod
    def _drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
        """Close the TCP connection; aiohttp then silently fails to write anything."""
        request.protocol.force_close()
        transport = request.transport
        if transport is not None:
            transport.close()
        return response if response is not None else web.Response()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}sim{next(self._ids):012d}"

    def _compute_reply(self, messages: Sequence[Any], max_tokens: Any, system: Any = None) -> _Reply:
        content = self.reply_text(_last_user_text(messages))
        words = content.split()
        truncated = False
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 <= max_tokens < len(words):
            words = words[:max_tokens]
            content = " ".join(words)
            truncated = True
        return _Reply(content, words, truncated, _prompt_words(messages, system))

    @staticmethod
    def _stream_points(behaviour: Behaviour, n_words: int) -> tuple[int | None, int | None, int | None]:
        """Effective (cut, stall, malformed) chunk counts, clamped to reply length."""

        def clamp(value: int | None) -> int | None:
            return None if value is None else max(0, min(value, n_words))

        cut = clamp(behaviour.stream_cut_after)
        stall = None
        if behaviour.stream_stall_s:
            stall = clamp(behaviour.stream_cut_after if behaviour.stream_cut_after is not None else 1)
        malformed = clamp(behaviour.stream_malformed_after)
        return cut, stall, malformed

    async def _checkpoint(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        behaviour: Behaviour,
        points: tuple[int | None, int | None, int | None],
        count: int,
        malformed: bytes,
    ) -> None:
        cut, stall, bad = points
        if bad == count:
            await self._write(resp, malformed)
        if stall == count and behaviour.stream_stall_s:
            await asyncio.sleep(behaviour.stream_stall_s)
        if cut == count:
            self._drop(request)
            raise _Abort

    @staticmethod
    async def _write(resp: web.StreamResponse, data: bytes) -> None:
        try:
            await resp.write(data)
        except (ConnectionError, RuntimeError) as exc:
            raise _Abort from exc

    # ------------------------------------------------------------------ OpenAI

    async def _chat(self, request: web.Request, payload: Any, behaviour: Behaviour) -> web.StreamResponse:
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return _json_response(
                {
                    "error": {
                        "message": "body must be a JSON object with a 'messages' list",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
        reply = self._compute_reply(payload["messages"], max_tokens)
        _shape_chat_reply(reply, payload)
        tool_call = _tool_call(payload, _last_user_text(payload["messages"]), self._next_id("call_"))
        n = payload.get("n") if isinstance(payload.get("n"), int) and payload.get("n", 0) > 0 else 1
        model = payload.get("model", "")
        finish_reason = "tool_calls" if tool_call else "length" if reply.truncated else "stop"
        completion_id = self._next_id("chatcmpl-")
        created = int(time.time())
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        if not payload.get("stream"):
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": index,
                        "message": (
                            {"role": "assistant", "content": None, "tool_calls": [tool_call]}
                            if tool_call
                            else {"role": "assistant", "content": reply.content}
                        ),
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                    for index in range(n)
                ],
            }
            if not behaviour.omit_usage:
                body["usage"] = usage
            return _json_response(body)

        stream_options = payload.get("stream_options")
        include_usage = (
            isinstance(stream_options, dict) and bool(stream_options.get("include_usage")) and not behaviour.omit_usage
        )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
            }
            if include_usage:
                obj["usage"] = None
            return b"data: " + _dumps(obj) + b"\n\n"

        resp = web.StreamResponse(headers=_SSE_HEADERS)
        words = reply.words if not tool_call else []
        sent, finished = 0, False
        try:
            await resp.prepare(request)
            await self._write(resp, chunk({"role": "assistant", "content": ""}))
            points = self._stream_points(behaviour, len(reply.words))
            await self._checkpoint(request, resp, behaviour, points, 0, _MALFORMED_LINE)
            if tool_call:
                function = tool_call["function"]
                head = {**tool_call, "index": 0, "function": {"name": function["name"], "arguments": ""}}
                await self._write(resp, chunk({"tool_calls": [head]}))
                args = {"index": 0, "function": {"arguments": function["arguments"]}}
                await self._write(resp, chunk({"tool_calls": [args]}))
            last = len(reply.words) - 1
            for i, word in enumerate(words):
                if behaviour.stream_chunk_delay_s:
                    await asyncio.sleep(behaviour.stream_chunk_delay_s)
                await self._write(resp, chunk({"content": word if i == last else word + " "}))
                sent += 1
                await self._checkpoint(request, resp, behaviour, points, i + 1, _MALFORMED_LINE)
            await self._write(resp, chunk({}, finish_reason))
            if include_usage:
                usage_chunk = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                await self._write(resp, b"data: " + _dumps(usage_chunk) + b"\n\n")
            await self._write(resp, b"data: [DONE]\n\n")
            finished = True
        except (_Abort, ConnectionError):
            pass
        finally:
            with self._lock:
                self._streams.append(StreamRecord(request.path, sent, len(words), finished))
        return resp

    async def _completions(self, request: web.Request, payload: Any, behaviour: Behaviour) -> web.StreamResponse:
        """Legacy ``/v1/completions``: one choice per prompt (times ``n``), the reply to the
        prompt's text; SSE ``text_completion`` chunks when streamed."""
        prompt = payload.get("prompt") if isinstance(payload, dict) else None
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
            return _json_response(
                {"error": {"message": "'prompt' is required", "type": "invalid_request_error"}},
                400,
            )
        prompts = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else list(prompt)
        n = payload.get("n") if isinstance(payload.get("n"), int) and payload.get("n", 0) > 0 else 1
        replies = [
            self._compute_reply([{"role": "user", "content": p if isinstance(p, str) else json.dumps(p)}],
                                payload.get("max_tokens"))
            for p in prompts
        ]  # fmt: skip
        completion_id = self._next_id("cmpl-")
        created = int(time.time())
        model = payload.get("model", "")
        prompt_tokens = sum(r.prompt_tokens for r in replies)
        completion_tokens = sum(r.completion_tokens for r in replies) * n
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        choices = [(i * n + j, reply) for i, reply in enumerate(replies) for j in range(n)]
        if not payload.get("stream"):
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": index,
                        "text": reply.content,
                        "logprobs": None,
                        "finish_reason": "length" if reply.truncated else "stop",
                    }
                    for index, reply in choices
                ],
            }
            if not behaviour.omit_usage:
                body["usage"] = usage
            return _json_response(body)
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage")) and not behaviour.omit_usage

        def chunk(index: int, text: str, finish: str | None = None) -> bytes:
            obj = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}],
            }
            return b"data: " + _dumps(obj) + b"\n\n"

        resp = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await resp.prepare(request)
            words = replies[0].words
            points = self._stream_points(behaviour, len(words))
            await self._checkpoint(request, resp, behaviour, points, 0, _MALFORMED_LINE)
            for index, reply in choices:
                last = len(reply.words) - 1
                for i, word in enumerate(reply.words):
                    await self._write(resp, chunk(index, word if i == last else word + " "))
                    if index == 0:
                        await self._checkpoint(request, resp, behaviour, points, i + 1, _MALFORMED_LINE)
                await self._write(resp, chunk(index, "", "length" if reply.truncated else "stop"))
            if include_usage:
                usage_chunk = {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                await self._write(resp, b"data: " + _dumps(usage_chunk) + b"\n\n")
            await self._write(resp, b"data: [DONE]\n\n")
        except (_Abort, ConnectionError):
            pass
        return resp

    async def _embeddings(self, request: web.Request, payload: Any, behaviour: Behaviour) -> web.StreamResponse:
        raw_input = payload.get("input") if isinstance(payload, dict) else None
        if raw_input is None:
            return _json_response(
                {
                    "error": {
                        "message": "'input' is required",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        if isinstance(raw_input, str) or (isinstance(raw_input, list) and raw_input and isinstance(raw_input[0], int)):
            inputs: list[Any] = [raw_input]
        else:
            inputs = list(raw_input) if isinstance(raw_input, list) else [raw_input]
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else json.dumps(item)
            tokens += len(item) if isinstance(item, list) else _count_words(text)
            data.append({"object": "embedding", "index": index, "embedding": _embedding(text)})
        body: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": payload.get("model", ""),
        }
        if not behaviour.omit_usage:
            body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json_response(body)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, await request.read(), None)
        with self._lock:
            self.health_probes += 1
            behaviour = self._models_behaviour
        if behaviour is not None:
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)
            if behaviour.close_connection:
                return self._drop(request)
            if behaviour.overrides_response:
                body = DEFAULT_ERROR_BODY if behaviour.body is None else behaviour.body
                return _json_response(body, behaviour.status or 200, behaviour.headers)
        created = 1_700_000_000
        return _json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": m,
                        "object": "model",
                        "created": created,
                        "owned_by": self.name,
                    }
                    for m in self.models
                ],
            }
        )

    # ------------------------------------------------------------------ Anthropic

    async def _messages(self, request: web.Request, payload: Any, behaviour: Behaviour) -> web.StreamResponse:
        def invalid(message: str) -> web.Response:
            return _json_response(
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": message},
                },
                400,
            )

        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return invalid("messages: field required")
        max_tokens = payload.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return invalid("max_tokens: field required")
        reply = self._compute_reply(payload["messages"], max_tokens, payload.get("system"))
        model = payload.get("model", "")
        stop_reason = "max_tokens" if reply.truncated else "end_turn"
        message_id = self._next_id("msg_")
        if not payload.get("stream"):
            body: dict[str, Any] = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": reply.content}],
                "model": model,
                "stop_reason": stop_reason,
                "stop_sequence": None,
            }
            if not behaviour.omit_usage:
                body["usage"] = {
                    "input_tokens": reply.prompt_tokens,
                    "output_tokens": reply.completion_tokens,
                }
            return _json_response(body)

        def event(kind: str, data: dict[str, Any]) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

        start_message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
        }
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        }
        if not behaviour.omit_usage:
            start_message["usage"] = {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": 1,
            }
            message_delta["usage"] = {"output_tokens": reply.completion_tokens}
        malformed = b"event: content_block_delta\n" + _MALFORMED_LINE

        resp = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await resp.prepare(request)
            await self._write(
                resp,
                event("message_start", {"type": "message_start", "message": start_message}),
            )
            await self._write(
                resp,
                event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
            )
            points = self._stream_points(behaviour, len(reply.words))
            await self._checkpoint(request, resp, behaviour, points, 0, malformed)
            last = len(reply.words) - 1
            for i, word in enumerate(reply.words):
                delta = {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {
                        "type": "text_delta",
                        "text": word if i == last else word + " ",
                    },
                }
                await self._write(resp, event("content_block_delta", delta))
                await self._checkpoint(request, resp, behaviour, points, i + 1, malformed)
            await self._write(
                resp,
                event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            )
            await self._write(resp, event("message_delta", message_delta))
            await self._write(resp, event("message_stop", {"type": "message_stop"}))
        except (_Abort, ConnectionError):
            pass
        return resp
