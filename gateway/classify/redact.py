"""Redaction, the obligation a policy may place on a deployment: ``{"redact": {deployment id:
[labels]}}``. Matched spans of those labels (a label or a label prefix such as ``pii``) are
replaced with typed placeholders (``[EMAIL_1]``, ``[IBAN_2]``) before the request leaves, the
same value always getting the same placeholder within a request; the mapping stays in the
gateway, so the answer can be restored for the client (:class:`Restorer`, stream-safe).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.classify import SpanDetector
from gateway.classify.walk import DATA, KEY, PREFIX, SubDocument, Where, collect

__all__ = ["Redaction", "Restorer", "placeholder_type", "redact_body"]

_TYPES = {
    "pii.email": "EMAIL",
    "pii.phone": "PHONE",
    "pii.payment_card": "CARD",
    "pii.iban": "IBAN",
    "pii.national_id": "NATIONAL_ID",
    "pii.ip_address": "IP",
    "secret.cloud_key": "CLOUD_KEY",
    "secret.private_key": "PRIVATE_KEY",
    "secret.api_token": "API_TOKEN",
    "secret.jwt": "JWT",
}
_PLACEHOLDER = re.compile(r"\[[A-Z_]+_\d+\]")
_LONGEST_PLACEHOLDER = 32


def placeholder_type(label: str) -> str:
    """Placeholder type for a label: ``pii.national_id.cn`` → ``NATIONAL_ID``."""
    parts = label.split(".")
    for end in range(len(parts), 0, -1):
        kind = _TYPES.get(".".join(parts[:end]))
        if kind is not None:
            return kind
    return "REDACTED"


def _wanted(label: str, prefixes: Sequence[str]) -> bool:
    return any(label == p or label.startswith(p + ".") for p in prefixes)


class Redaction:
    """The placeholders of one request: ``mapping`` placeholder → original value; ``counts``
    label → number of spans replaced (for the audit record; never the values)."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._next: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def placeholder(self, label: str, value: str) -> str:
        """The placeholder for ``value`` (the same one each time it occurs)."""
        kind = placeholder_type(label)
        key = (kind, value)
        found = self._by_value.get(key)
        if found is None:
            self._next[kind] += 1
            found = f"[{kind}_{self._next[kind]}]"
            self._by_value[key] = found
            self.mapping[found] = value
        self.counts[label] += 1
        return found

    def text(self, text: str, detector: SpanDetector, labels: Sequence[str]) -> str:
        """``text`` with every span of a wanted label replaced."""
        return self.replace(
            text, [(f.start, f.end, f.label) for f in detector.find([text]) if _wanted(f.label, labels)]
        )

    def replace(self, text: str, spans: Sequence[tuple[int, int, str]]) -> str:
        """``text`` with each ``(start, end, label)`` span replaced by its placeholder; of
        overlapping spans the earlier one wins."""
        if not spans:
            return text
        out, at = [], 0
        for start, end, label in sorted(spans):
            if start < at:
                continue  # overlapping span: the earlier one already covers it
            out.append(text[at:start])
            out.append(self.placeholder(label, text[start:end]))
            at = end
        out.append(text[at:])
        return "".join(out)


def _copy(value: Any) -> Any:
    """A copy of a JSON value's dicts and lists (strings and numbers shared), iteratively."""
    if not isinstance(value, (dict, list)):
        return value
    root = dict(value) if isinstance(value, dict) else list(value)
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        slots = list(container.items()) if isinstance(container, dict) else enumerate(list(container))
        for slot, item in slots:
            if isinstance(item, (dict, list)):
                item = dict(item) if isinstance(item, dict) else list(item)
                container[slot] = item
                stack.append(item)
    return root


def redact_body(
    body: Mapping[str, Any], detector: SpanDetector, labels: Sequence[str]
) -> tuple[dict[str, Any], Redaction]:
    """A copy of a request with every span of the wanted labels replaced by its placeholder,
    wherever the detectors read it (:mod:`gateway.classify.walk`): every value *and key* of
    every field at any depth — message ``content``, ``name``, ``refusal``, tool calls and
    their ids, tools and schemas, ``metadata``, ``logit_bias`` keys… Only detected spans change:

    * a number whose JSON text holds a span becomes the redacted text (a string);
    * a text data URL's (``data:text/plain;base64,…``) payload is redacted decoded and
      re-encoded; a binary data URL's header may change, never its base64 payload (binary
      payloads and token-id prompts are not read, as in classification);
    * a key is renamed in place (order kept); a redacted key that would collide with another
      key of its object raises ValueError (the caller sends nothing);
    * tool-call ``arguments`` that hold escapes are redacted decoded and re-encoded as JSON
      (``ensure_ascii=False``); others are redacted as text, so a placeholder in a schema key
      comes back in the model's arguments and :class:`Restorer` puts the value back.

    The client's ``body`` is not modified."""
    out = _copy(dict(body))
    texts: list[str] = []
    where: list[Where] = []
    subdocs: list[SubDocument] = []
    collect(out, texts, where, subdocs)
    spans: dict[int, list[tuple[int, int, str]]] = {}
    for finding in detector.find(texts):
        if _wanted(finding.label, labels):
            spans.setdefault(finding.text, []).append((finding.start, finding.end, finding.label))
    redaction = Redaction()
    renames: dict[int, tuple[dict[str, Any], dict[str, str]]] = {}
    dirty: set[int] = set()
    for index in sorted(spans):  # document order: [EMAIL_1] is the first in the request
        text = texts[index]
        new = redaction.replace(text, spans[index])
        if new == text:
            continue
        at = where[index]
        dirty.add(at.doc)
        if at.kind == KEY:
            renames.setdefault(id(at.container), (at.container, {}))[1][at.slot] = new
        elif at.kind == PREFIX:
            at.container[at.slot] = new + at.container[at.slot][len(text) :]
        elif at.kind == DATA:  # a text data URL's payload: re-encoded after its (maybe redacted) header
            url = at.container[at.slot]
            cut = url.lower().index(";base64,") + len(";base64,")
            at.container[at.slot] = url[:cut] + base64.b64encode(new.encode("utf-8")).decode("ascii")
        else:
            at.container[at.slot] = new
    for container, renamed in renames.values():  # after the values: their slots are the old keys
        items = list(container.items())
        container.clear()
        for key, item in items:
            key = renamed.get(key, key)
            if key in container:
                raise ValueError("a redacted key collides with another key of its object")
            container[key] = item
    for index in range(len(subdocs) - 1, -1, -1):  # innermost first
        if index in dirty:
            sub = subdocs[index]
            sub.container[sub.slot] = json.dumps(sub.holder[0], ensure_ascii=False)
            dirty.add(sub.parent)
    return out, redaction


class Restorer:
    """Puts the original values back into the answer. For streams, :meth:`feed` holds back a
    tail that could be the start of a placeholder split across chunks; :meth:`flush` at the end.

    Tool-call arguments are JSON text: :meth:`json_text` / :meth:`feed_json` put each value
    back JSON-escaped (a value holding ``"``, ``\\`` or a newline, such as a PEM key, keeps the
    arguments valid JSON), with one held-back tail per tool call (``key``) in a stream."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = dict(mapping)
        self._escaped = {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in mapping.items()}
        self._pending = ""
        self._pending_json: dict[Any, str] = {}

    def text(self, text: str) -> str:
        """Restore every complete placeholder in ``text``."""
        return _PLACEHOLDER.sub(lambda m: self._mapping.get(m.group(0), m.group(0)), text)

    def json_text(self, text: str) -> str:
        """Restore every complete placeholder in ``text``, a JSON document, JSON-escaped."""
        return _PLACEHOLDER.sub(lambda m: self._escaped.get(m.group(0), m.group(0)), text)

    @staticmethod
    def _hold(data: str) -> tuple[str, str]:
        """(what can be emitted now, the tail that may start a placeholder)."""
        cut = data.rfind("[")
        if cut != -1 and "]" not in data[cut:] and len(data) - cut <= _LONGEST_PLACEHOLDER:
            return data[:cut], data[cut:]
        return data, ""

    def feed(self, chunk: str) -> str:
        """Restored text that is safe to emit now (may be shorter than the input)."""
        data, self._pending = self._hold(self._pending + chunk)
        return self.text(data)

    def flush(self) -> str:
        """Whatever was held back, restored."""
        data, self._pending = self._pending, ""
        return self.text(data)

    def feed_json(self, key: Any, chunk: str) -> str:
        """Like :meth:`feed` for the JSON text of one tool call's arguments (``key`` names it)."""
        data, self._pending_json[key] = self._hold(self._pending_json.get(key, "") + chunk)
        return self.json_text(data)

    def flush_json(self) -> dict[Any, str]:
        """Every tool call's held-back arguments text, restored: ``{key: text}`` (non-empty)."""
        out = {key: self.json_text(data) for key, data in self._pending_json.items() if data}
        self._pending_json.clear()
        return out
