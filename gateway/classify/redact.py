"""Redaction, the obligation a policy may place on a deployment: ``{"redact": {deployment id:
[labels]}}``. Matched spans of those labels (a label or a label prefix such as ``pii``) are
replaced with typed placeholders (``[EMAIL_1]``, ``[IBAN_2]``) before the request leaves, the
same value always getting the same placeholder within a request; the mapping stays in the
gateway, so the answer can be restored for the client (:class:`Restorer`, stream-safe).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.classify import SpanDetector

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
        spans = sorted((f.start, f.end, f.label) for f in detector.find([text]) if _wanted(f.label, labels))
        if not spans:
            return text
        out, at = [], 0
        for start, end, label in spans:
            if start < at:
                continue  # overlapping span: the earlier one already covers it
            out.append(text[at:start])
            out.append(self.placeholder(label, text[start:end]))
            at = end
        out.append(text[at:])
        return "".join(out)


def _redact_value(value: Any, redaction: Redaction, detector: SpanDetector, labels: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redaction.text(value, detector, labels)
    if isinstance(value, list):
        return [_redact_value(v, redaction, detector, labels) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, redaction, detector, labels) for k, v in value.items()}
    return value


def redact_body(
    body: Mapping[str, Any], detector: SpanDetector, labels: Sequence[str]
) -> tuple[dict[str, Any], Redaction]:
    """A copy of a request with the wanted labels redacted in every message's text (string
    content, text parts, tool-call arguments and names) and in every other top-level field
    that reaches the provider: ``prompt``/``input``, ``suffix``, ``stop``, ``tools``,
    ``user``, ``metadata``… (only detected spans change; ids and numbers stay as they are)."""
    redaction = Redaction()
    out = dict(body)
    messages = []
    for message in body.get("messages") or []:
        message = dict(message)
        for key in ("content", "tool_calls", "function_call"):
            if key in message:
                message[key] = _redact_value(message[key], redaction, detector, labels)
        messages.append(message)
    if "messages" in body:
        out["messages"] = messages
    for key, value in body.items():
        if key not in ("messages", "model"):
            out[key] = _redact_value(value, redaction, detector, labels)
    return out, redaction


class Restorer:
    """Puts the original values back into the answer. For streams, :meth:`feed` holds back a
    tail that could be the start of a placeholder split across chunks; :meth:`flush` at the end."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = dict(mapping)
        self._pending = ""

    def text(self, text: str) -> str:
        """Restore every complete placeholder in ``text``."""
        return _PLACEHOLDER.sub(lambda m: self._mapping.get(m.group(0), m.group(0)), text)

    def feed(self, chunk: str) -> str:
        """Restored text that is safe to emit now (may be shorter than the input)."""
        data = self._pending + chunk
        cut = data.rfind("[")
        if cut != -1 and "]" not in data[cut:] and len(data) - cut <= _LONGEST_PLACEHOLDER:
            self._pending, data = data[cut:], data[:cut]
        else:
            self._pending = ""
        return self.text(data)

    def flush(self) -> str:
        """Whatever was held back, restored."""
        data, self._pending = self._pending, ""
        return self.text(data)
