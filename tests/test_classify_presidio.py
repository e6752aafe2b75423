"""The optional Presidio engine (``classification.engine: presidio``), unit level: the shared
pii.txt cases it can find (and the ones it cannot, pinned), entity → label mapping with exact
spans, no network and no model download while it is built and while it detects, and the
classifier running on it end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from pydantic import ValidationError

from gateway.classify import LABELS, Classifier
from gateway.classify.presidio import ENTITY_LABELS, PresidioDetector, _settle
from gateway.config import ClassificationConfig
from gateway.context import DataLevel

ROOT = Path(__file__).resolve().parents[1]
PII_CASES = ROOT.parent / "shared" / "cases" / "pii.txt"


@pytest.fixture(scope="module")
def detector() -> PresidioDetector:
    return PresidioDetector()


# --- the shared cases ------------------------------------------------------------------------

# pii.txt lines Presidio cannot find, and why. Pinned: each must still be missed (if Presidio
# learns one, this test fails and the entry goes).
PRESIDIO_MISSES = {
    "pay to de89370400440532013000": "IbanRecognizer matches upper-case IBANs only",
    "身份证号 11010519491231002X": "no China resident identity card recognizer",
    "key AKIAIOSFODNN7EXAMPLE in config": "no credential recognizers (secret.*)",
    "-----BEGIN RSA PRIVATE KEY-----": "no credential recognizers (secret.*)",
}


def _pii_cases() -> list[Any]:
    if not PII_CASES.is_file():  # never skip: a missing file fails the test below
        return [pytest.param(None, None, id="pii.txt-missing")]
    cases = []
    for number, line in enumerate(PII_CASES.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            text, labels = line.split("\t")
            cases.append(pytest.param(text, labels, id=f"line{number}"))
    return cases


def _family(label: str) -> str:
    return "pii.national_id" if label.startswith("pii.national_id.") else label


@pytest.mark.parametrize(("text", "expected"), _pii_cases())
def test_shared_pii_case(detector: PresidioDetector, text: str | None, expected: str | None) -> None:
    assert text is not None and expected is not None, f"{PII_CASES} is missing"
    found = detector.detect([text])
    if text in PRESIDIO_MISSES:
        assert found == set(), (text, found, "a pinned miss is found now: drop it from PRESIDIO_MISSES")
        return
    want = set() if expected.strip() == "-" else {x.strip() for x in expected.split(",")}
    assert {_family(label) for label in found} == want, (text, found)


def test_pinned_misses_are_pii_cases() -> None:
    lines = {line.split("\t")[0] for line in PII_CASES.read_text(encoding="utf-8").splitlines()}
    assert set(PRESIDIO_MISSES) <= lines
    # 10 of the 14 shared cases pass on Presidio; the built-in engine passes all 14.
    assert len([c for c in _pii_cases() if c.values[0] not in PRESIDIO_MISSES]) == 10


# --- labels and spans ------------------------------------------------------------------------


def test_entity_labels_are_ours(detector: PresidioDetector) -> None:
    assert set(ENTITY_LABELS.values()) <= LABELS
    entities = {e for r in detector._engine.registry.recognizers for e in r.supported_entities}
    assert entities == set(ENTITY_LABELS)  # every loaded recognizer is mapped, none is unused
    assert isinstance(detector._engine.nlp_engine, NoOpNlpEngine)


FOUND = [
    # (text, label, the exact value whose span is reported)
    ("Card 4111 1111 1111 1111 exp 12/29", "pii.payment_card", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005", "pii.payment_card", "3782-822463-10005"),
    ("Mail JANE.ROE@Example.ORG.", "pii.email", "JANE.ROE@Example.ORG"),
    ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "pii.iban", "GB82 WEST 1234 5698 7654 32"),
    ("Server 10.12.0.7 down", "pii.ip_address", "10.12.0.7"),
    ("link-local fe80::1ff:fe23:4567:890a", "pii.ip_address", "fe80::1ff:fe23:4567:890a"),
    ("Call +49 30 901820 after 5", "pii.phone", "+49 30 901820"),
    ("call (415) 555-2671 now", "pii.phone", "(415) 555-2671"),
    ("电话 138 0013 8000", "pii.phone", "138 0013 8000"),
    ("SSN 536-22-1234 on file", "pii.national_id.us", "536-22-1234"),
    ("DNI 12345678Z", "pii.national_id.es", "12345678Z"),
    ("NIE X1234567L", "pii.national_id.es", "X1234567L"),
    ("codice fiscale RSSMRA85T10A562S", "pii.national_id.it", "RSSMRA85T10A562S"),
    ("PESEL 44051401359", "pii.national_id.pl", "44051401359"),
    ("HETU 131052-308T", "pii.national_id.fi", "131052-308T"),
    ("Personnummer 811218-9876", "pii.national_id.se", "811218-9876"),
    ("RRN 900101-1234568", "pii.national_id.kr", "900101-1234568"),
    ("Aadhaar 2345 6789 0124", "pii.national_id.in", "2345 6789 0124"),
    ("Steuer-ID 86095742719", "pii.national_id.de", "86095742719"),
]


@pytest.mark.parametrize(("text", "label", "value"), FOUND)
def test_maps_entity_to_label_with_span(detector: PresidioDetector, text: str, label: str, value: str) -> None:
    findings = detector.find(["unrelated", text])
    assert [(f.label, f.text, text[f.start : f.end]) for f in findings] == [(label, 1, value)]
    assert detector.detect([text]) == {label}


@pytest.mark.parametrize(
    "text",
    [
        "Order 123456789 shipped",  # bare 9 digits: SSN "very weak" (0.05) is under the threshold
        "Order number 1234-5678-1234-5678",  # not Luhn-valid
        "The meeting is at 10:30 in room 4111",
        "mail x@example.invalidtld",  # not a suffix in the bundled PSL snapshot
        "",
    ],
)
def test_negatives(detector: PresidioDetector, text: str) -> None:
    assert detector.find([text]) == []


# Where Presidio and the built-in engine disagree beyond pii.txt (pinned so a version bump that
# changes them is noticed; the built-in engine gets each of these right).
PRESIDIO_DIFFERENCES = [
    ("ssn: 536221234", set()),  # compact SSN: "very weak" without context words
    ("NIR 2 95 10 99 126 111 93", set()),  # no French NIR recognizer
    ("BSN 111222333", set()),  # no Dutch BSN recognizer
    ("マイナンバー 123456789018", set()),  # no Japanese My Number recognizer
    ("NN 85.07.30-033.28", set()),  # no Belgian national number recognizer
    ("fnr 15119631693", {"pii.phone"}),  # no Norwegian fnr recognizer; libphonenumber calls it a phone
    ("version 8.0.5.3 is out", {"pii.ip_address"}),  # a dotted version looks like an IPv4 address
    ("Kundennummer 2468550, Auftrag 363019", {"pii.phone"}),  # a 6-digit order no. as a phone
]


@pytest.mark.parametrize(("text", "labels"), PRESIDIO_DIFFERENCES)
def test_known_differences(detector: PresidioDetector, text: str, labels: set[str]) -> None:
    assert detector.detect([text]) == labels


def test_overlapping_results_settle_one_label_per_span() -> None:
    results = [
        RecognizerResult("PHONE_NUMBER", 5, 24, 0.4),
        RecognizerResult("CREDIT_CARD", 5, 24, 1.0),
        RecognizerResult("US_SSN", 10, 21, 0.5),
        RecognizerResult("DATE_TIME", 30, 40, 0.9),  # not ours: dropped
        RecognizerResult("EMAIL_ADDRESS", 50, 60, 1.0),
    ]
    assert _settle(results) == [("pii.payment_card", 5, 24), ("pii.email", 50, 60)]


# --- offline ---------------------------------------------------------------------------------

# Runs in a fresh interpreter so nothing is imported, memoised or cached before the hook is in:
# import, engine construction and detection (an email makes tldextract load its suffix list)
# all happen under an audit hook that records and blocks every network and process event.
_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys

    EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
              "socket.gethostbyaddr", "socket.sendto", "urllib.Request", "http.client.connect",
              "subprocess.Popen", "os.system", "os.posix_spawn", "os.exec"}
    seen = []

    def hook(event, args):
        if event in EVENTS:
            seen.append(event + " " + repr(args)[:200])
            raise OSError("network blocked by test: " + event)

    sys.addaudithook(hook)
    from gateway.classify import Classifier
    from gateway.config import ClassificationConfig

    classifier = Classifier.from_config(ClassificationConfig(engine="presidio"))
    detector = classifier.detectors[0]
    labels = detector.detect(["Mail jane.roe@example.org or call +49 30 901820",
                              "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, host 10.12.0.7"])
    before = list(seen)
    try:  # control: the hook does see a lookup
        socket.getaddrinfo("localhost", 80)
    except OSError:
        pass
    print(json.dumps({"labels": sorted(labels), "events": before, "control": seen[len(before):],
                      "name": detector.name}))
    """
)


def test_no_network_or_download_during_construction_and_detection(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # tldextract's default cache dir is under ~/.cache
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["events"] == []
    assert out["control"] and out["control"][0].startswith("socket.getaddrinfo")
    assert out["name"] == "presidio"
    assert out["labels"] == ["pii.email", "pii.iban", "pii.ip_address", "pii.payment_card", "pii.phone"]
    assert list(tmp_path.rglob("*")) == []  # nothing cached on disk either


def test_module_level_tldextract_is_not_used(detector: PresidioDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    import tldextract.tldextract

    def fetching(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tldextract's module-level extractor fetches the PSL on first use")

    monkeypatch.setattr(tldextract.tldextract, "TLD_EXTRACTOR", fetching)
    monkeypatch.setattr(tldextract, "extract", fetching)
    assert PresidioDetector().detect(["write to jane.roe@example.org"]) == {"pii.email"}


# --- configuration and the classifier ----------------------------------------------------------


def test_config_selects_engine() -> None:
    assert ClassificationConfig().engine == "builtin"
    assert [d.name for d in Classifier.from_config(ClassificationConfig()).detectors] == ["builtin"]
    assert [d.name for d in Classifier.from_config(ClassificationConfig(engine="presidio")).detectors] == ["presidio"]
    with pytest.raises(ValidationError):
        ClassificationConfig(engine="spacy")  # type: ignore[arg-type]


def test_config_without_the_extra_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "presidio_analyzer" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ValidationError, match="sovereign-gateway\\[presidio\\]"):
        ClassificationConfig(engine="presidio")
    assert ClassificationConfig().engine == "builtin"  # the default needs nothing


def test_presidio_imported_only_when_selected() -> None:
    script = (
        "import sys\n"
        "from gateway.classify import Classifier\n"
        "from gateway.config import ClassificationConfig\n"
        "Classifier.from_config(ClassificationConfig())\n"
        "assert not any(m.split('.')[0] in ('presidio_analyzer', 'spacy', 'tldextract') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith(('presidio', 'spacy', 'tldextract')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _chat(arguments: str) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "Pay the invoice"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "pay", "arguments": arguments}}],
            },
        ],
    }


def test_classifier_end_to_end() -> None:
    config = ClassificationConfig(engine="presidio", label_levels={"pii.iban": "restricted"})
    classifier = Classifier.from_config(config)
    with_iban = classifier.classify(
        _chat('{"iban": "DE89 3704 0044 0532 0130 00", "amount": 12}'), declared=None, floor=DataLevel.PUBLIC
    )
    assert (with_iban.level, with_iban.labels, with_iban.detector_error) == (DataLevel.RESTRICTED, ("pii.iban",), None)
    email = classifier.classify(
        {"model": "auto", "input": "mail jane.roe@example.org"}, declared=None, floor=DataLevel.PUBLIC
    )
    assert (email.level, email.labels) == (DataLevel.CONFIDENTIAL, ("pii.email",))
    clean = classifier.classify(_chat('{"amount": 12}'), declared=None, floor=DataLevel.INTERNAL)
    assert (clean.level, clean.detected, clean.labels) == (DataLevel.INTERNAL, DataLevel.PUBLIC, ())


def test_classifier_fails_closed_when_presidio_raises(
    detector: PresidioDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret value 4111 1111 1111 1111")

    monkeypatch.setattr(detector._engine, "analyze", boom)
    result = Classifier([detector]).classify(_chat("{}"), declared=None, floor=DataLevel.PUBLIC)
    assert result.level == DataLevel.RESTRICTED
    assert result.detector_error == "presidio: RuntimeError"  # the type only, never the message


def test_spans_drive_redaction(detector: PresidioDetector) -> None:
    from gateway.classify.redact import redact_body

    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "mail jane.roe@example.org, card 4111 1111 1111 1111"}],
    }
    sent, _ = redact_body(body, detector, ["pii.email", "pii.payment_card"])
    assert sent["messages"][0]["content"] == "mail [EMAIL_1], card [CARD_1]"
