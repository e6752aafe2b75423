"""Wire formats ("dialects") of the public endpoints, and their translation to one pipeline.

Every endpoint runs the same pipeline (:class:`gateway.service.Gateway`); what differs is the
wire format. A :class:`Dialect` turns a parsed JSON body into a :class:`Call` — what to ask of
a deployment (a chat completion, a legacy text completion, or embeddings) in the OpenAI shape
the adapters speak — and turns the answer, the stream and errors back into its own format:

=================  ==============  ===========  ===========================================
endpoint           dialect         operation    translation
=================  ==============  ===========  ===========================================
chat.completions   ``CHAT``        chat         none (OpenAI chat completions)
completions        ``COMPLETIONS`` text         none (OpenAI legacy completions)
embeddings         ``EMBEDDINGS``  embed        none (OpenAI embeddings)
responses          ``RESPONSES``   chat         OpenAI Responses (text) ⇄ chat
messages           ``MESSAGES``    chat         Anthropic Messages ⇄ chat
=================  ==============  ===========  ===========================================

Parsing raises InvalidRequest whose ``param`` names the offending field. Top-level fields a
dialect does not know are dropped (listed in :attr:`Call.dropped`) or rejected, per
``server.unknown_params``: an unknown field is never forwarded unread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from gateway.errors import GatewayError, InvalidRequest

__all__ = [
    "Call",
    "Dialect",
    "Operation",
    "UnknownParams",
    "invalid_from",
    "known_fields",
    "sse",
]

Operation = Literal["chat", "text", "embed"]
UnknownParams = Literal["drop", "reject"]


@dataclass(frozen=True)
class Call:
    """What one request asks of a deployment, in the adapters' OpenAI shape.

    ``body``: the upstream request without ``model``/``stream``/``stream_options`` (the
    pipeline and adapter set those). ``prompt``: the request's input as a list of objects,
    for the prompt digest and capture. ``input_chars`` / ``input_items``: size of the input
    for token estimates (characters, messages or inputs). ``max_output_tokens``: the client's
    output cap (tokens), None when it set none. ``include_usage``: the client asked for a
    usage chunk at the end of a stream. ``dropped``: unknown top-level fields left out.
    ``choices``: how many outputs of up to ``max_output_tokens`` each the request may produce
    (``n``, ``best_of``, one per prompt), for the worst case the limits reserve.
    """

    operation: Operation
    model: str
    body: dict[str, Any]
    prompt: list[dict[str, Any]]
    input_chars: int
    input_items: int
    stream: bool = False
    include_usage: bool = False
    max_output_tokens: int | None = None
    needs: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    choices: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Dialect(Protocol):
    """One endpoint's wire format. Implementations are stateless and shared."""

    endpoint: str
    """The audit record's ``endpoint`` and the policy input's ``request.endpoint``."""

    def parse(self, data: dict[str, Any], *, unknown: UnknownParams) -> Call:
        """The Call for a JSON body. Raises InvalidRequest naming the field at fault."""
        ...

    def response(self, answer: dict[str, Any], call: Call, usage: tuple[int, int]) -> dict[str, Any]:
        """The client's JSON answer for the upstream ``answer``; ``usage`` is the settled
        (prompt, completion) token counts."""
        ...

    def encode(self, events: AsyncIterator[dict[str, Any]], call: Call) -> AsyncIterator[bytes]:
        """SSE bytes for a stream of OpenAI chunks. A chunk ``{"error": {...}}`` (no
        ``choices``) is the stream's terminal failure. Closes ``events`` when done."""
        ...

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """The JSON error body for ``error`` in this dialect."""
        ...


def sse(payload: Mapping[str, Any], event: str | None = None) -> bytes:
    """One server-sent event: ``event: <name>`` (if given) and ``data: <compact JSON>``."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def known_fields(
    data: dict[str, Any], known: Collection[str], unknown: UnknownParams
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Split ``data`` into (known fields, names of unknown ones). With ``unknown="reject"`` an
    unknown field raises InvalidRequest naming it. A known field set to null is left out: the
    OpenAI and Anthropic APIs read null as unset, and some servers (llama.cpp's) answer an
    explicit ``"temperature": null`` with a 500."""
    extra = tuple(k for k in data if k not in known)
    if extra and unknown == "reject":
        raise InvalidRequest(
            f"{extra[0]}: unrecognized request argument (server.unknown_params is 'reject')",
            param=extra[0],
            code="unknown_parameter",
        )
    return {k: v for k, v in data.items() if k in known and v is not None}, extra


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def invalid_from(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """InvalidRequest for the first error of a pydantic validation, ``param`` the field's
    path (``messages[0].content``), without pydantic's internal class names."""
    err = exc.errors(include_url=False)[0]
    param = _param(tuple(err["loc"]))
    if prefix:
        param = prefix if param == "body" else f"{prefix}.{param}" if not param.startswith("[") else prefix + param
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("model_type", "model_attributes_type", "dict_type"):
        msg = "must be a JSON object"
    elif err["type"] == "missing":
        msg = "field required"
    elif err["type"] == "extra_forbidden":
        msg = "unrecognized field"
    return InvalidRequest(f"{param}: {msg}", param=param)
