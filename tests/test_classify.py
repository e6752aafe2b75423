"""Classify stage, unit level: the built-in detector engine (validated formats, normalisation,
spans), request_texts over every wire format, and the classifier's level rules (fail closed)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.classify import DEFAULT_LABEL_LEVELS, LABELS, BuiltinDetector, Classifier, request_texts
from gateway.classify.normalize import fold, shapes
from gateway.config import ClassificationConfig
from gateway.context import DataLevel
from gateway.errors import ConfigError

PII_CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "pii.txt"

DETECTOR = BuiltinDetector()


def fw(text: str, space: str = "\u3000") -> str:
    """``text`` as people type it with a CJK input method: full-width forms (U+FF01-FF5E)."""
    return "".join(space if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


FW_IBAN = fw("DE89 3704 0044 0532 0130 00", space=" ")


def _pii_cases() -> list[Any]:
    if not PII_CASES.is_file():  # never skip: a missing file fails the test below
        return [pytest.param(None, None, id="pii.txt-missing")]
    cases = []
    for number, line in enumerate(PII_CASES.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        text, labels = line.split("\t")
        cases.append(pytest.param(text, labels, id=f"line{number}"))
    return cases


def _family(label: str) -> str:
    return "pii.national_id" if label.startswith("pii.national_id.") else label


@pytest.mark.parametrize(("text", "expected"), _pii_cases())
def test_shared_pii_case(text: str | None, expected: str | None) -> None:
    assert text is not None and expected is not None, f"{PII_CASES} is missing"
    want = set() if expected.strip() == "-" else {x.strip() for x in expected.split(",")}
    found = DETECTOR.detect([text])
    assert {_family(label) for label in found} == want, (text, found)


POSITIVE = [
    # payment cards: Luhn + issuer range, any grouping
    ("Card 4111 1111 1111 1111 exp 12/29", "pii.payment_card"),
    ("amex 3782-822463-10005", "pii.payment_card"),
    ("pay with 5555555555554444 today", "pii.payment_card"),
    ("card 4111 1111\n1111 1111 ok", "pii.payment_card"),
    ("Card " + fw("4111 1111 1111 1111"), "pii.payment_card"),
    # IBAN: ISO 13616 mod-97, registry length, any case and grouping
    ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "pii.iban"),
    ("pay to de89370400440532013000", "pii.iban"),
    ("IBAN DE89 3704 0044\n0532 0130 00", "pii.iban"),
    ("FR14 2004 1010 0505 0001 3M02 606", "pii.iban"),
    (fw("DE89 3704 0044 0532 0130 00", space=" "), "pii.iban"),
    # email
    ("Mail me at jane.roe@example.org", "pii.email"),
    ("mail JANE.ROE@Example.ORG.", "pii.email"),
    ("contact: 张三 <zhang.san+news@mail.example.cn>", "pii.email"),
    # phones: libphonenumber-valid, international or national formats of the default regions
    ("Call +49 30 901820 after 5", "pii.phone"),
    ("Ring 020 7946 0958 (London office)", "pii.phone"),
    ("call (415) 555-2671 now", "pii.phone"),
    ("call 415.555.2671 now", "pii.phone"),
    ("+1 415 555 2671", "pii.phone"),
    ("+44 (0)20 7946 0958", "pii.phone"),
    ("Tél. : 06 12 34 56 78", "pii.phone"),
    ("电话" + fw(":") + "138 0013 8000", "pii.phone"),
    ("手机13800138000", "pii.phone"),
    ("phone\u00a0+49\u00a030\u00a0901820", "pii.phone"),
    ("Tel 030/901820", "pii.phone"),
    ("phone 4155552671", "pii.phone"),
    ("Tel. +39016392251.", "pii.phone"),  # passes the Belgian NN check too; "+" makes it a phone
    ("电话 13099001865 ok", "pii.phone"),  # passes the Norwegian fnr check too; a China mobile
    # national IDs (python-stdnum rules)
    ("SSN 536-22-1234 on file", "pii.national_id.us"),
    ("ssn: 536221234", "pii.national_id.us"),
    ("身份证号 11010519491231002X", "pii.national_id.cn"),
    ("身份证号11010519491231002x", "pii.national_id.cn"),
    ("身份证 110105 19491231 002X", "pii.national_id.cn"),
    ("身份证 " + fw("11010519491231002X"), "pii.national_id.cn"),
    ("NIR 2 95 10 99 126 111 93", "pii.national_id.fr"),
    ("DNI 12345678Z", "pii.national_id.es"),
    ("NIE X1234567L", "pii.national_id.es"),
    ("codice fiscale RSSMRA85T10A562S", "pii.national_id.it"),
    ("HETU 131052-308T", "pii.national_id.fi"),
    ("Personnummer 811218-9876", "pii.national_id.se"),
    ("RRN 900101-1234568", "pii.national_id.kr"),
    ("fnr 15119631693", "pii.national_id.no"),
    ("NN 85.07.30-033.28", "pii.national_id.be"),
    ("PESEL 44051401359", "pii.national_id.pl"),
    ("BSN 111222333", "pii.national_id.nl"),
    ("Aadhaar 2345 6789 0124", "pii.national_id.in"),
    ("Steuer-ID 86095742719", "pii.national_id.de"),
    ("マイナンバー 123456789018", "pii.national_id.jp"),
    # IP addresses (ipaddress)
    ("Server at 10.12.0.7 is down", "pii.ip_address"),
    ("ping 192.168.1.254.", "pii.ip_address"),
    ("host 1.31.65.66, up", "pii.ip_address"),  # not a date "1.31.65" followed by 66
    ("host 24.12.40.161 is up", "pii.ip_address"),  # not a date "24.12.40" followed by 161
    ("link-local fe80::1ff:fe23:4567:890a", "pii.ip_address"),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "pii.ip_address"),
    # secrets by published format
    ("key AKIAIOSFODNN7EXAMPLE in config", "secret.cloud_key"),
    ("ASIAY34FZKBOKMUTVV7A", "secret.cloud_key"),
    ('"private_key_id": "0123456789abcdef0123456789abcdef01234567"', "secret.cloud_key"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret.cloud_key"),
    ("AccountName=x;AccountKey=" + "A1b2" * 21 + "Ab==;EndpointSuffix=core.windows.net", "secret.cloud_key"),
    ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "secret.cloud_key"),
    ("-----BEGIN RSA PRIVATE KEY-----", "secret.private_key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "secret.private_key"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "secret.private_key"),
    ("token ghp_" + "a1" * 18, "secret.api_token"),
    ("github_pat_" + "A1b2" * 20, "secret.api_token"),
    ("xoxb-123456789012-123456789012-abcdefABCDEF123456", "secret.api_token"),
    ("glpat-abcdefghij1234567890", "secret.api_token"),
    ("OPENAI_API_KEY=sk-proj-" + "Ab1" * 20, "secret.api_token"),
    ("sk-ant-api03-" + "x9Y" * 30, "secret.api_token"),
    ("key=sk_live_" + "a1B" * 8, "secret.api_token"),
    ("hf_" + "abcdefghij" * 4, "secret.api_token"),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "secret.jwt",
    ),
]


@pytest.mark.parametrize(("text", "label"), POSITIVE, ids=[p[1] + ":" + p[0][:24] for p in POSITIVE])
def test_detects_validated_value(text: str, label: str) -> None:
    assert DETECTOR.detect([text]) == {label}


HARD_NEGATIVES = [
    "Order number 1234-5678-1234-5678",
    "The meeting is at 10:30 in room 4111",
    "Card 4111 1111 1111 1112 (Luhn fails)",
    "Order 4006381333931 shipped",  # EAN-13, Luhn-valid, Visa-like prefix
    "Invoice INV-2024-000123 dated 2024-03-15",
    "Delivered on 15.03.2024, due 03/15/2024",
    "Upgrade to v1.2.3 or v1.2.3.4 before Friday",
    "version 1.2.3.4 is the current release",
    "Running Python 3.11.7 on kernel 6.5.0-1024-generic",
    "ISBN 978-3-16-148410-0",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "Coordinates 52.5200, 13.4050",
    "Timestamp 1700000000 (Unix seconds)",
    "Listening on localhost:8000 with 8 workers at 10:30:45",
    "Population 1,234,567 (2.5% growth)",
    "Preis: 1.234,56 EUR",
    "DE89 is a prefix, not an IBAN; DE89370400440532013001 fails mod-97",
    "SSN 000-12-3456 and 666-12-3456 are never issued",
    "template std::vector<int> and a::b",
    "Tel. 12345",
    "sk-test-acme-app is a demo key",
    "API key: sk-short",
    "@decorator on x@y",
    "ratio 0.0001234567 of the total",
    "Kundennummer 4471123, Auftrag 987654",
    "eyJhbGciOiJub25lIn0 alone is not a token",
    "My cell is broken. Reference no. 7748654596",  # bare 10 digits, phone keyword too far away
]


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negative_finds_nothing(text: str) -> None:
    assert DETECTOR.detect([text]) == set()


def test_spans_point_at_the_value_in_the_original_text() -> None:
    text = "IBAN " + FW_IBAN + ", mail a.b@example.com, call +49 30 901820."
    found = {f.label: text[f.start : f.end] for f in DETECTOR.find(["x", text])}
    assert found == {
        "pii.iban": FW_IBAN,
        "pii.email": "a.b@example.com",
        "pii.phone": "+49 30 901820",
    }
    assert {f.text for f in DETECTOR.find(["x", text])} == {1}


def test_card_is_not_also_a_phone_and_iban_digits_are_not_an_id() -> None:
    assert DETECTOR.detect(["4111 1111 1111 1111"]) == {"pii.payment_card"}
    assert DETECTOR.detect(["DE89 3704 0044 0532 0130 00"]) == {"pii.iban"}
    assert DETECTOR.detect(["Tel. 030 901820 / 030 901821"]) == {"pii.phone"}
    assert len(DETECTOR.find(["Tel. 030 901820 / 030 901821"])) == 2


def test_every_label_is_declared() -> None:
    found: set[str] = set()
    for text, _label in POSITIVE:
        found |= DETECTOR.detect([text])
    assert found <= LABELS
    assert all(label.split(".")[0] in DEFAULT_LABEL_LEVELS for label in LABELS)


def test_fold_keeps_length_and_maps_what_people_type() -> None:
    assert fold("abc") == "abc"
    assert fold(fw("4111-1111 DE89")) == "4111-1111 DE89"
    assert fold("٤١١١ ۱۲۳") == "4111 123"  # Arabic-Indic and Extended Arabic-Indic digits
    assert fold("a\u2014b\u00a0c\u2212d") == "a-b c-d"
    assert fold("中文" + fw(",") + "标点。") == "中文" + fw(",") + "标点。"  # compatibility forms nobody scans stay
    rng = random.Random(3)
    for _ in range(200):
        text = "".join(chr(rng.choice((rng.randrange(32, 0x3000), rng.randrange(0xFF00, 0xFFEF)))) for _ in range(40))
        folded, raw, cls, tok = shapes(text)
        assert len(folded) == len(raw) == len(cls) == len(tok) == len(text)


def test_lone_surrogates_and_odd_text_do_not_crash() -> None:
    texts = ["\ud800 4111 1111 1111 1111", "\x00" * 50, "0" * 5000, "1 " * 3000, "-" * 100, "@" * 100, ":" * 50]
    assert "pii.payment_card" in DETECTOR.detect(texts)


def test_long_digit_tables_stay_fast() -> None:
    import time

    text = " ".join(f"{i:02d}" for i in range(100)) * 30  # a hex-dump-like table, ~9 KB
    started = time.perf_counter()
    DETECTOR.detect([text])
    assert time.perf_counter() - started < 1.0


# --- request_texts ---------------------------------------------------------------------------


def test_request_texts_reads_every_text_bearing_part() -> None:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "S-system"},
            {"role": "developer", "content": [{"type": "text", "text": "S-developer"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "S-user-part"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "AKIAIOSFODNN7EXAMPLE" * 4}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA" * 16, "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "pay", "arguments": '{"to": "S-args"}'}},
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "f", "arguments": json.dumps({"v": "S-esc\u00e9", "n": 4111111111111111})},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "S-tool-result"},
            {"role": "assistant", "function_call": {"name": "g", "arguments": '{"a": "S-legacy"}'}},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "S-anthropic"}]},
                    {"type": "tool_use", "id": "t2", "name": "h", "input": {"q": "S-tool-use"}},
                ],
            },
            {"role": "assistant", "content": "ok", "refusal": "S-refusal"},
        ],
        "prompt": ["S-prompt-1", "S-prompt-2"],
        "suffix": "S-suffix",
        "instructions": "S-instructions",
        "system": [{"type": "text", "text": "S-anthropic-system"}],
        "tools": [{"type": "function", "function": {"name": "pay", "description": "S-tool-description"}}],
        "user": "S-user-field",
        "metadata": {"k": "S-metadata"},
    }
    texts = request_texts(body)
    joined = "\n".join(texts)
    for marker in (
        "S-system", "S-developer", "S-user-part", "S-args", "S-esc\u00e9", "4111111111111111", "S-tool-result",
        "S-legacy", "S-anthropic", "S-tool-use", "S-refusal", "S-prompt-1", "S-prompt-2", "S-suffix",
        "S-instructions", "S-anthropic-system", "S-tool-description", "S-user-field", "S-metadata",
    ):  # fmt: skip
        assert marker in joined, marker
    # binary payloads (well-formed base64) are skipped; ids, enums and keys are scanned
    assert "AKIA" not in joined and "AAAA" not in joined and "data:image/png;base64," in texts
    assert "call_1" in texts and "auto" in texts and "tool_call_id" in texts and "wav" in texts


def test_request_texts_reads_responses_and_embeddings_inputs() -> None:
    responses = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "S-input-text"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"x": "S-fc-args"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "S-fc-output"},
        ]
    }
    joined = "\n".join(request_texts(responses))
    assert all(m in joined for m in ("S-input-text", "S-fc-args", "S-fc-output"))
    assert request_texts({"input": "S-one"}) == ["input", "S-one"]  # keys are scanned too
    assert request_texts({"input": ["S-a", "S-b"]}) == ["input", "S-a", "S-b"]
    assert request_texts({"input": [1, 2, 3]}) == ["input"]  # token ids
    assert request_texts({"prompt": [[1, 2], [3]]}) == ["prompt"]


def test_escaped_tool_arguments_are_decoded_before_scanning() -> None:
    args = json.dumps({"iban": FW_IBAN})  # \uff24\uff25… escapes
    assert "\\u" in args
    body = {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "p", "arguments": args}}]}]}
    assert DETECTOR.detect(request_texts(body)) == {"pii.iban"}


# --- classifier --------------------------------------------------------------------------------


class _Fixed:
    def __init__(self, name: str, labels: set[str]) -> None:
        self.name = name
        self.labels = labels

    def detect(self, texts: Sequence[str]) -> set[str]:
        return set(self.labels)


class _Exploding:
    name = "exploding"

    def detect(self, texts: Sequence[str]) -> set[str]:
        raise RuntimeError(f"cannot parse {texts[0]!r}")  # a message quoting the value


def _chat(content: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}]}


def test_builtin_classifier_levels_pii_confidential_and_secrets_restricted() -> None:
    classifier = Classifier.with_builtin()
    c = classifier.classify(_chat("IBAN DE89370400440532013000"), declared=None, floor=DataLevel.PUBLIC)
    assert (c.level, c.detected, c.labels) == (DataLevel.CONFIDENTIAL, DataLevel.CONFIDENTIAL, ("pii.iban",))
    c = classifier.classify(_chat("key AKIAIOSFODNN7EXAMPLE"), declared=None, floor=DataLevel.PUBLIC)
    assert c.level == DataLevel.RESTRICTED and c.labels == ("secret.cloud_key",)
    c = classifier.classify(_chat("Say hello"), declared=None, floor=DataLevel.INTERNAL)
    assert (c.level, c.detected, c.labels) == (DataLevel.INTERNAL, DataLevel.PUBLIC, ())


def test_declared_level_only_raises_the_detected_one() -> None:
    classifier = Classifier.with_builtin()
    body = _chat("IBAN DE89 3704 0044 0532 0130 00, mail jane.roe@example.org")
    c = classifier.classify(body, declared=DataLevel.PUBLIC, floor=DataLevel.PUBLIC)
    assert c.level == DataLevel.CONFIDENTIAL and c.declared == DataLevel.PUBLIC
    assert c.labels == ("pii.email", "pii.iban")
    assert all("DE89" not in label and "jane" not in label for label in c.labels)
    c = classifier.classify(body, declared=DataLevel.RESTRICTED, floor=DataLevel.PUBLIC)
    assert c.level == DataLevel.RESTRICTED and c.detected == DataLevel.CONFIDENTIAL


def test_detector_crash_fails_closed_to_restricted_without_quoting_the_value() -> None:
    classifier = Classifier([_Fixed("fixed", {"pii.email"}), _Exploding()])
    c = classifier.classify(_chat("IBAN DE89370400440532013000"), declared=None, floor=DataLevel.PUBLIC)
    assert c.level == DataLevel.RESTRICTED and c.detected == DataLevel.RESTRICTED
    assert c.detector_error == "exploding: RuntimeError"
    assert c.labels == ("pii.email",)


def test_unreadable_body_fails_closed_to_restricted() -> None:
    class BadMessage(dict[str, Any]):
        def items(self) -> Any:
            raise ValueError("boom")

    c = Classifier.with_builtin().classify({"messages": [BadMessage()]}, declared=None, floor=DataLevel.PUBLIC)
    assert c.level == DataLevel.RESTRICTED and c.detector_error == "request_texts: ValueError"


def test_label_levels_longest_prefix_wins() -> None:
    levels = ClassificationConfig.model_validate(
        {"label_levels": {"pii.email": "internal", "secret.jwt": "confidential"}}
    )
    classifier = Classifier([_Fixed("f", {"pii.email"})], levels.levels())
    assert classifier.classify(_chat("x"), declared=None, floor=DataLevel.PUBLIC).level == DataLevel.INTERNAL
    classifier = Classifier([_Fixed("f", {"pii.email", "pii.iban"})], levels.levels())
    assert classifier.classify(_chat("x"), declared=None, floor=DataLevel.PUBLIC).level == DataLevel.CONFIDENTIAL
    classifier = Classifier([_Fixed("f", {"secret.jwt"})], levels.levels())
    assert classifier.classify(_chat("x"), declared=None, floor=DataLevel.PUBLIC).level == DataLevel.CONFIDENTIAL
    classifier = Classifier([_Fixed("f", {"secret.api_token"})], levels.levels())
    assert classifier.classify(_chat("x"), declared=None, floor=DataLevel.PUBLIC).level == DataLevel.RESTRICTED


def test_label_levels_config_is_validated() -> None:
    from gateway.config import parse_config

    base: dict[str, Any] = {
        "deployments": [
            {
                "id": "d", "adapter": "openai_compat", "model": "m", "api_base": "http://127.0.0.1:1/v1",
                "locality": "local", "jurisdiction": "EU", "region": "r", "context_window": 100,
                "price": {"input_per_mtok": 0, "output_per_mtok": 0},
            }
        ],
        "tenants": {"t": {"home_region": "eu", "allowed": {"public": {"any": True}}}},
    }  # fmt: skip
    assert parse_config(base).classification.levels() == dict(DEFAULT_LABEL_LEVELS)
    with pytest.raises(ConfigError, match=r"classification\.label_levels"):
        parse_config({**base, "classification": {"label_levels": {"pii": "secretish"}}})
    with pytest.raises(ConfigError, match=r"classification\.label_levels"):
        parse_config({**base, "classification": {"label_levels": {"PII email": "restricted"}}})


# --- request_texts: every key and value, any depth, numbers; only binary payloads skipped ----

_EMAIL = "jane.roe@example.org"
_CARD = "4111111111111111"
_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"  # 72 chars


def test_request_texts_scans_every_key_in_document_order() -> None:
    body = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {_EMAIL: {}}}}}],
        "metadata": {"k-" + _EMAIL: "v"},
        "logit_bias": {_CARD: 1},
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"k": {_EMAIL: 1}}}}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "g", "input": {"u-" + _EMAIL: 1}}],
            },
        ],
    }
    texts = request_texts(body)
    assert texts[:4] == ["tools", "type", "function", "function"]  # a key, then its value
    for key in (_EMAIL, "k-" + _EMAIL, _CARD, "u-" + _EMAIL, "logit_bias", "metadata"):
        assert key in texts, key
    assert texts.index("logit_bias") < texts.index(_CARD) < texts.index("messages")


def test_request_texts_scans_keys_of_escaped_arguments() -> None:
    args = json.dumps({_EMAIL: "a\nb"})
    texts = request_texts({"messages": [{"tool_calls": [{"function": {"arguments": args}}]}]})
    assert _EMAIL in texts and "a\nb" in texts and args not in texts
    assert DETECTOR.detect(texts) == {"pii.email"}


@pytest.mark.parametrize(
    ("value", "text"),
    [(4111111111111111, _CARD), (4111111111111111.0, _CARD + ".0"), (-7, "-7"), (0.5, "0.5"), (1e300, "1e+300")],
)
def test_request_texts_reads_numbers_as_their_json_text(value: Any, text: str) -> None:
    assert request_texts({"metadata": {"c": value}}) == ["metadata", "c", text]
    assert json.dumps(value) == text  # what the provider receives
    assert request_texts({"stream": True, "user": None}) == ["stream", "user"]


def test_request_texts_skips_only_fields_no_endpoint_forwards() -> None:
    """The wire formats drop (or refuse) fields not in their lists: such a field never leaves,
    so it does not raise the level; every field some endpoint forwards is read."""
    from gateway.classify.walk import forwarded_fields
    from gateway.wire.anthropic import MESSAGES_PARAMS
    from gateway.wire.responses import RESPONSES_PARAMS

    assert request_texts({"note": _EMAIL, "frobnicate": {_EMAIL: 1}, "user": "u"}) == ["user", "u"]
    assert {"service_tier", "verbosity", "audio", "modalities", "seed", "thinking", "reasoning"} <= forwarded_fields()
    assert (MESSAGES_PARAMS | RESPONSES_PARAMS).issubset(forwarded_fields())
    c = Classifier.with_builtin().classify({"note": _EMAIL}, declared=None, floor=DataLevel.PUBLIC)
    assert c.labels == ()


@pytest.mark.parametrize("depth", [31, 32, 40, 5000])
def test_request_texts_has_no_depth_limit(depth: int) -> None:
    value: Any = _EMAIL
    for _ in range(depth):
        value = {"n": [value]}
    assert request_texts({"metadata": value})[-1] == _EMAIL
    c = Classifier.with_builtin().classify({"metadata": value}, declared=None, floor=DataLevel.PUBLIC)
    assert c.labels == ("pii.email",) and c.detector_error is None


DATA_TEXT = f"data: my card is 4111 1111 1111 1111 and my IBAN DE89 3704 0044 0532 0130 00, mail {_EMAIL}"


@pytest.mark.parametrize(
    ("value", "scanned"),
    [
        (DATA_TEXT, DATA_TEXT),  # not a data URL
        ("data:image/png;base64," + _B64, "data:image/png;base64,"),  # payload skipped, header read
        ("DATA:image/png;name=" + _EMAIL + ";base64," + _B64, "DATA:image/png;name=" + _EMAIL + ";base64,"),
        ("data:text/plain;base64," + _CARD, "data:text/plain;base64," + _CARD),  # too short to be binary
        ("data:image/png;base64," + _B64 + " " + _EMAIL, None),  # not base64
        ("data:image/png;base64," + _B64[:-1], None),  # not padded to a multiple of 4
        ("data:image/png;base64," + _B64[:-4] + "A=B=", None),  # padding inside
        ("data:image/png," + _B64, None),  # not base64-encoded
        ("data:text/plain," + _EMAIL, None),
    ],
)
def test_request_texts_skips_only_base64_data_url_payloads(value: str, scanned: str | None) -> None:
    for body in ({"input": value}, {"messages": [{"role": "user", "content": [{"image_url": {"url": value}}]}]}):
        texts = request_texts(body)
        # the last text (a text data URL: the one before its decoded payload)
        assert (value if scanned is None else scanned) in texts[-2:]
        if scanned is not None and scanned != value:
            assert value not in texts  # the payload was skipped


@pytest.mark.parametrize(
    ("key", "value", "skipped"),
    [
        ("data", _B64, True),
        ("file_data", _B64, True),
        ("signature", "EqQBCgIYAhIM" + _B64 + "==", False),  # length not a multiple of 4
        ("signature", "EqQBCgIYAhIM" + _B64, True),
        ("data", _CARD, False),  # valid base64, but no binary payload is that short
        ("data", f"plain text to {_EMAIL}", False),
        ("text", _B64, False),  # not a binary key
    ],
)
def test_request_texts_skips_base64_blobs_only_under_binary_keys(key: str, value: str, skipped: bool) -> None:
    texts = request_texts({"messages": [{"role": "user", "content": [{"type": "x", key: value}]}]})
    assert (value not in texts) is skipped


def test_request_texts_skips_token_id_prompts_but_not_big_numbers() -> None:
    assert request_texts({"prompt": [15339, 1917]}) == ["prompt"]
    assert request_texts({"input": [[1, 2], [3]]}) == ["input"]
    assert request_texts({"prompt": [1, int(_CARD)]}) == ["prompt", "1", _CARD]  # no vocabulary is that big
    assert request_texts({"metadata": {"ids": [1, 2]}}) == ["metadata", "ids", "1", "2"]  # only prompt/input


def test_classifier_reads_a_value_split_across_text_parts_once_joined() -> None:
    parts = [{"type": "text", "text": "card 4111 1111 "}, {"type": "text", "text": "1111 1111"}]
    assert DETECTOR.detect(request_texts({"system": parts})) == set()  # each part alone holds no card
    c = Classifier.with_builtin().classify({"system": parts}, declared=None, floor=DataLevel.PUBLIC)
    assert c.labels == ("pii.payment_card",) and c.label_counts == {"pii.payment_card": 1}
    whole = [{"type": "text", "text": f"mail {_EMAIL}"}, {"type": "text", "text": " now"}]
    c = Classifier.with_builtin().classify({"messages": [{"content": whole}]}, declared=None, floor=DataLevel.PUBLIC)
    assert c.label_counts == {"pii.email": 1}, "a value whole in one part is counted once"


def test_a_value_json_cannot_hold_fails_closed() -> None:
    c = Classifier.with_builtin().classify({"metadata": {"x": object()}}, declared=None, floor=DataLevel.PUBLIC)
    assert c.level == DataLevel.RESTRICTED and c.detector_error == "request_texts: TypeError"


def test_short_ascii_fast_path_agrees_with_the_full_scan() -> None:
    """BuiltinDetector.scan skips short ASCII texts without @, : or four digits; the full scan
    must find nothing in any of them."""
    from gateway.classify.builtin import _nothing_to_find

    rng = random.Random(7)
    alphabet = "0123456789abcdefxyzABCDEFXYZ.-:@ /()+_=\n"
    skipped = 0
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 19)))
        if _nothing_to_find(text):
            skipped += 1
            assert DETECTOR._scan(text, labels_only=False) == [], text
    assert skipped > 5_000
    for text in ("a::1", "1.2.3.4", "a@b.co", "fe80::1"):
        assert not _nothing_to_find(text) and DETECTOR.scan(text), text


def test_text_chars_counts_the_text_a_model_reads_not_keys_flags_or_structure() -> None:
    """Token estimates (limits, context window) come from text_chars: the same prompt costs
    the same streamed or not, and keys, numbers, roles and ids are not text."""
    from gateway.classify.walk import text_chars

    plain = {"model": "auto", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 96}
    streamed = {**plain, "stream": True, "stream_options": {"include_usage": True}}
    assert text_chars(plain) == text_chars(streamed) == 40
    tools = {**plain, "tools": [{"type": "function", "function": {"name": "lookup", "description": "d" * 10}}]}
    assert text_chars(tools) == 40 + len("lookup") + 10
    assert text_chars({"note": "not forwarded", "prompt": "abc"}) == 3


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("x4111111111111111", True),  # glued to letters, as in an identifier
        ("f4111111111111111y", True),
        ("card4111111111111111", True),
        ("a4111111111111111b2c3d4e5f6a7b8c9d0", False),  # a hex token (hash): its digit run is no card
        ("sha 9f2c4111111111111111aa0b1c2d3e4f5a6b7c8d", False),
        ("v4111111111111112", False),  # Luhn fails
    ],
)
def test_a_card_number_glued_to_letters_is_found_outside_hex_tokens(text: str, card: bool) -> None:
    assert ("pii.payment_card" in BuiltinDetector().detect([text])) is card


@pytest.mark.parametrize("text", ["xDE89370400440532013000", "DE89370400440532013000x", "fnGB82WEST12345698765432"])
def test_an_iban_glued_to_letters_is_found(text: str) -> None:
    """ISO 13616's checks (country, length, BBAN format, mod 97) need no word boundary."""
    assert "pii.iban" in BuiltinDetector().detect([text])


def test_a_text_data_url_is_read_decoded_and_redacted_re_encoded() -> None:
    """data:text/plain;base64 is a plain carrier of text (second new-user trial: an email in
    one went out unread); a binary data URL's payload stays unread."""
    import base64 as b64

    from gateway.classify.redact import redact_body

    payload = b64.b64encode(b"write to jane.roe@example.org today").decode()
    url = "data:text/plain;charset=utf-8;base64," + payload
    assert "jane.roe@example.org today" in " ".join(request_texts({"messages": [{"role": "user", "content": url}]}))
    assert DETECTOR.detect(request_texts({"metadata": {"doc": url}})) == {"pii.email"}
    body = {"messages": [{"role": "user", "content": url}]}
    out, redaction = redact_body(body, DETECTOR, ["pii.email"])
    sent = out["messages"][0]["content"]
    assert sent.startswith("data:text/plain;charset=utf-8;base64,") and body["messages"][0]["content"] == url
    assert b64.b64decode(sent.split(",", 1)[1]).decode() == "write to [EMAIL_1] today"
    assert redaction.mapping == {"[EMAIL_1]": "jane.roe@example.org"}
    png = "data:image/png;base64," + b64.b64encode(b"\x89PNG" + b"jane.roe@example.org" * 8).decode()
    assert not any("jane" in t for t in request_texts({"messages": [{"role": "user", "content": png}]}))
