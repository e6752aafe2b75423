"""Optional detector engine on Microsoft Presidio (``presidio-analyzer``), fully offline.

Selected with ``classification: {engine: presidio}``; install with the ``presidio`` extra
(``pip install 'sovereign-gateway[presidio]'``). The default engine stays the built-in one
(:class:`~gateway.classify.builtin.BuiltinDetector`): it is faster and knows more formats.

Offline by construction — nothing is downloaded, neither when the engine is built nor when it
detects:

* **No NLP model.** Presidio's default engine loads a spaCy pipeline (``en_core_web_lg``) and
  downloads it when missing. This engine uses Presidio's :class:`NoOpNlpEngine` (empty NLP
  artifacts, no model) and registers only self-contained pattern/validation recognizers, so
  nothing needs tokens or named entities. Consequence: no ``PERSON``/``LOCATION`` NER, and
  Presidio's context words ("ssn", "card") cannot raise scores from the text.
* **No public-suffix-list fetch.** Presidio's ``EmailRecognizer`` validates the domain with
  ``tldextract.extract``, whose module-level extractor fetches the PSL from the internet on
  first use (and caches it under ``~/.cache``). :class:`_OfflineEmailRecognizer` uses its own
  ``tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)``: the PSL snapshot shipped
  inside the ``tldextract`` wheel, no URL, no disk cache.

Entity types are mapped onto our dotted labels by :data:`ENTITY_LABELS`; recognizers for
entities we have no label for are not loaded. What Presidio has no recognizer for is simply not
found by this engine: secrets (cloud keys, private keys, API tokens, JWTs) and the national IDs
of China, France, Norway, Belgium, the Netherlands and Japan (see ``tests/test_classify_presidio.py``
for the pinned differences).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import tldextract
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DeTaxIdRecognizer,
    EmailRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    FiPersonalIdentityCodeRecognizer,
    IbanRecognizer,
    InAadhaarRecognizer,
    IpRecognizer,
    ItFiscalCodeRecognizer,
    KrRrnRecognizer,
    PhoneRecognizer,
    PlPeselRecognizer,
    SePersonnummerRecognizer,
    UsSsnRecognizer,
)

from gateway.classify.builtin import DEFAULT_PHONE_REGIONS, LABELS, Finding

__all__ = ["DEFAULT_SCORE_THRESHOLD", "ENTITY_LABELS", "PresidioDetector"]

ENTITY_LABELS: Final[Mapping[str, str]] = {
    "CREDIT_CARD": "pii.payment_card",
    "EMAIL_ADDRESS": "pii.email",
    "IBAN_CODE": "pii.iban",
    "IP_ADDRESS": "pii.ip_address",
    "PHONE_NUMBER": "pii.phone",
    "US_SSN": "pii.national_id.us",
    "ES_NIF": "pii.national_id.es",
    "ES_NIE": "pii.national_id.es",
    "IT_FISCAL_CODE": "pii.national_id.it",
    "PL_PESEL": "pii.national_id.pl",
    "FI_PERSONAL_IDENTITY_CODE": "pii.national_id.fi",
    "SE_PERSONNUMMER": "pii.national_id.se",
    "KR_RRN": "pii.national_id.kr",
    "IN_AADHAAR": "pii.national_id.in",
    "DE_TAX_ID": "pii.national_id.de",
}
"""Presidio entity type → our label (every value is in :data:`~gateway.classify.LABELS`)."""

assert set(ENTITY_LABELS.values()) <= LABELS

DEFAULT_SCORE_THRESHOLD: Final = 0.4
"""Results scoring below this are dropped. Validated matches (cards, IBANs, emails, checksummed
IDs) score 1.0; unvalidated patterns keep Presidio's scores: phone 0.4, IP 0.6, SSN "medium"
(``ddd-dd-dddd``) 0.5. Without an NLP pipeline no context word can raise a score, so the
"very weak" SSN patterns (any 9 digits, 0.05) would otherwise flag every order number."""

_LANGUAGE: Final = "en"
"""Presidio selects recognizers by language; with no NLP pipeline the language is only that
key. Every recognizer is registered under it and runs on text in any language."""


class _OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc, unused-ignore]  # Any without the extra
    """Presidio's email recognizer, validating the domain against the bundled PSL snapshot:
    no suffix-list URL to fetch, no disk cache to read or write (``cache_dir=None``)."""

    def __init__(self, supported_language: str) -> None:
        super().__init__(supported_language=supported_language)
        self._tld = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    def validate_result(self, pattern_text: str) -> bool:
        return bool(self._tld(pattern_text).fqdn != "")


def _recognizers(phone_regions: Sequence[str]) -> list[EntityRecognizer]:
    lang = _LANGUAGE
    return [
        CreditCardRecognizer(supported_language=lang),
        _OfflineEmailRecognizer(supported_language=lang),
        IbanRecognizer(supported_language=lang),
        IpRecognizer(supported_language=lang),
        PhoneRecognizer(supported_language=lang, supported_regions=tuple(phone_regions)),
        UsSsnRecognizer(supported_language=lang),
        EsNifRecognizer(supported_language=lang),
        EsNieRecognizer(supported_language=lang),
        ItFiscalCodeRecognizer(supported_language=lang),
        PlPeselRecognizer(supported_language=lang),
        FiPersonalIdentityCodeRecognizer(supported_language=lang),
        SePersonnummerRecognizer(supported_language=lang),
        KrRrnRecognizer(supported_language=lang),
        InAadhaarRecognizer(supported_language=lang),
        DeTaxIdRecognizer(supported_language=lang),
    ]


class PresidioDetector:
    """Presidio's pattern recognizers behind the :class:`~gateway.classify.SpanDetector`
    interface, with no NLP model and no network (see the module docstring).

    ``phone_regions``: countries whose national phone formats are recognised (default: the
    built-in engine's). ``score_threshold``: see :data:`DEFAULT_SCORE_THRESHOLD`.

    Overlapping results of different types are settled as the built-in engine does: one
    label per span, the higher score (then the longer span) wins.
    """

    name = "presidio"

    def __init__(
        self,
        *,
        phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    ) -> None:
        regions = [r.upper() for r in phone_regions]
        recognizers = _recognizers(regions)
        unmapped = {e for r in recognizers for e in r.supported_entities} - set(ENTITY_LABELS)
        assert not unmapped, unmapped
        self._threshold = score_threshold
        self._engine = AnalyzerEngine(
            registry=RecognizerRegistry(recognizers=recognizers, supported_languages=[_LANGUAGE]),
            nlp_engine=NoOpNlpEngine(models=[{"lang_code": _LANGUAGE, "model_name": "no_op"}]),
            supported_languages=[_LANGUAGE],
        )

    def detect(self, texts: Sequence[str]) -> set[str]:
        """The labels found in any of ``texts`` (never the matched values)."""
        return {finding.label for finding in self.find(texts)}

    def find(self, texts: Sequence[str]) -> list[Finding]:
        """Every finding in ``texts``, with its text index and character span."""
        out: list[Finding] = []
        for index, text in enumerate(texts):
            if text:
                results = self._engine.analyze(text, language=_LANGUAGE, score_threshold=self._threshold)
                out.extend(Finding(label, index, start, end) for label, start, end in _settle(results))
        return out


def _settle(results: Iterable[RecognizerResult]) -> list[tuple[str, int, int]]:
    """Map entity types to labels and keep one label per span: higher score, then longer span,
    then earlier start claims first. Returned in text order."""
    kept: list[tuple[str, int, int]] = []
    ranked: list[Any] = sorted(results, key=lambda r: (-r.score, r.start - r.end, r.start))
    for result in ranked:
        label = ENTITY_LABELS.get(result.entity_type)
        if label is None:
            continue
        start, end = int(result.start), int(result.end)
        if any(start < e and s < end for _, s, e in kept):
            continue
        kept.append((label, start, end))
    return sorted(kept, key=lambda f: f[1])
