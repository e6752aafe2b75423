"""Classify stage: decide the data level of a request.

``level = max(tenant floor, detected, declared)`` — a client's declaration
(``x-data-classification`` header) may raise the level, never lower it below what the gateway
detects or the tenant's floor (DESIGN.md invariant 2). Content detectors plug in through the
:class:`Detector` protocol; each returns dotted labels (``pii.email``) for the request's text,
and :class:`Classifier` maps labels to a level. A detector that raises makes the request
``restricted`` (fail closed) and the error is kept for the audit record.

What the detectors read is every string of every field of the request body that some
endpoint forwards — every key and value at any depth, numbers as their JSON text — except
binary payloads and token-id prompts (:mod:`gateway.classify.walk`); a body the walk cannot
read is restricted too.

The default engine is :class:`~gateway.classify.builtin.BuiltinDetector` (validated patterns,
in process, no network). Engines that can also say *where* they found something implement
:class:`SpanDetector`; spans are for redaction only — the classifier and the audit record see
labels, never values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway.classify.builtin import LABELS, BuiltinDetector, Finding
from gateway.classify.walk import collect, forwarded_fields, request_texts
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
        """Classify one request body. Never raises: detector failure → restricted.

        The detectors read :func:`~gateway.classify.walk.request_texts` of the body plus the
        joins of its text-part lists (a value split across parts that the wire format sends
        as one string); ``label_counts`` counts matches in the texts, and in the joins only
        for labels found nowhere else (so a value is not counted twice)."""
        labels: set[str] = set()
        detector_error: str | None = None
        texts: list[str] = []
        joined: list[str] = []
        if self._detectors:
            try:
                collect(body, texts, joined=joined, fields=forwarded_fields())
            except Exception as exc:  # a body the walker cannot read fails closed too
                texts, joined = [], []
                detector_error = f"request_texts: {type(exc).__name__}"
            # each distinct text once: keys and enums repeat (tool schemas), labels do not change
            distinct = list(dict.fromkeys(texts + joined))
            for detector in self._detectors if detector_error is None else ():
                try:
                    labels |= detector.detect(distinct)
                except Exception as exc:  # any detector fault fails closed
                    # The exception type only: a message could quote the matched value.
                    detector_error = f"{detector.name}: {type(exc).__name__}"
        counts: dict[str, int] = {}
        if labels and detector_error is None:
            counts = self._count(texts)
            if joined and not labels <= counts.keys():
                for label, n in self._count(joined).items():
                    counts.setdefault(label, n)
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
