"""OpenAI dialects: chat completions, legacy text completions and embeddings — passed to the
deployment in the same format, with only known fields forwarded (OpenAI API reference,
"Create chat completion", "Create completion", "Create embeddings")."""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from gateway.errors import GatewayError, InvalidRequest
from gateway.schemas import MAX_TOKENS_LIMIT, parse_chat_request
from gateway.wire import Call, UnknownParams, invalid_from, known_fields, sse

__all__ = [
    "CHAT",
    "CHAT_PARAMS",
    "COMPLETIONS",
    "COMPLETIONS_PARAMS",
    "EMBEDDINGS",
    "EMBEDDINGS_PARAMS",
    "ChatDialect",
    "CompletionsDialect",
    "EmbeddingsDialect",
    "complete_answer",
    "upstream_body",
]

CHAT_PARAMS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
        "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice", "parallel_tool_calls",
        "functions", "function_call", "response_format", "service_tier", "store", "metadata",
        "modalities", "audio", "prediction", "reasoning_effort", "verbosity", "web_search_options",
        "safety_identifier", "prompt_cache_key",
    }
)  # fmt: skip
"""Chat completion request fields (OpenAI API reference); others are dropped or rejected."""

COMPLETIONS_PARAMS = frozenset(
    {
        "model", "prompt", "suffix", "max_tokens", "temperature", "top_p", "n", "stream",
        "stream_options", "logprobs", "echo", "stop", "presence_penalty", "frequency_penalty",
        "best_of", "logit_bias", "user", "seed",
    }
)  # fmt: skip
"""Legacy completion request fields."""

EMBEDDINGS_PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
"""Embeddings request fields."""

_NOT_SENT = ("model", "stream", "stream_options")


def upstream_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request as sent to a deployment: the client's fields minus model/stream
    settings (the adapter sets the deployment's model), with text-only content-part arrays
    joined into a plain string, an assistant tool-call message's null content sent as "" and
    the ``developer`` role sent as ``system`` (OpenAI treats them alike; llama.cpp's server and
    other OpenAI-compatible servers know only ``system``) — the same prompt, in the form every
    OpenAI-compatible server accepts."""
    body = {k: v for k, v in data.items() if k not in _NOT_SENT}
    messages = []
    for message in data.get("messages") or []:
        if message.get("role") == "developer":
            message = {**message, "role": "system"}
        content = message.get("content")
        if isinstance(content, list) and all(p.get("type") == "text" for p in content):
            message = {**message, "content": "".join(str(p.get("text", "")) for p in content)}
        elif content is None and message.get("role") == "assistant":
            message = {**message, "content": ""}  # llama.cpp rejects null content beside tool_calls
        messages.append(message)
    body["messages"] = messages
    return body


def _openai_error(error: GatewayError) -> dict[str, Any]:
    return error.body()


async def _openai_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """OpenAI SSE: each chunk as ``data:``; ``data: [DONE]`` unless the stream failed."""
    failed = False
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            failed = "error" in event and "choices" not in event
            yield sse(event)
    if not failed:
        yield b"data: [DONE]\n\n"


def _include_usage(options: Any, param: str = "stream_options") -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest(f"{param}: must be a JSON object", param=param)
    value = options.get("include_usage", False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{param}.include_usage: must be a boolean", param=f"{param}.include_usage")
    return value


_NUMBER_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}
)
"""Sampling parameters: a JSON number in [low, high] (OpenAI API reference, "Create chat
completion" / "Create completion")."""

_INT_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType({"seed": (-(2**63), 2**63 - 1), "top_logprobs": (0, 20)})
"""Integer parameters and their ranges (same source; ``seed`` an int64). ``n`` and ``best_of``,
which the request models read, are checked there."""

_BOOLEANS = ("parallel_tool_calls", "echo")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_common(data: Mapping[str, Any], *, chat: bool) -> None:
    """Checks shared by chat and completions, so a malformed value is a 400 naming the field
    instead of an upstream 500 (llama.cpp's server answers a string ``top_p`` with one, which
    would count against its breaker): ``stop`` a string or up to 4 strings; the sampling
    numbers and integers in :data:`_NUMBER_RANGES` / :data:`_INT_RANGES`; booleans;
    ``logprobs`` a boolean (chat) or an integer 0-5 (completions); ``logit_bias`` token ids
    to numbers in [-100, 100]; ``user`` a string. Null means unset (dropped before egress)."""
    stop = data.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4)
    ):
        raise InvalidRequest("stop: must be a string or an array of up to 4 strings", param="stop")
    for name, (low, high) in _NUMBER_RANGES.items():
        value = data.get(name)
        if value is not None and not (_is_number(value) and low <= value <= high):
            raise InvalidRequest(f"{name}: must be a number from {low:g} to {high:g}", param=name)
    for name, (lo, hi) in _INT_RANGES.items():
        value = data.get(name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
            raise InvalidRequest(f"{name}: must be an integer from {lo} to {hi}", param=name)
    for name in _BOOLEANS:
        if data.get(name) is not None and not isinstance(data[name], bool):
            raise InvalidRequest(f"{name}: must be a boolean", param=name)
    logprobs = data.get("logprobs")
    if logprobs is not None:
        if chat and not isinstance(logprobs, bool):
            raise InvalidRequest("logprobs: must be a boolean", param="logprobs")
        if not chat and not (isinstance(logprobs, int) and not isinstance(logprobs, bool) and 0 <= logprobs <= 5):
            raise InvalidRequest("logprobs: must be an integer from 0 to 5", param="logprobs")
    bias = data.get("logit_bias")
    if bias is not None and not (
        isinstance(bias, dict) and all(k.isdigit() and _is_number(v) and -100 <= v <= 100 for k, v in bias.items())
    ):
        raise InvalidRequest(
            "logit_bias: must be an object mapping token ids to numbers from -100 to 100", param="logit_bias"
        )
    if data.get("user") is not None and not isinstance(data["user"], str):
        raise InvalidRequest("user: must be a string", param="user")


_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
"""``response_format.type`` values (OpenAI API reference, "Create chat completion")."""

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _check_chat_structure(data: Mapping[str, Any]) -> None:
    """The chat fields a server reads by structure, checked so a malformed one is a 400 naming
    it, not a provider's 500 (OpenAI API reference, "Create chat completion"): ``tools[]``
    objects with a ``type`` (a ``function`` tool has ``function.name`` of 1-64 letters, digits,
    ``_ . -`` and an object ``parameters`` if any); ``tool_choice`` ``none``/``auto``/
    ``required`` or an object (a ``function`` one naming the function); an assistant's
    ``tool_calls[]`` with a string ``id`` and, for a function call, string ``function.name``
    and ``function.arguments``; an ``image_url`` content part's ``image_url.url`` a string;
    ``response_format`` an object of a known ``type`` (``json_schema`` with a named schema); a
    ``function`` message with the function's ``name``."""
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools: must be an array", param="tools")
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise InvalidRequest(f"{where}: must be an object with a string type", param=where)
            if tool["type"] == "function":
                _check_function(tool.get("function"), f"{where}.function", arguments=False)
    choice = data.get("tool_choice")
    if choice is not None and choice not in ("none", "auto", "required"):
        if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
            raise InvalidRequest(
                "tool_choice: must be 'none', 'auto', 'required' or an object with a type", param="tool_choice"
            )
        function = choice.get("function")
        if choice["type"] == "function" and not (isinstance(function, dict) and isinstance(function.get("name"), str)):
            raise InvalidRequest("tool_choice.function.name: must be a string", param="tool_choice.function.name")
    response_format = data.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or response_format.get("type") not in _RESPONSE_FORMATS:
            raise InvalidRequest(
                "response_format: must be an object whose type is text, json_object or json_schema",
                param="response_format",
            )
        schema = response_format.get("json_schema")
        if response_format["type"] == "json_schema" and not (
            isinstance(schema, dict) and isinstance(schema.get("name"), str)
        ):
            raise InvalidRequest(
                "response_format.json_schema: must be an object with a name (and a schema)",
                param="response_format.json_schema",
            )
    for i, message in enumerate(data.get("messages") or ()):
        if message.get("role") == "function" and not isinstance(message.get("name"), str):
            raise InvalidRequest(
                f"messages[{i}].name: a function message needs the name of the function",
                param=f"messages[{i}].name",
            )
        calls = message.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not calls:
                where = f"messages[{i}].tool_calls"
                raise InvalidRequest(f"{where}: must be a non-empty array", param=where)
            for j, call in enumerate(calls):
                where = f"messages[{i}].tool_calls[{j}]"
                if not isinstance(call, dict) or not isinstance(call.get("id"), str):
                    raise InvalidRequest(f"{where}: must be an object with a string id", param=f"{where}.id")
                if call.get("type", "function") == "function":
                    _check_function(call.get("function"), f"{where}.function", arguments=True)
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") == "image_url":
                    image = part.get("image_url")
                    if not (isinstance(image, dict) and isinstance(image.get("url"), str)):
                        where = f"messages[{i}].content[{j}].image_url"
                        raise InvalidRequest(f"{where}: must be an object with a string url", param=where)


def _check_function(function: Any, where: str, *, arguments: bool) -> None:
    """A tool's or tool call's ``function`` object (see :func:`_check_chat_structure`)."""
    if not isinstance(function, dict):
        raise InvalidRequest(f"{where}: must be an object", param=where)
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidRequest(f"{where}.name: must be 1-64 letters, digits, '_', '.' or '-'", param=f"{where}.name")
    if arguments and not isinstance(function.get("arguments"), str):
        raise InvalidRequest(f"{where}.arguments: must be a string (JSON text)", param=f"{where}.arguments")
    if not arguments and function.get("parameters") is not None and not isinstance(function["parameters"], dict):
        raise InvalidRequest(f"{where}.parameters: must be a JSON Schema object", param=f"{where}.parameters")


def complete_answer(
    answer: dict[str, Any], kind: str, id_prefix: str, call: Call, usage: tuple[int, int]
) -> dict[str, Any]:
    """``answer`` with the fields of OpenAI's ``chat.completion`` / ``text_completion`` object
    a sparse upstream left out: ``id`` (``id_prefix`` + 24 hex digits), ``object`` (``kind``),
    ``created`` (Unix seconds), ``model`` (the requested name) and ``usage`` (the settled
    ``usage`` = (prompt, completion) tokens). The same object when nothing is missing."""
    if (
        isinstance(answer.get("id"), str)
        and answer.get("object") == kind
        and isinstance(answer.get("created"), int)
        and isinstance(answer.get("model"), str)
        and isinstance(answer.get("usage"), dict)
    ):
        return answer
    out = dict(answer)
    if not isinstance(out.get("id"), str):
        out["id"] = id_prefix + secrets.token_hex(12)
    out["object"] = kind
    if not isinstance(out.get("created"), int) or isinstance(out.get("created"), bool):
        out["created"] = int(time.time())
    if not isinstance(out.get("model"), str):
        out["model"] = call.model
    if not isinstance(out.get("usage"), dict):
        out["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return out


class ChatDialect:
    """``POST /v1/chat/completions``."""

    endpoint = "chat.completions"

    def parse(self, data: dict[str, Any], *, unknown: UnknownParams) -> Call:
        """Validate a chat request (gateway.schemas) and keep its known fields."""
        request = parse_chat_request(data)
        kept, dropped = known_fields(data, CHAT_PARAMS, unknown)
        if kept.pop("store", None) is not None:
            # store: true asks the provider to retain the completion; the registry's
            # retains_data (which the policy decided on) is the provider's default, so never sent
            dropped = (*dropped, "store")
        _check_common(kept, chat=True)
        _check_chat_structure(kept)
        include_usage = _include_usage(kept.get("stream_options"))
        if kept.get("stream_options") is not None and not request.stream:
            raise InvalidRequest("stream_options: only allowed when stream is true", param="stream_options")
        body = upstream_body(kept)
        return Call(
            operation="chat",
            model=request.model,
            body=body,
            prompt=list(data["messages"]),
            input_chars=0,
            input_items=len(request.messages),
            stream=request.stream,
            include_usage=include_usage,
            max_output_tokens=request.max_output_tokens(0) or None,
            needs=tuple(request.needs()),
            dropped=dropped,
            choices=request.n or 1,
        )

    def response(self, answer: dict[str, Any], call: Call, usage: tuple[int, int]) -> dict[str, Any]:
        """The upstream's chat.completion, with what the wire format requires and a sparse
        server left out filled in (:func:`complete_answer`)."""
        return complete_answer(answer, "chat.completion", "chatcmpl-", call, usage)

    def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """OpenAI chat SSE."""
        return _openai_stream(events)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """OpenAI error shape."""
        return _openai_error(error)


def _texts_or_tokens(value: Any, *, what: str) -> Any:
    """A non-empty string, a non-empty array of non-empty strings, of token ids, or of
    token-id arrays. Empty text is refused: vLLM refuses it too, and llama.cpp's server
    answers it with a 500 (or an empty 200 stream) that would count against its breaker.
    (Every string is valid Unicode: parse_body checked the whole body.)"""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{what} must not be empty")
        return value
    if isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            if not all(value):
                raise ValueError(f"{what} must not contain empty strings")
            return value
        if all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
            return value
        if all(
            isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in x)
            for x in value
        ):
            return value
    raise ValueError(
        f"{what} must be a string, or a non-empty array of strings, of token ids, or of arrays of token ids"
    )


class _CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    prompt: Any
    stream: StrictBool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int | None = Field(default=None, ge=1, le=16)
    best_of: StrictInt | None = Field(default=None, ge=1, le=20)
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        return _texts_or_tokens(value, what="prompt")


def _prompt_size(prompt: Any) -> tuple[int, int]:
    """(characters, items) of a prompt/input; a token id counts as 4 characters."""
    if isinstance(prompt, str):
        return len(prompt), 1
    chars = 0
    for item in prompt:
        chars += len(item) if isinstance(item, str) else 4 * len(item) if isinstance(item, list) else 4
    return chars, len(prompt) if prompt and not isinstance(prompt[0], int) else 1


def _is_prompt_array(prompt: Any) -> bool:
    """True for a prompt other than one string (``"a"`` or ``["a"]``): several prompts or
    token ids. Such a request needs the ``prompt_arrays`` capability — llama.cpp's server, for
    one, answers both with a 500 (llama-cpp-python 0.3.x), which would open its breaker."""
    return isinstance(prompt, list) and not (len(prompt) == 1 and isinstance(prompt[0], str))


class CompletionsDialect:
    """``POST /v1/completions`` (legacy text completions; ``prompt`` a string or array)."""

    endpoint = "completions"

    def parse(self, data: dict[str, Any], *, unknown: UnknownParams) -> Call:
        """Validate and keep the known fields. Raises InvalidRequest naming the field."""
        try:
            request = _CompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise invalid_from(exc) from None
        kept, dropped = known_fields(data, COMPLETIONS_PARAMS, unknown)
        _check_common(kept, chat=False)
        include_usage = _include_usage(kept.get("stream_options"))
        if kept.get("stream_options") is not None and not request.stream:
            raise InvalidRequest("stream_options: only allowed when stream is true", param="stream_options")
        chars, items = _prompt_size(request.prompt)
        needs: tuple[str, ...] = ("stream",) if request.stream else ()
        if _is_prompt_array(request.prompt):
            needs += ("prompt_arrays",)
        return Call(
            operation="text",
            model=request.model,
            body={k: v for k, v in kept.items() if k not in _NOT_SENT},
            prompt=[{"prompt": request.prompt, **({"suffix": request.suffix} if request.suffix else {})}],
            input_chars=chars + len(request.suffix or ""),
            input_items=items,
            stream=request.stream,
            include_usage=include_usage,
            max_output_tokens=request.max_tokens,
            needs=needs,
            dropped=dropped,
            choices=items * max(request.n or 1, request.best_of or 1),
        )

    def response(self, answer: dict[str, Any], call: Call, usage: tuple[int, int]) -> dict[str, Any]:
        """The upstream's text_completion, completed like chat's (:func:`complete_answer`)."""
        return complete_answer(answer, "text_completion", "cmpl-", call, usage)

    def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """OpenAI completions SSE."""
        return _openai_stream(events)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """OpenAI error shape."""
        return _openai_error(error)


class _EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: Any
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1, le=65536)

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("must have at most 2048 items")
        return _texts_or_tokens(value, what="input")


class EmbeddingsDialect:
    """``POST /v1/embeddings`` (``input`` a string or an array; never streamed)."""

    endpoint = "embeddings"

    def parse(self, data: dict[str, Any], *, unknown: UnknownParams) -> Call:
        """Validate and keep the known fields. Raises InvalidRequest naming the field."""
        if "stream" in data and data["stream"] not in (False, None):
            raise InvalidRequest("stream: embeddings cannot be streamed", param="stream")
        try:
            request = _EmbeddingsRequest.model_validate(data)
        except ValidationError as exc:
            raise invalid_from(exc) from None
        kept, dropped = known_fields(data, EMBEDDINGS_PARAMS, unknown)
        chars, items = _prompt_size(request.input)
        return Call(
            operation="embed",
            model=request.model,
            body={k: v for k, v in kept.items() if k not in _NOT_SENT},
            prompt=[{"input": request.input}],
            input_chars=chars,
            input_items=items,
            max_output_tokens=0,
            needs=("embeddings",),
            dropped=dropped,
        )

    def response(self, answer: dict[str, Any], call: Call, usage: tuple[int, int]) -> dict[str, Any]:
        """The upstream's embeddings list, with ``usage`` filled in from the settled count
        when the upstream sent none."""
        if not isinstance(answer.get("usage"), dict):
            answer = {**answer, "usage": {"prompt_tokens": usage[0], "total_tokens": usage[0]}}
        return answer

    def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """Never called: embeddings are not streamed."""
        return _openai_stream(events)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """OpenAI error shape."""
        return _openai_error(error)


CHAT = ChatDialect()
COMPLETIONS = CompletionsDialect()
EMBEDDINGS = EmbeddingsDialect()
