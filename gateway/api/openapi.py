"""The OpenAPI document (``/openapi.json``): request bodies and error responses of the routes
that read raw bodies.

The POST routes of the model API read the raw body (size limit first, then their own parsing
in ``gateway/wire``), so FastAPI cannot infer a request schema. :func:`document` adds one per
route — hand-written JSON Schemas of the OpenAI (chat, completions, embeddings, responses)
and Anthropic (messages) requests, for documentation and for schema-driven testing
(schemathesis, ``tests/test_schemathesis.py``) — and the error body shape of every 4xx/5xx.
It changes nothing about how bodies are parsed or validated: these schemas describe, the
parsers decide.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

__all__ = ["ANTHROPIC_ERROR", "OPENAI_ERROR", "REQUEST_BODIES", "document"]

_INT32 = 2**31 - 1
_STR: dict[str, Any] = {"type": "string"}
_OBJ: dict[str, Any] = {"type": "object"}
_MODEL: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 256, "description": "alias or deployment id"}
_MAX_TOKENS: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": _INT32}
_TEMPERATURE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 2}
_STOP: dict[str, Any] = {"anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}, {"type": "null"}]}
_STREAM_OPTIONS: dict[str, Any] = {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}
_TOKENS: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_TEXT_PART: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": _STR, "text": _STR},
}
_TOOL: dict[str, Any] = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _STR, "description": _STR, "parameters": _OBJ},
        },
    },
}

CHAT_REQUEST: dict[str, Any] = {
    "title": "ChatCompletionRequest",
    "description": 'OpenAI "Create chat completion" request; unknown fields are dropped or rejected per '
    "server.unknown_params.",
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "description": "content may be null only on an assistant message with tool_calls",
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                    "content": {"anyOf": [_STR, {"type": "array", "minItems": 1, "items": _TEXT_PART}]},
                    "name": _STR,
                    "tool_calls": {"type": "array", "items": _OBJ},
                    "tool_call_id": _STR,
                },
            },
        },
        "stream": {"type": "boolean"},
        "stream_options": _STREAM_OPTIONS,
        "max_tokens": _MAX_TOKENS,
        "max_completion_tokens": _MAX_TOKENS,
        "temperature": _TEMPERATURE,
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 16},
        "stop": _STOP,
        "seed": {"type": "integer"},
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]}, _OBJ]},
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}, "json_schema": _OBJ},
        },
        "user": _STR,
    },
    "if": {"required": ["stream_options"]},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}

COMPLETIONS_REQUEST: dict[str, Any] = {
    "title": "CompletionRequest",
    "description": 'OpenAI "Create completion" (legacy text completions) request.',
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": _MODEL,
        "prompt": {
            "anyOf": [_STR, {"type": "array", "items": _STR}, _TOKENS, {"type": "array", "items": _TOKENS}],
        },
        "stream": {"type": "boolean"},
        "stream_options": _STREAM_OPTIONS,
        "max_tokens": _MAX_TOKENS,
        "temperature": _TEMPERATURE,
        "n": {"type": "integer", "minimum": 1, "maximum": 16},
        "stop": _STOP,
        "echo": {"type": "boolean"},
        "suffix": _STR,
        "user": _STR,
    },
    "if": {"required": ["stream_options"]},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}

EMBEDDINGS_REQUEST: dict[str, Any] = {
    "title": "EmbeddingsRequest",
    "description": 'OpenAI "Create embeddings" request.',
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "anyOf": [_STR, {"type": "array", "items": _STR}, _TOKENS, {"type": "array", "items": _TOKENS}],
        },
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": _STR,
    },
}

RESPONSES_REQUEST: dict[str, Any] = {
    "title": "ResponsesRequest",
    "description": 'OpenAI "Create a model response" request (text input and output).',
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "anyOf": [
                _STR,
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"enum": ["user", "assistant", "system", "developer"]},
                            "content": {"anyOf": [_STR, {"type": "array", "items": _TEXT_PART}]},
                        },
                    },
                },
            ]
        },
        "instructions": _STR,
        "max_output_tokens": _MAX_TOKENS,
        "temperature": _TEMPERATURE,
        "stream": {"type": "boolean"},
        "user": _STR,
    },
}

MESSAGES_REQUEST: dict[str, Any] = {
    "title": "MessagesRequest",
    "description": 'Anthropic "Messages" request; errors come back in the Anthropic error shape.',
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": _MODEL,
        "max_tokens": _MAX_TOKENS,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {"anyOf": [_STR, {"type": "array", "minItems": 1, "items": _TEXT_PART}]},
                },
            },
        },
        "system": {"anyOf": [_STR, {"type": "array", "items": _TEXT_PART}]},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "stop_sequences": {"type": "array", "items": _STR},
        "tools": {"type": "array", "items": _OBJ},
        "tool_choice": _OBJ,
    },
}

REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT_REQUEST,
    "/v1/completions": COMPLETIONS_REQUEST,
    "/v1/embeddings": EMBEDDINGS_REQUEST,
    "/v1/responses": RESPONSES_REQUEST,
    "/v1/messages": MESSAGES_REQUEST,
}
"""POST path → JSON Schema of its request body (documentation only; see the module docstring)."""

OPENAI_ERROR: dict[str, Any] = {
    "title": "OpenAIError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": _STR,
                "type": _STR,
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""The error body of every route but /v1/messages (OpenAI API reference, "Error codes")."""

ANTHROPIC_ERROR: dict[str, Any] = {
    "title": "AnthropicError",
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {"type": "object", "required": ["type", "message"], "properties": {"type": _STR, "message": _STR}},
    },
}
"""The error body of /v1/messages (Anthropic API, "Errors")."""


def _error_response(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "Error", "content": {"application/json": {"schema": schema}}}


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` add the request bodies of :data:`REQUEST_BODIES` to their POST
    operations (where the route declares none) and the error shape as the ``4XX``/``5XX``
    responses of every operation. Built once, then cached by FastAPI like the default."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if not isinstance(operation, dict):
                    continue
                body = REQUEST_BODIES.get(path)
                if method == "post" and body is not None and "requestBody" not in operation:
                    operation["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": copy.deepcopy(body)}},
                    }
                error = ANTHROPIC_ERROR if path == "/v1/messages" else OPENAI_ERROR
                responses = operation.setdefault("responses", {})
                for status in ("4XX", "5XX"):
                    responses.setdefault(status, _error_response(copy.deepcopy(error)))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
