"""Request schemas and body parsing for the OpenAI-compatible endpoints.

Parsing turns bytes into a validated request or an InvalidRequest whose ``param`` names the
offending field the way OpenAI does (``messages[0].content``). Unknown top-level fields are
kept and passed through to the deployment (tools, response_format, seed…).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from gateway.errors import InvalidRequest

__all__ = [
    "MAX_TOKENS_LIMIT",
    "ChatCompletionRequest",
    "ChatMessage",
    "parse_body",
    "parse_chat_request",
    "parse_since",
]

MAX_TOKENS_LIMIT = 2**31 - 1
"""Largest accepted max_tokens: int32, the range OpenAI-compatible servers take."""


class ChatMessage(BaseModel):
    """One chat message; ``content`` is a string or an array of content parts. It may be null
    (or absent) only on an assistant message that carries ``tool_calls`` or ``function_call``
    (OpenAI API reference, "Create chat completion", messages)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Any = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, str):  # valid Unicode: parse_body checked every string of the body
            return value
        if (
            isinstance(value, list)
            and value
            and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in value)
        ):
            for i, part in enumerate(value):
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise ValueError(f"part {i} is of type text but has no string 'text'")
            return value
        raise ValueError("must be a string or a non-empty array of content parts (objects with a 'type')")

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        extra = self.model_extra or {}
        if self.content is None and not (
            self.role == "assistant" and (extra.get("tool_calls") or extra.get("function_call"))
        ):
            raise ValueError("content is required (null only for an assistant message with tool_calls)")
        if self.role == "tool" and not isinstance(extra.get("tool_call_id"), str):
            raise ValueError("a tool message needs tool_call_id (the id of the tool call it answers)")
        return self


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body (OpenAI API reference, "Create chat completion")."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int | None = Field(default=None, ge=1, le=16)

    def max_output_tokens(self, default: int) -> int:
        """The caller's output cap (tokens), or ``default`` when it set none."""
        return self.max_completion_tokens or self.max_tokens or default

    def needs(self) -> list[str]:
        """Capabilities the request needs from a deployment: ``stream``, ``tools`` (tools or
        functions), ``json`` (response_format json_object/json_schema), ``vision`` (image parts)."""
        extra = self.model_extra or {}
        needs = []
        if self.stream:
            needs.append("stream")
        if extra.get("tools") or extra.get("functions"):
            needs.append("tools")
        response_format = extra.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
            needs.append("json")
        if any(
            isinstance(m.content, list) and any(p.get("type") in ("image_url", "input_image") for p in m.content)
            for m in self.messages
        ):
            needs.append("vision")
        return needs


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (RFC 8259)")


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body: strict JSON (``NaN``/``Infinity`` refused) whose strings are
    all valid Unicode. Raises InvalidRequest: param ``body``, or the field holding an unpaired
    surrogate (checked before anything of the request is kept, so its record can be written)."""
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object", param="body")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply", param="body") from None
    except ValueError as exc:
        if "int_max_str_digits" in str(exc):  # Python's guard against quadratic int parsing
            raise InvalidRequest(
                f"request body holds a number with more than {sys.get_int_max_str_digits()} digits", param="body"
            ) from None
        raise InvalidRequest(f"request body is not valid JSON: {exc}", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", param="body")
    # A surrogate reaches a str only from a \u escape or (json.loads decodes bytes with
    # surrogatepass) UTF-8 bytes ED A0..BF: walk the body only when either may be present.
    if b"\\u" in raw or b"\xed" in raw:
        check_unicode(data)
    return data


def check_unicode(value: Any, param: str = "body", depth: int = 0) -> None:
    """Raise InvalidRequest naming the field when a string anywhere in ``value`` (keys too)
    holds an unpaired UTF-16 surrogate (JSON allows ``"\\ud800"``; it is not text)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{param}: contains an unpaired UTF-16 surrogate, which is not valid Unicode text", param=param
            ) from None
    elif depth > 64:
        return  # parse_body bounds nesting; deeper values are checked by the adapters' encoder
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key, param, depth + 1)
            check_unicode(item, key if param == "body" else f"{param}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_unicode(item, f"{param}[{i}]", depth + 1)


def parse_chat_request(data: dict[str, Any]) -> ChatCompletionRequest:
    """Validate a chat request. Raises InvalidRequest naming the first offending field."""
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = "must be a JSON object"  # pydantic's text names internal classes
        raise InvalidRequest(f"{param}: {msg}", param=param) from None


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: Any, *, param: str = "since", now: dt.datetime | None = None) -> dt.datetime:
    """A start time: a duration back from now (``24h``, ``30m``, ``7d``) or ISO 8601 (UTC when
    no offset). Raises InvalidRequest naming ``param``."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param} must be a duration such as 24h or an ISO 8601 time", param=param)
    now = now or dt.datetime.now(dt.UTC)
    match = _DURATION.match(value)
    try:
        if match:
            return now - dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
        moment = dt.datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{param} must be a duration such as 24h or an ISO 8601 time, within the calendar", param=param
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
