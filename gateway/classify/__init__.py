"""Classify stage: decide the data level of a request.

``level = max(tenant floor, detected, declared)`` — a client's declaration
(``x-data-classification`` header) may raise the level, never lower it below what the gateway
detects or the tenant's floor (DESIGN.md invariant 2). Content detectors plug in through the
:class:`Detector` protocol; each returns dotted labels (``pii.email``) for the request's text,
and :class:`Classifier` maps labels to a level. A detector that raises makes the request
``restricted`` (fail closed) and the error is kept for the audit record.

The default engine is :class:`~gateway.classify.builtin.BuiltinDetector` (validated patterns,
in process, no network). Engines that can also say *where* they found something implement
:class:`SpanDetector`; spans are for redaction only — the classifier and the audit record see
labels, never values.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway.classify.builtin import LABELS, BuiltinDetector, Finding
from gateway.context import Classification, DataLevel

if TYPE_CHECKING:
    from gateway.config import ClassificationConfig

__all__ = [
    "DEFAULT_LABEL_LEVELS",
    "LABELS",
    "BuiltinDetector",
    "Classifier",
    "Detector",
    "Finding",
    "SpanDetector",
    "request_texts",
]

DEFAULT_LABEL_LEVELS: Final[Mapping[str, DataLevel]] = {"secret": DataLevel.RESTRICTED, "pii": DataLevel.CONFIDENTIAL}
"""Label prefix → level implied by a match, unless configured otherwise."""


class Detector(Protocol):
    """Finds labels in text. ``name`` identifies it in audit records."""

    name: str

    def detect(self, texts: Sequence[str]) -> set[str]:
        """Return the dotted labels found in any of ``texts`` (never the matched values)."""
        ...


class SpanDetector(Detector, Protocol):
    """A detector that can also report where: ``find`` returns one :class:`Finding`
    (label, text index, start, end — character offsets) per match, for redaction."""

    def find(self, texts: Sequence[str]) -> list[Finding]:
        """Every finding in ``texts`` with its span."""
        ...


# Keys whose values are never natural-language text sent to a model: identifiers, enums and
# binary payloads (base64 images, audio, files).
_SKIP_KEYS: Final = frozenset(
    {
        "type", "id", "role", "tool_call_id", "call_id", "tool_use_id", "detail", "format",
        "media_type", "mime_type", "cache_control", "data", "file_data", "file_id", "signature",
        "status", "object", "model",
    }
)  # fmt: skip


def _strings(value: Any, out: list[str], depth: int = 0) -> None:
    """Append every string leaf of a JSON value (integers too: card numbers arrive as JSON
    numbers in tool arguments). Skips identifier/binary keys and ``data:`` URLs."""
    if isinstance(value, str):
        if value and not value.startswith("data:"):
            out.append(value)
    elif isinstance(value, dict):
        if depth < 32:
            for key, item in value.items():
                if key not in _SKIP_KEYS:
                    _strings(item, out, depth + 1)
    elif isinstance(value, list):
        if depth < 32:
            for item in value:
                _strings(item, out, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(str(value))


def _function(function: Mapping[str, Any], out: list[str]) -> None:
    """A tool call's function: its name and its arguments."""
    if isinstance(function.get("name"), str):
        out.append(function["name"])
    _arguments(function.get("arguments"), out)


def _arguments(args: Any, out: list[str]) -> None:
    """Tool-call arguments: a JSON string as the model wrote it. When it holds escapes
    (``\\u0031``, ``\\n``) the decoded values are scanned, otherwise the string itself."""
    if isinstance(args, str):
        if "\\" in args:
            try:
                _strings(json.loads(args), out)
                return
            except (ValueError, RecursionError):
                pass
        if args:
            out.append(args)
    else:
        _strings(args, out)


def _message(message: Any, out: list[str]) -> None:
    if isinstance(message, str):
        out.append(message)
        return
    if not isinstance(message, dict):
        return
    for key, value in message.items():
        if key == "tool_calls" and isinstance(value, list):
            for call in value:
                if isinstance(call, dict):
                    function = call.get("function")
                    if isinstance(function, dict):
                        _function(function, out)
                    else:
                        _strings(call, out)
        elif key in ("function_call", "arguments") and isinstance(value, (dict, str)):
            if isinstance(value, dict):
                _function(value, out)
            else:
                _arguments(value, out)
        elif key == "content" and isinstance(value, list):
            for part in value:
                if isinstance(part, dict) and part.get("type") == "tool_use":
                    _strings(part.get("name"), out)
                    _arguments(part.get("input"), out)
                else:
                    _strings(part, out)
        elif key not in _SKIP_KEYS:
            _strings(value, out)


def request_texts(body: Mapping[str, Any]) -> list[str]:
    """Every text-bearing part of a request body, on every endpoint's wire format.

    * ``messages[]`` (chat, Anthropic messages): system/developer/user/assistant/tool messages;
      ``content`` as a string or an array of parts (``text``, ``input_text``, ``output_text``,
      ``refusal``, Anthropic ``tool_result`` with nested content, ``tool_use`` input); the
      assistant's ``tool_calls[].function`` name and arguments (JSON-decoded when escaped),
      legacy ``function_call``; ``name``, ``refusal`` and reasoning text.
    * ``prompt`` and ``suffix`` (completions), ``input`` (embeddings: string or list; responses:
      string or items incl. ``function_call.arguments`` and ``function_call_output.output``),
      ``instructions`` (responses), ``system`` (Anthropic), ``tools`` (names, descriptions,
      schemas), ``user`` and ``metadata``; ``stop`` / ``stop_sequences``, ``prediction``,
      ``response_format`` / ``text`` (schemas), ``web_search_options`` (user location) and the
      ``safety_identifier`` / ``prompt_cache_key`` — everything a provider would receive.

    Token-id prompts (lists of integers) are skipped, as are ids, enums and binary payloads
    (base64 images, audio, ``data:`` URLs). Returns the strings in request order.
    """
    out: list[str] = []
    for message in body.get("messages") or ():
        _message(message, out)
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, list) and value and all(isinstance(x, int) for x in value):
            continue  # token ids
        if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
            continue  # batches of token ids
        if isinstance(value, list):
            for item in value:
                _message(item, out)
        else:
            _strings(value, out)
    for key in (
        "suffix", "instructions", "system", "tools", "functions", "user", "metadata",
        "stop", "stop_sequences", "prediction", "response_format", "text", "web_search_options",
        "safety_identifier", "prompt_cache_key",
    ):  # fmt: skip
        value = body.get(key)
        if value is not None:
            _strings(value, out)
    return out


class Classifier:
    """Runs detectors and computes the request's level.

    ``label_levels`` maps a label prefix (``secret``, ``pii``, ``pii.email``) to the level a
    match implies; the longest matching prefix wins; unmapped labels imply ``confidential``.
    """

    def __init__(
        self,
        detectors: Sequence[Detector] = (),
        label_levels: Mapping[str, DataLevel] | None = None,
    ) -> None:
        self._detectors = tuple(detectors)
        self._label_levels = dict(label_levels or DEFAULT_LABEL_LEVELS)

    @classmethod
    def with_builtin(cls, label_levels: Mapping[str, DataLevel] | None = None) -> Classifier:
        """The default classifier: the built-in engine (:class:`BuiltinDetector`) and
        ``label_levels`` (default :data:`DEFAULT_LABEL_LEVELS`)."""
        return cls([BuiltinDetector()], label_levels)

    @classmethod
    def from_config(cls, config: ClassificationConfig) -> Classifier:
        """The classifier ``classification:`` configures: its ``engine`` — ``builtin``
        (:class:`BuiltinDetector`) or ``presidio`` (:class:`~gateway.classify.presidio.PresidioDetector`,
        imported only when selected) — and its ``label_levels``."""
        if config.engine == "presidio":
            from gateway.classify.presidio import PresidioDetector

            return cls([PresidioDetector()], config.levels())
        return cls.with_builtin(config.levels())

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors run on every request, in order."""
        return self._detectors

    def _level_of(self, label: str) -> DataLevel:
        parts = label.split(".")
        for end in range(len(parts), 0, -1):
            level = self._label_levels.get(".".join(parts[:end]))
            if level is not None:
                return level
        return DataLevel.CONFIDENTIAL

    def classify(self, body: Mapping[str, Any], *, declared: DataLevel | None, floor: DataLevel) -> Classification:
        """Classify one request body. Never raises: detector failure → restricted."""
        labels: set[str] = set()
        detector_error: str | None = None
        if self._detectors:
            try:
                texts = request_texts(body)
            except Exception as exc:  # a body the walker cannot read fails closed too
                texts = []
                detector_error = f"request_texts: {type(exc).__name__}"
            for detector in self._detectors if detector_error is None else ():
                try:
                    labels |= detector.detect(texts)
                except Exception as exc:  # any detector fault fails closed
                    # The exception type only: a message could quote the matched value.
                    detector_error = f"{detector.name}: {type(exc).__name__}"
        counts: dict[str, int] = {}
        if labels and detector_error is None:
            counts = self._count(texts)
        detected = max((self._level_of(label) for label in labels), default=DataLevel.PUBLIC)
        if detector_error is not None:
            detected = DataLevel.RESTRICTED
        level = max(floor, detected, declared if declared is not None else DataLevel.PUBLIC)
        return Classification(
            level=level,
            detected=detected,
            declared=declared,
            labels=tuple(sorted(labels)),
            detector_error=detector_error,
            label_counts=counts,
        )

    def _count(self, texts: Sequence[str]) -> dict[str, int]:
        """Matches per label (for the audit record), from the first detector that reports
        spans; only run when something was found, so clean requests pay nothing."""
        for detector in self._detectors:
            find = getattr(detector, "find", None)
            if callable(find):
                try:
                    return dict(Counter(f.label for f in find(texts)))
                except Exception:  # counts are informative; the labels already decided the level
                    return {}
        return {}
