"""Anthropic Messages API (``POST /v1/messages``) in and out, translated to a chat completion
(Anthropic API reference, "Messages", "Streaming Messages", "Errors").

Request: ``model``, ``max_tokens`` (required), ``messages`` (``user``/``assistant``; content a
string or blocks: ``text``, ``tool_use``, ``tool_result``), ``system`` (string or text blocks),
``stop_sequences``, ``temperature``, ``top_p``, ``tools`` (``input_schema``), ``tool_choice``,
``metadata.user_id``. Answer: a ``message`` with ``text`` / ``tool_use`` blocks and
``stop_reason``; streams as ``message_start``, ``content_block_start``, ``ping``,
``content_block_delta`` (``text_delta`` / ``input_json_delta``), ``content_block_stop``,
``message_delta`` and ``message_stop``; errors as ``{"type": "error", "error": {"type",
"message"}}`` — also as the terminal ``error`` event of a stream that fails mid-way.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import GatewayError, InvalidRequest
from gateway.schemas import MAX_TOKENS_LIMIT
from gateway.wire import Call, UnknownParams, known_fields, sse

__all__ = ["MESSAGES", "MESSAGES_PARAMS", "MessagesDialect", "anthropic_error_type"]

MESSAGES_PARAMS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p",
        "top_k", "stream", "tools", "tool_choice", "metadata", "service_tier", "thinking",
    }
)  # fmt: skip
"""Messages request fields the gateway reads; others are dropped or rejected."""

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}


def anthropic_error_type(error: GatewayError) -> str:
    """Anthropic's error ``type`` for a gateway error, by HTTP status."""
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        405: "invalid_request_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }.get(error.status, "invalid_request_error" if 400 <= error.status < 500 else "api_error")


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _block_text(block: Any, param: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise _bad(param, "must be a text block ({'type': 'text', 'text': ...})")
    return str(block["text"])


def _tool_result_text(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_block_text(b, f"{param}[{i}]") for i, b in enumerate(content))
    raise _bad(param, "must be a string or an array of text blocks")


def _message(message: Any, i: int) -> list[dict[str, Any]]:
    """Chat messages for one Anthropic message (tool results become ``tool`` messages)."""
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _bad(param, "must be an object with role and content")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"{param}.role", "must be 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list) or not content:
        raise _bad(f"{param}.content", "must be a string or a non-empty array of content blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_block_text(block, where))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(where, "tool_use needs string id and name")
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
                }
            )
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(f"{where}.tool_use_id", "must be a string")
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": _tool_result_text(block.get("content"), f"{where}.content"),
                }
            )
        else:
            raise _bad(f"{where}.type", f"unsupported content block {kind!r} in a {role} message")
    out: list[dict[str, Any]] = list(results)
    if calls:
        out.append({"role": "assistant", "content": "".join(texts), "tool_calls": calls})
    elif texts:
        out.append({"role": role, "content": "".join(texts)})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools[{i}].name", "must be a non-empty string")
        if tool.get("type") not in (None, "custom"):
            raise _bad(f"tools[{i}].type", f"unsupported tool type {tool.get('type')!r}; only custom tools")
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice.type", "must be auto, any, tool or none")
    if choice["type"] == "tool":
        if not isinstance(choice.get("name"), str):
            raise _bad("tool_choice.name", "must be a string")
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice["type"]]


class MessagesDialect:
    """``POST /v1/messages`` (Anthropic wire format) ⇄ chat completions."""

    endpoint = "messages"

    def parse(self, data: dict[str, Any], *, unknown: UnknownParams) -> Call:
        """The chat Call for a Messages request. Raises InvalidRequest naming the field."""
        kept, dropped = known_fields(data, MESSAGES_PARAMS, unknown)
        model = kept.get("model")
        if not isinstance(model, str) or not 1 <= len(model) <= 256:
            raise _bad("model", "must be a string of 1 to 256 characters")
        max_tokens = kept.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise _bad("max_tokens", "required: a positive integer")
        stream = kept.get("stream", False)
        if not isinstance(stream, bool):
            raise _bad("stream", "must be a boolean")
        raw_messages = kept.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise _bad("messages", "required: a non-empty array of messages")
        messages: list[dict[str, Any]] = []
        system = kept.get("system")
        if system is not None:
            if isinstance(system, list):
                system = "".join(_block_text(b, f"system[{i}]") for i, b in enumerate(system))
            if not isinstance(system, str):
                raise _bad("system", "must be a string or an array of text blocks")
            messages.append({"role": "system", "content": system})
        for i, message in enumerate(raw_messages):
            messages.extend(_message(message, i))
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
        for name, high in (("temperature", 1), ("top_p", 1)):
            value = kept.get(name)
            if value is not None:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= high:
                    raise _bad(name, f"must be a number between 0 and {high}")
                body[name] = value
        stop = kept.get("stop_sequences")
        if stop is not None:
            if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
                raise _bad("stop_sequences", "must be an array of non-empty strings")
            if stop:
                body["stop"] = stop[:4]
        needs = ["stream"] if stream else []
        if kept.get("tools"):
            body["tools"] = _tools(kept["tools"])
            needs.append("tools")
        if kept.get("tool_choice") is not None:
            body["tool_choice"] = _tool_choice(kept["tool_choice"])
        metadata = kept.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
            body["user"] = metadata["user_id"]
        return Call(
            operation="chat",
            model=model,
            body=body,
            prompt=messages,
            input_chars=0,
            input_items=len(messages),
            stream=stream,
            include_usage=True,
            max_output_tokens=max_tokens,
            needs=tuple(needs),
            dropped=dropped,
            extra={"id": f"msg_{uuid.uuid4().hex[:24]}"},
        )

    def response(self, answer: dict[str, Any], call: Call, usage: tuple[int, int]) -> dict[str, Any]:
        """An Anthropic ``message``: text and tool_use blocks, stop_reason, usage."""
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        content: list[dict[str, Any]] = []
        if isinstance(message.get("content"), str) and message["content"]:
            content.append({"type": "text", "text": message["content"]})
        for tc in message.get("tool_calls") or []:
            function = tc.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {"_raw": function.get("arguments")}
            content.append(
                {
                    "type": "tool_use",
                    "id": tc.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": function.get("name", ""),
                    "input": arguments if isinstance(arguments, dict) else {"value": arguments},
                }
            )
        if not content:
            content.append({"type": "text", "text": ""})
        return {
            "id": call.extra["id"],
            "type": "message",
            "role": "assistant",
            "model": str(answer.get("model") or call.model),
            "content": content,
            "stop_reason": _STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }

    async def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """The Anthropic event stream for OpenAI chunks (see the module docstring)."""
        started = False
        block = -1  # index of the open content block, -1 when none
        block_kind = ""
        tool_blocks: dict[int, int] = {}  # OpenAI tool-call index → Anthropic block index
        finish: str | None = None
        usage: dict[str, Any] = {}
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for chunk in events:
                if "error" in chunk and "choices" not in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    payload = {"type": "error", "error": {"type": "api_error", "message": err.get("message", "")}}
                    yield sse(payload, event="error")
                    return
                if not started:
                    started = True
                    start = {
                        "id": call.extra["id"], "type": "message", "role": "assistant", "content": [],
                        "model": str(chunk.get("model") or call.model), "stop_reason": None,
                        "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
                    }  # fmt: skip
                    yield sse({"type": "message_start", "message": start}, event="message_start")
                    yield sse({"type": "ping"}, event="ping")
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if text:
                        if block_kind != "text":
                            if block >= 0:
                                yield sse({"type": "content_block_stop", "index": block}, event="content_block_stop")
                            block, block_kind = block + 1, "text"
                            yield sse(
                                {
                                    "type": "content_block_start",
                                    "index": block,
                                    "content_block": {"type": "text", "text": ""},
                                },
                                event="content_block_start",
                            )
                        yield sse(
                            {
                                "type": "content_block_delta",
                                "index": block,
                                "delta": {"type": "text_delta", "text": text},
                            },
                            event="content_block_delta",
                        )
                    for tc in delta.get("tool_calls") or []:
                        n = tc.get("index", 0)
                        function = tc.get("function") or {}
                        if n not in tool_blocks:
                            if block >= 0:
                                yield sse({"type": "content_block_stop", "index": block}, event="content_block_stop")
                            block, block_kind = block + 1, f"tool{n}"
                            tool_blocks[n] = block
                            tool_use = {
                                "type": "tool_use",
                                "id": tc.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                                "name": function.get("name", ""),
                                "input": {},
                            }
                            yield sse(
                                {"type": "content_block_start", "index": block, "content_block": tool_use},
                                event="content_block_start",
                            )
                        if function.get("arguments"):
                            yield sse(
                                {
                                    "type": "content_block_delta",
                                    "index": tool_blocks[n],
                                    "delta": {"type": "input_json_delta", "partial_json": function["arguments"]},
                                },
                                event="content_block_delta",
                            )
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        if not started:
            start = {
                "id": call.extra["id"], "type": "message", "role": "assistant", "content": [],
                "model": call.model, "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }  # fmt: skip
            yield sse({"type": "message_start", "message": start}, event="message_start")
        if block < 0:
            block = 0
            yield sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                event="content_block_start",
            )
        yield sse({"type": "content_block_stop", "index": block}, event="content_block_stop")
        delta_usage = {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        }
        yield sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP.get(finish or "stop", "end_turn"), "stop_sequence": None},
                "usage": delta_usage,
            },
            event="message_delta",
        )
        yield sse({"type": "message_stop"}, event="message_stop")

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """Anthropic error shape ``{"type": "error", "error": {"type", "message", ...}}``; the
        field at fault leads the message (Anthropic's shape has no ``param``), and the gateway's
        extra details (a denial's ``reasons``, a limit's ``limit`` and ``retry_after_s``) ride
        along as in the OpenAI shape."""
        message = error.message
        if error.param and error.param != "body" and not message.startswith(error.param):
            message = f"{error.param}: {message}"
        extra = {k: v for k, v in error.body()["error"].items() if k not in ("message", "type", "param", "code")}
        return {"type": "error", "error": {"type": anthropic_error_type(error), "message": message, **extra}}


MESSAGES = MessagesDialect()
