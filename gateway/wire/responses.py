"""OpenAI Responses API (``POST /v1/responses``), text input and output, translated to a
chat completion and back (OpenAI API reference, "Responses": create; "Streaming events").

Input: ``input`` as a string or a list of message items (``{"role", "content"}`` with a string
or ``input_text`` / ``output_text`` parts, optionally ``"type": "message"``), ``instructions``
(a system message), ``max_output_tokens``, ``temperature``, ``top_p``, ``text.format``
(``text`` / ``json_object`` / ``json_schema`` → chat ``response_format``), function ``tools``,
``tool_choice``, ``user``/``metadata``; the tool loop's ``function_call`` and
``function_call_output`` items (→ an assistant tool call and a tool message). Stateful features
(``previous_response_id``, ``conversation``, ``background``) and non-text items are rejected
with 400 naming the field: the gateway keeps no conversation state.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import GatewayError, InvalidRequest
from gateway.schemas import MAX_TOKENS_LIMIT
from gateway.wire import Call, UnknownParams, known_fields, sse

__all__ = ["RESPONSES", "RESPONSES_PARAMS", "ResponsesDialect"]

RESPONSES_PARAMS = frozenset(
    {
        "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream",
        "text", "tools", "tool_choice", "parallel_tool_calls", "user", "metadata", "store",
        "previous_response_id", "conversation", "background", "include", "truncation",
        "reasoning", "service_tier", "stream_options", "safety_identifier", "prompt_cache_key",
    }
)  # fmt: skip
"""Responses request fields the gateway reads; others are dropped or rejected."""

_STATEFUL = ("previous_response_id", "conversation", "background")
_ROLES = ("user", "assistant", "system", "developer")
_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _text_of_item(item: Any, i: int) -> tuple[str, str]:
    """(role, text) of one input message item."""
    param = f"input[{i}]"
    if not isinstance(item, dict):
        raise _bad(param, "must be an object with role and content")
    kind = item.get("type", "message")
    if kind != "message":
        raise _bad(f"{param}.type", f"unsupported input item type {kind!r}; only text messages are supported")
    role = item.get("role")
    if role not in _ROLES:
        raise _bad(f"{param}.role", f"must be one of {', '.join(_ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        return role, content
    if not isinstance(content, list) or not content:
        raise _bad(f"{param}.content", "must be a string or a non-empty array of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, dict) else None
            raise _bad(f"{param}.content[{j}]", f"unsupported content part {kind!r}; only text parts are supported")
        if not isinstance(part.get("text"), str):
            raise _bad(f"{param}.content[{j}].text", "must be a string")
        texts.append(part["text"])
    return role, "".join(texts)


def _tool_item(item: dict[str, Any], i: int, messages: list[dict[str, Any]]) -> None:
    """A ``function_call`` item (the model's earlier call) → a tool call on the assistant
    message before it (or a new one with content ""); a ``function_call_output`` item →
    a tool message."""
    param = f"input[{i}]"
    if not isinstance(item.get("call_id"), str) or not item["call_id"]:
        raise _bad(f"{param}.call_id", "must be a non-empty string")
    if item["type"] == "function_call_output":
        if not isinstance(item.get("output"), str):
            raise _bad(f"{param}.output", "must be a string")
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        return
    if not isinstance(item.get("name"), str) or not isinstance(item.get("arguments"), str):
        raise _bad(param, "a function_call needs string name and arguments")
    call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})


def _tool_choice(choice: Any) -> Any:
    """Responses ``tool_choice`` → chat: the strings as they are, ``{"type": "function",
    "name"}`` → ``{"type": "function", "function": {"name"}}``."""
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", "must be auto, none, required or {'type': 'function', 'name': ...}")


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Responses function tools (flat) → chat tools (nested ``function``)."""
    if not isinstance(tools, list):
        raise _bad("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(f"tools[{i}].type", f"unsupported tool type {kind!r}; only function tools are supported")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools[{i}].name", "must be a non-empty string")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        out.append({"type": "function", "function": function})
    return out


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("text", "must be an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("text.format.type", "must be text, json_object or json_schema")
    if fmt["type"] == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format.schema", "must be an object")
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}


class ResponsesDialect:
    """``POST /v1/responses`` ⇄ chat completions."""

    endpoint = "responses"

    def parse(self, data: dict[str, Any], *, unknown: UnknownParams) -> Call:
        """The chat Call for a Responses request. Raises InvalidRequest naming the field."""
        kept, dropped = known_fields(data, RESPONSES_PARAMS, unknown)
        model = kept.get("model")
        if not isinstance(model, str) or not 1 <= len(model) <= 256:
            raise _bad("model", "must be a string of 1 to 256 characters")
        for name in _STATEFUL:
            if kept.get(name) not in (None, False):
                raise _bad(name, "not supported: the gateway keeps no conversation state; send the full input")
        stream = kept.get("stream", False)
        if not isinstance(stream, bool):
            raise _bad("stream", "must be a boolean")
        messages: list[dict[str, Any]] = []
        instructions = kept.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise _bad("instructions", "must be a string")
            messages.append({"role": "system", "content": instructions})
        raw_input = kept.get("input")
        if isinstance(raw_input, str):
            messages.append({"role": "user", "content": raw_input})
        elif isinstance(raw_input, list) and raw_input:
            for i, item in enumerate(raw_input):
                kind = item.get("type") if isinstance(item, dict) else None
                if kind in ("function_call", "function_call_output"):
                    _tool_item(item, i, messages)
                    continue
                role, text = _text_of_item(item, i)
                messages.append({"role": role, "content": text})
        else:
            raise _bad("input", "required: a string or a non-empty array of message items")
        body: dict[str, Any] = {"messages": messages}
        max_out = kept.get("max_output_tokens")
        if max_out is not None:
            if not isinstance(max_out, int) or isinstance(max_out, bool) or not 1 <= max_out <= MAX_TOKENS_LIMIT:
                raise _bad("max_output_tokens", "must be a positive integer")
            body["max_tokens"] = max_out
        for name, high in (("temperature", 2), ("top_p", 1)):
            value = kept.get(name)
            if value is not None:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= high:
                    raise _bad(name, f"must be a number between 0 and {high}")
                body[name] = value
        response_format = _response_format(kept.get("text"))
        if response_format is not None and response_format["type"] != "text":
            body["response_format"] = response_format
        needs = ["stream"] if stream else []
        if kept.get("tools"):
            body["tools"] = _tools(kept["tools"])
            needs.append("tools")
            if "tool_choice" in kept:
                body["tool_choice"] = _tool_choice(kept["tool_choice"])
            if "parallel_tool_calls" in kept:
                body["parallel_tool_calls"] = kept["parallel_tool_calls"]
        if response_format is not None and response_format["type"] != "text":
            needs.append("json")
        if isinstance(kept.get("user"), str):
            body["user"] = kept["user"]
        return Call(
            operation="chat",
            model=model,
            body=body,
            prompt=messages,
            input_chars=0,
            input_items=len(messages),
            stream=stream,
            include_usage=True,
            max_output_tokens=max_out,
            needs=tuple(needs),
            dropped=dropped,
            extra={
                "id": f"resp_{uuid.uuid4().hex}",
                "msg_id": f"msg_{uuid.uuid4().hex}",
                "created_at": int(time.time()),
                "echo": {
                    "instructions": instructions,
                    "max_output_tokens": max_out,
                    "temperature": kept.get("temperature", 1.0),
                    "top_p": kept.get("top_p", 1.0),
                    "metadata": kept.get("metadata") if isinstance(kept.get("metadata"), dict) else {},
                    "text": {"format": (kept.get("text") or {}).get("format") or {"type": "text"}},
                    "tools": kept.get("tools") or [],
                    "tool_choice": kept.get("tool_choice", "auto"),
                    "parallel_tool_calls": kept.get("parallel_tool_calls", True),
                },
            },
        )

    @staticmethod
    def _envelope(call: Call, model: str, status: str) -> dict[str, Any]:
        return {
            "id": call.extra["id"],
            "object": "response",
            "created_at": call.extra["created_at"],
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": model,
            "output": [],
            "usage": None,
            **call.extra["echo"],
        }

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict[str, Any]:
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }

    def response(self, answer: dict[str, Any], call: Call, usage: tuple[int, int]) -> dict[str, Any]:
        """A ``response`` object: one assistant message with the text, function calls for the
        tool calls; status ``incomplete`` when the output cap cut it."""
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        out = self._envelope(call, str(answer.get("model") or call.model), "completed")
        output: list[dict[str, Any]] = []
        text = message.get("content")
        if isinstance(text, str) and (text or not message.get("tool_calls")):
            output.append(self._message_item(call, text, "completed"))
        for tc in message.get("tool_calls") or []:
            function = tc.get("function") or {}
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex}",
                    "call_id": tc.get("id") or f"call_{uuid.uuid4().hex}",
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments", ""),
                    "status": "completed",
                }
            )
        out["output"] = output
        reason = _FINISH.get(choice.get("finish_reason") or "")
        if reason:
            out["status"] = "incomplete"
            out["incomplete_details"] = {"reason": reason}
        out["usage"] = self._usage(*usage)
        return out

    @staticmethod
    def _message_item(call: Call, text: str, status: str) -> dict[str, Any]:
        return {
            "type": "message",
            "id": call.extra["msg_id"],
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else [],
        }

    async def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """The Responses event stream: ``response.created``, ``response.in_progress``; for the
        text ``response.output_item.added``, ``response.content_part.added``,
        ``response.output_text.delta``… ``response.output_text.done``,
        ``response.content_part.done``, ``response.output_item.done``; for each tool call a
        ``function_call`` item with ``response.function_call_arguments.delta``… ``.done``;
        then ``response.completed`` (``response.incomplete`` when cut by the cap). A failure
        after the first byte ends with ``error`` and ``response.failed``."""
        seq = 0

        def event(kind: str, payload: dict[str, Any]) -> bytes:
            nonlocal seq
            seq += 1
            return sse({"type": kind, "sequence_number": seq - 1, **payload}, event=kind)

        model = call.model
        text: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        msg_id = call.extra["msg_id"]
        msg_index: int | None = None  # output index of the message item, once opened
        tools: dict[int, dict[str, Any]] = {}  # chat tool-call index → function_call item (+ output_index)
        outputs = 0
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for chunk in events:
                if "error" in chunk and "choices" not in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    failed = self._envelope(call, model, "failed")
                    failed["error"] = {"code": err.get("code") or "server_error", "message": err.get("message", "")}
                    yield event("error", {"code": err.get("code"), "message": err.get("message", ""), "param": None})
                    yield event("response.failed", {"response": failed})
                    return
                if seq == 0:
                    model = str(chunk.get("model") or model)
                    yield event("response.created", {"response": self._envelope(call, model, "in_progress")})
                    yield event("response.in_progress", {"response": self._envelope(call, model, "in_progress")})
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        if msg_index is None:
                            msg_index, outputs = outputs, outputs + 1
                            yield event(
                                "response.output_item.added",
                                {"output_index": msg_index, "item": self._message_item(call, "", "in_progress")},
                            )
                            yield event(
                                "response.content_part.added",
                                {
                                    "item_id": msg_id,
                                    "output_index": msg_index,
                                    "content_index": 0,
                                    "part": {"type": "output_text", "text": "", "annotations": []},
                                },
                            )
                        text.append(content)
                        yield event(
                            "response.output_text.delta",
                            {
                                "item_id": msg_id,
                                "output_index": msg_index,
                                "content_index": 0,
                                "delta": content,
                                "logprobs": [],
                            },
                        )
                    for tc in delta.get("tool_calls") or []:
                        n = tc.get("index", 0) if isinstance(tc, dict) else 0
                        function = (tc.get("function") if isinstance(tc, dict) else None) or {}
                        if n not in tools:
                            tools[n] = {
                                "type": "function_call",
                                "id": f"fc_{uuid.uuid4().hex}",
                                "call_id": tc.get("id") or f"call_{uuid.uuid4().hex}",
                                "name": function.get("name") or "",
                                "arguments": "",
                                "status": "in_progress",
                                "output_index": outputs,
                            }
                            outputs += 1
                            item = {k: v for k, v in tools[n].items() if k != "output_index"}
                            yield event(
                                "response.output_item.added", {"output_index": tools[n]["output_index"], "item": item}
                            )
                        if function.get("arguments"):
                            tools[n]["arguments"] += function["arguments"]
                            yield event(
                                "response.function_call_arguments.delta",
                                {
                                    "item_id": tools[n]["id"],
                                    "output_index": tools[n]["output_index"],
                                    "delta": function["arguments"],
                                },
                            )
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        full = "".join(text)
        done_items: list[tuple[int, dict[str, Any]]] = []
        if msg_index is None and not tools:
            msg_index, outputs = outputs, outputs + 1
            yield event(
                "response.output_item.added",
                {"output_index": msg_index, "item": self._message_item(call, "", "in_progress")},
            )
            yield event(
                "response.content_part.added",
                {
                    "item_id": msg_id,
                    "output_index": msg_index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                },
            )
        if msg_index is not None:
            yield event(
                "response.output_text.done",
                {"item_id": msg_id, "output_index": msg_index, "content_index": 0, "text": full, "logprobs": []},
            )
            part = {"type": "output_text", "text": full, "annotations": []}
            yield event(
                "response.content_part.done",
                {"item_id": msg_id, "output_index": msg_index, "content_index": 0, "part": part},
            )
            item = self._message_item(call, full, "completed")
            yield event("response.output_item.done", {"output_index": msg_index, "item": item})
            done_items.append((msg_index, item))
        for tool in tools.values():
            index = tool.pop("output_index")
            tool["status"] = "completed"
            yield event(
                "response.function_call_arguments.done",
                {"item_id": tool["id"], "output_index": index, "arguments": tool["arguments"]},
            )
            yield event("response.output_item.done", {"output_index": index, "item": tool})
            done_items.append((index, tool))
        done = self._envelope(call, model, "completed")
        done["output"] = [item for _, item in sorted(done_items, key=lambda pair: pair[0])]
        prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
        completion_tokens = int((usage or {}).get("completion_tokens") or 0)
        done["usage"] = self._usage(prompt_tokens, completion_tokens)
        reason = _FINISH.get(finish or "")
        if reason:
            done["status"] = "incomplete"
            done["incomplete_details"] = {"reason": reason}
            yield event("response.incomplete", {"response": done})
        else:
            yield event("response.completed", {"response": done})

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """OpenAI error shape (the Responses API uses it too)."""
        return error.body()


RESPONSES = ResponsesDialect()
