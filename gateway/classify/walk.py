"""Which strings of a request the detectors read — and where each one sits, for redaction.

One principle for classification and redaction alike: **every string a provider could receive
is scanned** — every value *and every key*, of every top-level field (known to the gateway or
not), at any depth (the walk is iterative: there is no depth past which data goes unseen), and
numbers in their JSON text form (``4111111111111111`` and ``4111111111111111.0`` alike). There
is no allow-list of places: a field a wire format adds tomorrow is scanned today.

Skipped, because they are not text a person wrote and scanning them only costs time and false
positives:

* **binary payloads** — the payload of a base64 data URL (``data:<mime>[;params];base64,<payload>``;
  its header is still scanned) whose media type is not text (a ``text/*``, JSON, XML, YAML or
  CSV payload is read decoded as well as written: :data:`_TEXT_MIME`), and a string under a
  binary key (:data:`BINARY_KEYS`: chat
  ``input_audio.data``, Anthropic ``source.data`` and ``thinking.signature``, ``file_data``,
  Responses ``encrypted_content``), but only when the payload is well-formed base64 (standard
  alphabet, padded to a multiple of 4) of at least :data:`BINARY_MIN_CHARS` characters. Anything
  else — ``"data: my card is …"``, a short or malformed "payload", plain text under ``data`` —
  is scanned like any other string.
* **token-id prompts** — a top-level ``prompt`` / ``input`` that is a list of token ids or of
  lists of token ids (non-negative ints below :data:`TOKEN_ID_LIMIT`, more than any vocabulary
  holds); a list with a larger number is scanned number by number.

Top-level fields that no endpoint forwards are not read (:func:`forwarded_fields`): the wire
formats keep only the fields in their own lists and drop (or, with ``server.unknown_params:
reject``, refuse) the rest, so such a field never leaves the gateway and must not raise the
level of a request. The set *is* the wire formats' lists — the same ones that decide what is
forwarded — so every forwarded field is read by construction; redaction, which works on the
body as it will be sent, reads every field.

Identifiers (tool-call ids, ``tool_call_id``, ``call_id``, tool names, ``status``, ``type``…) are
scanned too: a provider receives them like any other string. A random id may, rarely, look like
a value a detector validates (a phone number in a digit run); that raises the level — the
fail-safe direction, accepted.

Tool-call ``arguments`` strings that hold escapes (``\\u0034``, ``\\n``) are JSON-decoded and the
decoded keys and values scanned instead (what the model reads); redaction re-encodes them.

Where a wire format joins text parts before sending them (chat text-only content arrays,
Anthropic text blocks and ``system`` blocks, Responses ``input_text`` parts — all joined with
``""``), a value split across parts ("4111 1111 " + "1111 1111") is only whole in the join: the
walk also returns, separately, the join of every list that holds two or more ``text`` parts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Collection
from typing import Any, Final, NamedTuple

__all__ = [
    "BINARY_KEYS",
    "BINARY_MIN_CHARS",
    "DATA",
    "KEY",
    "PREFIX",
    "TOKEN_ID_LIMIT",
    "VALUE",
    "SubDocument",
    "Where",
    "collect",
    "forwarded_fields",
    "is_base64_blob",
    "request_texts",
    "text_chars",
]

BINARY_KEYS: Final = frozenset({"data", "file_data", "signature", "encrypted_content"})
"""Keys whose string value is a binary payload *when it is well-formed base64*."""

BINARY_MIN_CHARS: Final = 64
"""Shortest base64 payload taken as binary. No real image, audio, file or signature is shorter;
a short "payload" (``"4111111111111111"`` is valid base64) is scanned, which costs nothing."""

TOKEN_ID_LIMIT: Final = 2**24
"""Token ids are below this (the largest vocabularies hold a few hundred thousand tokens)."""

_TOKEN_KEYS: Final = frozenset({"prompt", "input"})
_TEXT_JSON_KEY: Final = "arguments"

# "data:" [mime] *(";" param) ";base64," — the header is bounded so a long string without a
# comma costs a bounded number of steps
_DATA_URL: Final = re.compile(r"data:[^,]{0,256}?;base64,", re.IGNORECASE)
_BASE64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="

KEY: Final = 0
"""A :class:`Where` kind: the text is a dict key (``slot``) of ``container``."""
VALUE: Final = 1
"""A :class:`Where` kind: the text is ``container[slot]`` (a string, or a number's JSON text)."""
PREFIX: Final = 2
"""A :class:`Where` kind: the text is the first ``len(text)`` characters of ``container[slot]``
(a data URL's header)."""
DATA: Final = 3
"""A :class:`Where` kind: the text is the decoded payload of the text data URL at
``container[slot]`` (:data:`_TEXT_MIME`); redaction re-encodes it."""

_TEXT_MIME: Final = re.compile(
    r"(?:text/[\w.+-]+|application/(?:[\w.+-]*\+)?(?:json|xml|yaml|x-yaml|csv|x-ndjson))[;,]", re.IGNORECASE
)
"""Data URL media types that carry text (matched right after ``data:``): their base64 payload
is decoded and read like any text — a text/plain attachment is as readable as a message."""


class Where(NamedTuple):
    """Where one scanned text sits: ``container[slot]`` (``kind`` :data:`KEY`, :data:`VALUE`
    or :data:`PREFIX`), in the body (``doc`` -1) or in decoded tool-call arguments
    (``doc``: index of the :class:`SubDocument`)."""

    container: Any
    slot: Any
    kind: int
    doc: int


class SubDocument(NamedTuple):
    """Tool-call arguments decoded from a JSON string: ``holder[0]`` is the decoded value; the
    string sits at ``container[slot]`` of document ``parent`` (-1: the body)."""

    holder: list[Any]
    container: Any
    slot: Any
    parent: int


def is_base64_blob(text: str, start: int = 0) -> bool:
    """Whether ``text[start:]`` is a binary payload: well-formed standard base64 (padded, length
    a multiple of 4) of at least :data:`BINARY_MIN_CHARS` characters. C-speed (no regex)."""
    size = len(text) - start
    if size < BINARY_MIN_CHARS or size % 4 or not text.isascii():
        return False
    raw = (text[start:] if start else text).encode("ascii")
    if raw.translate(None, _BASE64_ALPHABET):
        return False
    pad = raw.find(b"=")
    return pad == -1 or (pad >= size - 2 and raw.endswith(b"=" * (size - pad)))


def _text_payload(url: str, start: int) -> str | None:
    """The base64 payload of a text data URL from ``start``, decoded (UTF-8, invalid bytes as
    U+FFFD); None when it is not base64 (the URL is then read as it is)."""
    try:
        return base64.b64decode(url[start:], validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None


def _token_ids(value: Any) -> bool:
    """A list of token ids, or of lists of token ids."""
    if not isinstance(value, list) or not value:
        return False
    if all(type(x) is int and 0 <= x < TOKEN_ID_LIMIT for x in value):
        return True
    return all(isinstance(x, list) and x and all(type(t) is int and 0 <= t < TOKEN_ID_LIMIT for t in x) for x in value)


@functools.cache
def forwarded_fields() -> frozenset[str]:
    """Every top-level request field some endpoint forwards: the union of the wire formats'
    known fields (chat, completions, embeddings, Responses, Anthropic Messages)."""
    from gateway.wire.anthropic import MESSAGES_PARAMS
    from gateway.wire.openai import CHAT_PARAMS, COMPLETIONS_PARAMS, EMBEDDINGS_PARAMS
    from gateway.wire.responses import RESPONSES_PARAMS

    return CHAT_PARAMS | COMPLETIONS_PARAMS | EMBEDDINGS_PARAMS | RESPONSES_PARAMS | MESSAGES_PARAMS


def collect(
    body: Any,
    texts: list[str],
    where: list[Where] | None = None,
    subdocs: list[SubDocument] | None = None,
    joined: list[str] | None = None,
    fields: Collection[str] | None = None,
) -> None:
    """Append every scanned text of ``body`` to ``texts`` in document order (a key before its
    value), with its :class:`Where` to ``where`` and each decoded tool-call arguments string to
    ``subdocs`` when given (redaction), and the joins of text-part lists to ``joined`` when
    given (classification). ``fields``: read only these top-level fields (None: all).

    Iterative (a stack of item iterators), so any depth the JSON parser accepts is walked.
    Raises TypeError for a value JSON cannot hold (the caller fails closed)."""
    # frames: (items iterator, container, document index, key the container sits under, is a dict)
    frames: list[tuple[Any, Any, int, Any, bool]] = []
    if isinstance(body, dict):
        frames.append((iter(body.items()), body, -1, None, True))
    else:  # a bare value (decoded arguments, tests)
        frames.append((enumerate([body]), [body], -1, None, False))
    record = where is not None
    while frames:
        items, container, doc, list_key, is_dict = frames[-1]
        for slot, value in items:
            if is_dict:
                top = container is body
                if top and fields is not None and slot not in fields:
                    continue  # a field no endpoint forwards: neither its name nor its value
                texts.append(slot)
                if record:
                    where.append(Where(container, slot, KEY, doc))  # type: ignore[union-attr]
                key = slot
                if top and slot in _TOKEN_KEYS and _token_ids(value):
                    continue
            else:
                key = list_key
            kind = type(value)
            if kind is str or isinstance(value, str):
                if not value:
                    continue
                if key in BINARY_KEYS and is_base64_blob(value):
                    continue
                if value[0] in "dD" and value[:5].lower() == "data:":
                    header = _DATA_URL.match(value)
                    decoded = (
                        _text_payload(value, header.end())
                        if header is not None and _TEXT_MIME.match(value, 5)
                        else None
                    )
                    if decoded is not None:  # read as written and decoded (digits are valid base64 too)
                        texts.append(value)
                        texts.append(decoded)
                        if record:
                            where.append(Where(container, slot, VALUE, doc))  # type: ignore[union-attr]
                            where.append(Where(container, slot, DATA, doc))  # type: ignore[union-attr]
                        continue
                    if header is not None and is_base64_blob(value, header.end()):
                        texts.append(value[: header.end()])
                        if record:
                            where.append(Where(container, slot, PREFIX, doc))  # type: ignore[union-attr]
                        continue
                if key == _TEXT_JSON_KEY and "\\" in value:
                    try:
                        decoded = json.loads(value)
                    except (ValueError, RecursionError):
                        pass
                    else:
                        holder = [decoded]
                        index = -1
                        if subdocs is not None:
                            subdocs.append(SubDocument(holder, container, slot, doc))
                            index = len(subdocs) - 1
                        frames.append((enumerate(holder), holder, index, None, False))
                        break
                texts.append(value)
                if record:
                    where.append(Where(container, slot, VALUE, doc))  # type: ignore[union-attr]
            elif kind is dict or isinstance(value, dict):
                frames.append((iter(value.items()), value, doc, None, True))
                break
            elif kind is list or isinstance(value, list):
                if joined is not None and len(value) > 1:
                    parts = [p["text"] for p in value if type(p) is dict and type(p.get("text")) is str]
                    if len(parts) > 1:
                        joined.append("".join(parts))
                frames.append((enumerate(value), value, doc, key, False))
                break
            elif value is None or kind is bool:
                continue
            elif kind is int or kind is float or isinstance(value, (int, float)):
                # the JSON text a provider receives (json.dumps keeps 4111111111111111.0 so)
                texts.append(int.__repr__(value) if isinstance(value, int) else float.__repr__(value))
                if record:
                    where.append(Where(container, slot, VALUE, doc))  # type: ignore[union-attr]
            else:
                raise TypeError(f"not a JSON value: {type(value).__name__}")
        else:
            frames.pop()


_STRUCTURE_KEYS: Final = frozenset(
    {"role", "type", "id", "tool_call_id", "call_id", "tool_use_id", "object", "status", "detail", "format",
     "media_type", "mime_type", "cache_control"}
)  # fmt: skip
"""Keys whose string values are structure (enums, ids), priced in the per-message overhead of
:func:`gateway.service.estimate_tokens` rather than counted as text."""


def text_chars(body: Any) -> int:
    """Characters of text a model reads in a request body, for token estimates (limits, the
    context-window check, usage when an upstream reports none): the string *values* at any
    depth of the forwarded fields (:func:`forwarded_fields`) other than ``model``, except
    structure values (:data:`_STRUCTURE_KEYS`: roles, types, ids) — not keys, numbers or flags,
    so ``stream: true`` and ``stream_options`` leave the estimate as it is and the same prompt
    costs the same streamed or not. Binary payloads count like text."""
    if not isinstance(body, dict):
        return 0
    fields = forwarded_fields()
    stack: list[Any] = [v for k, v in body.items() if k in fields and k != "model"]
    total = 0
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            stack.extend(v for k, v in value.items() if k not in _STRUCTURE_KEYS)
        elif isinstance(value, list):
            stack.extend(value)
    return total


def request_texts(body: Any) -> list[str]:
    """Every string of a request body the detectors read, in document order: every key and
    every value at any depth (numbers as their JSON text) of every field some endpoint
    forwards (:func:`forwarded_fields`), on every endpoint's wire format. Skips only binary
    payloads and token-id prompts (see the module docstring). The joins of text parts that
    wire formats send as one string are not included (:func:`collect`)."""
    out: list[str] = []
    collect(body, out, fields=forwarded_fields())
    return out
