"""OpenAI dialects: chat completions, legacy text completions and embeddings — passed to the
deployment in the same format, with only known fields forwarded (OpenAI API reference,
"Create chat completion", "Create completion", "Create embeddings")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

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


def _check_common(data: Mapping[str, Any]) -> None:
    """Checks shared by chat and completions: ``stop`` is a string or up to 4 strings."""
    stop = data.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4)
    ):
        raise InvalidRequest("stop: must be a string or an array of up to 4 strings", param="stop")


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
        _check_common(kept)
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
        """The upstream's chat.completion as is."""
        return answer

    def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """OpenAI chat SSE."""
        return _openai_stream(events)

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """OpenAI error shape."""
        return _openai_error(error)


def _check_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired UTF-16 surrogate, which is not valid Unicode text") from None
    return value


def _texts_or_tokens(value: Any, *, what: str) -> Any:
    """A non-empty string, a non-empty array of non-empty strings, of token ids, or of
    token-id arrays. Empty text is refused: vLLM refuses it too, and llama.cpp's server
    answers it with a 500 (or an empty 200 stream) that would count against its breaker."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{what} must not be empty")
        return _check_text(value)
    if isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            for x in value:
                _check_text(x)
                if not x:
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
    best_of: int | None = Field(default=None, ge=1, le=20)
    temperature: float | None = Field(default=None, ge=0, le=2)
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
        _check_common(kept)
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
        """The upstream's text_completion as is."""
        return answer

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
