"""Classify stage: decide the data level of a request.

``level = max(tenant floor, detected, declared)`` — a client's declaration
(``x-data-classification`` header) may raise the level, never lower it below what the gateway
detects or the tenant's floor (DESIGN.md invariant 2). Content detectors plug in through the
:class:`Detector` protocol; each returns dotted labels (``pii.email``) for the request's text,
and :class:`Classifier` maps labels to a level. A detector that raises makes the request
``restricted`` (fail closed) and the error is kept for the audit record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from gateway.context import Classification, DataLevel

__all__ = ["Classifier", "Detector", "request_texts"]


class Detector(Protocol):
    """Finds labels in text. ``name`` identifies it in audit records."""

    name: str

    def detect(self, texts: Sequence[str]) -> set[str]:
        """Return the dotted labels found in any of ``texts`` (never the matched values)."""
        ...


def _content_texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                for key in ("text", "input_text"):
                    if isinstance(part.get(key), str):
                        yield part[key]


def request_texts(body: Mapping[str, Any]) -> list[str]:
    """Every text-bearing part of a chat request: message contents (strings and text parts),
    tool-call arguments, and ``prompt``/``input`` fields."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        texts.extend(_content_texts(message.get("content")))
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                args = call["function"].get("arguments")
                if isinstance(args, str):
                    texts.append(args)
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(v for v in value if isinstance(v, str))
    return texts


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
        self._label_levels = dict(label_levels or {"secret": DataLevel.RESTRICTED, "pii": DataLevel.CONFIDENTIAL})

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
            texts = request_texts(body)
            for detector in self._detectors:
                try:
                    labels |= detector.detect(texts)
                except Exception as exc:  # any detector fault fails closed
                    detector_error = f"{detector.name}: {type(exc).__name__}"
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
        )
