"""Request schemas and body parsing for the OpenAI-compatible endpoints.

Parsing turns bytes into a validated request or an InvalidRequest whose ``param`` names the
offending field the way OpenAI does (``messages[0].content``). Unknown top-level fields are
kept and passed through to the deployment (tools, response_format, seed…).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import InvalidRequest

__all__ = ["ChatCompletionRequest", "ChatMessage", "parse_body", "parse_chat_request"]


class ChatMessage(BaseModel):
    """One chat message; ``content`` is a string, an array of content parts, or null."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Any = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in value):
            return value
        raise ValueError("must be a string, an array of content parts (objects with a 'type'), or null")


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body (OpenAI API reference, "Create chat completion")."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int | None = Field(default=None, ge=1, le=16)

    def max_output_tokens(self, default: int) -> int:
        """The caller's output cap (tokens), or ``default`` when it set none."""
        return self.max_completion_tokens or self.max_tokens or default


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body. Raises InvalidRequest (param ``body``) otherwise."""
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object", param="body")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", param="body")
    return data


def parse_chat_request(data: dict[str, Any]) -> ChatCompletionRequest:
    """Validate a chat request. Raises InvalidRequest naming the first offending field."""
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{param}: {msg}", param=param) from None
