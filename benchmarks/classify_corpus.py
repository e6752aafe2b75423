"""A labelled corpus for the classify detectors: Faker text with known spans, plus hard negatives.

``generate(seed)`` returns :class:`Doc` items — ``text`` and gold ``spans`` ``(label, start,
end)`` — built from Faker (seeded, so the corpus is the same on every run) in ten locales:
en_US, en_GB, de_DE, fr_FR, zh_CN, es_ES, it_IT, fi_FI, sv_SE, pl_PL. Entities are embedded in
locale sentences in the ways people type them (grouped, dashed, lowercase, broken across lines,
full-width digits). A value only counts as gold when it is valid under the standard it claims
(Luhn, ISO 13616, the national-ID rule, the ITU numbering plan via libphonenumber): Faker
sometimes generates numbers that are not. Hand-written hard negatives (order numbers, dates,
times, room numbers, versions, prices, ISBNs, UUIDs, commit hashes…) carry no spans.

``score(detector, docs)`` matches predictions to gold by label and overlapping span and returns
precision/recall per label; ``pii.national_id`` aggregates every country.

Known choices: 12-digit Maestro and 13-digit Visa numbers are not generated (the engine does not
accept them: EAN-13 barcodes and other 12/13-digit codes would pass too often); phone numbers of
countries outside the engine's national-format regions are written internationally (+CC).
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import phonenumbers
from faker import Faker
from stdnum import iban as std_iban
from stdnum import luhn

__all__ = ["LOCALES", "Doc", "Score", "generate", "score"]

# locale → (phone region, national-id kind or None, how an ID is introduced)
LOCALES: dict[str, tuple[str, str | None, str]] = {
    "en_US": ("US", "us", "SSN"),
    "en_GB": ("GB", None, ""),
    "de_DE": ("DE", None, ""),
    "fr_FR": ("FR", "fr", "Numéro de sécurité sociale"),
    "zh_CN": ("CN", "cn", "身份证号"),
    "es_ES": ("ES", "es", "DNI/NIE"),
    "it_IT": ("IT", "it", "Codice fiscale"),
    "fi_FI": ("FI", "fi", "Henkilötunnus"),
    "sv_SE": ("SE", "se", "Personnummer"),
    "pl_PL": ("PL", "pl", "PESEL"),
}
NATIONAL_FORMAT_REGIONS = {"GB", "DE", "US", "FR", "CN"}  # the engine's default phone regions

_LEADS: dict[str, dict[str, str]] = {
    "pii.email": {"de": "E-Mail:", "fr": "Courriel :", "zh": "邮箱", "es": "Correo:", "it": "Email:", "*": "Email:"},
    "pii.phone": {"de": "Tel.", "fr": "Tél. :", "zh": "电话", "es": "Tel.:", "it": "Tel.", "*": "Phone:"},
    "pii.payment_card": {"de": "Kartennummer", "fr": "Carte", "zh": "卡号", "*": "Card number"},
    "pii.iban": {"*": "IBAN"},
    "pii.ip_address": {"*": "host"},
}
_CARD_TYPES = ("mastercard", "visa16", "visa19", "amex", "discover", "diners", "jcb15", "jcb16")


@dataclass(frozen=True)
class Doc:
    """One corpus text and its gold findings ``(label, start, end)`` (character offsets)."""

    text: str
    spans: tuple[tuple[str, int, int], ...]
    locale: str


class _Builder:
    """Concatenates pieces of text while recording the spans of the labelled ones."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.spans: list[tuple[str, int, int]] = []

    def add(self, text: str, label: str | None = None) -> None:
        if label is not None:
            self.spans.append((label, self.size, self.size + len(text)))
        self.parts.append(text)
        self.size += len(text)

    def doc(self, locale: str) -> Doc:
        return Doc("".join(self.parts), tuple(self.spans), locale)


def _lead(label: str, locale: str) -> str:
    leads = _LEADS.get(label, {})
    return leads.get(locale[:2], leads.get("*", ""))


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c) for c in text)


def _group(digits: str, sizes: Sequence[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        if i >= len(digits):
            break
        out.append(digits[i : i + size])
        i += size
    if i < len(digits):
        out.append(digits[i:])
    return sep.join(out)


def _card(fake: Faker, rng: random.Random, locale: str) -> str:
    # card types are the en_US provider's (some locales define their own set)
    digits = fake.credit_card_number(card_type=rng.choice(_CARD_TYPES))
    assert luhn.is_valid(digits)
    sizes = (4, 6, 5) if len(digits) == 15 else (4, 6, 4) if len(digits) == 14 else (4, 4, 4, 4, 4)
    style = rng.randrange(5)
    if style == 0:
        text = digits
    elif style == 1:
        text = _group(digits, sizes, " ")
    elif style == 2:
        text = _group(digits, sizes, "-")
    elif style == 3:
        text = _group(digits, sizes, " ").replace(" ", "\n", 1)  # wrapped across lines
    else:
        text = _group(digits, sizes, " ")
    if locale == "zh_CN" and rng.random() < 0.5:
        text = _fullwidth(text)
    return text


def _iban(fake: Faker, rng: random.Random) -> str | None:
    for _ in range(5):
        value = fake.iban()
        if std_iban.is_valid(value):
            break
    else:
        return None
    style = rng.randrange(4)
    if style == 0:
        return value
    if style == 1:
        return std_iban.format(value)
    if style == 2:
        return value.lower()
    return std_iban.format(value).replace(" ", "\n", 1) if len(value) > 8 else value


def _phone(fake: Faker, rng: random.Random, region: str) -> str | None:
    for _ in range(20):
        raw = fake.phone_number()
        try:
            parsed = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(parsed):
            continue
        if region not in NATIONAL_FORMAT_REGIONS or rng.random() < 0.25:
            fmt = rng.choice((phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164))
            return phonenumbers.format_number(parsed, fmt)
        return str(raw)
    return None


def _national_id(fake: Faker, rng: random.Random, kind: str) -> str:
    if kind == "es":
        return str(fake.nie() if rng.random() < 0.4 else fake.nif())
    if kind == "pl":
        return str(fake.pesel())
    value = str(fake.ssn())
    if kind == "cn":
        if rng.random() < 0.3:
            value = f"{value[:6]} {value[6:14]} {value[14:]}"
        if rng.random() < 0.2:
            value = _fullwidth(value)
    if kind == "fr" and rng.random() < 0.5:
        value = _group(value, (1, 2, 2, 2, 3, 3, 2), " ")
    return value


def _valid_national_id(kind: str, value: str) -> bool:
    from gateway.classify.normalize import fold
    from gateway.classify.validators import national_id_ok

    compact = "".join(c for c in fold(value) if c.isalnum()).upper()
    if kind == "es":
        return national_id_ok("es.dni", compact) or national_id_ok("es.nie", compact)
    if kind == "se":
        return national_id_ok("se", fold(value))
    return national_id_ok(kind, compact)


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _secret(rng: random.Random) -> tuple[str, str]:
    upper_digits = string.ascii_uppercase + string.digits
    alnum = string.ascii_letters + string.digits
    kind = rng.randrange(7)
    if kind == 0:
        return "secret.cloud_key", rng.choice(("AKIA", "ASIA")) + _rand(rng, upper_digits, 16)
    if kind == 1:
        return "secret.api_token", "ghp_" + _rand(rng, alnum, 36)
    if kind == 2:
        return "secret.api_token", "sk-proj-" + _rand(rng, alnum + "_-", 48)
    if kind == 3:
        return "secret.api_token", f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-" + _rand(
            rng, alnum, 24
        )
    if kind == 4:
        header = _b64url({"alg": "HS256", "typ": "JWT"})
        payload = _b64url({"sub": str(rng.randrange(10**9)), "iat": rng.randrange(10**9, 2 * 10**9)})
        return "secret.jwt", f"{header}.{payload}." + _rand(rng, alnum + "_-", 43)
    if kind == 5:
        return "secret.private_key", rng.choice(("-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----"))
    return "secret.api_token", "glpat-" + _rand(rng, alnum + "_-", 20)


# --- hard negatives ----------------------------------------------------------------------------


def _negatives(rng: random.Random, fake: Faker) -> list[str]:
    """Hand-written texts with numbers that are none of the labels."""
    d = rng.randrange

    def non_card16() -> str:
        while True:
            digits = str(d(1, 10)) + "".join(str(d(10)) for _ in range(15))
            # no issuer range starts with 1, 7 or 9; or make it fail Luhn
            if digits[0] in "179" or not luhn.is_valid(digits):
                return "-".join(digits[i : i + 4] for i in range(0, 16, 4))

    date = fake.date_object()
    return [
        f"Order number {non_card16()}",
        f"The meeting is at {d(7, 19)}:{d(60):02d} in room {d(100, 9999)}",
        f"Invoice INV-{date.year}-{d(1, 10**6):06d} dated {date.isoformat()}",
        f"Delivered on {date.strftime('%d.%m.%Y')} to locker {d(1, 500)}",
        f"Due {date.strftime('%m/%d/%Y')}, amount ${d(1, 10**6):,}.{d(100):02d}",
        f"Preis: {d(1, 10**4)}.{d(1000):03d},{d(100):02d} EUR inkl. MwSt.",
        f"Upgrade to v{d(1, 20)}.{d(30)}.{d(50)} before {date.isoformat()}",
        f"Running Python {d(2, 4)}.{d(13)}.{d(20)} on kernel {d(4, 7)}.{d(20)}.{d(200)}-{d(100)}-generic",
        f"ISBN 978-3-{d(10, 99)}-{d(100000, 999999)}-{d(10)}",
        f"Ticket #{d(10000, 99999)} was merged in commit {rng.getrandbits(160):040x}",
        f"request id {fake.uuid4()} took {d(1, 900)} ms",
        f"Coordinates {d(-90, 90)}.{d(10**4):04d}, {d(-180, 180)}.{d(10**4):04d}",
        f"Timestamp {d(1_600_000_000, 1_800_000_000)} (Unix seconds)",
        f"Page {d(1, 50)} of {d(50, 400)}; table {d(1, 9)}.{d(1, 9)}",
        f"Listening on localhost:{d(1024, 65535)} with {d(2, 64)} workers",
        f"Population {d(10**5, 10**8):,} ({d(1, 99)}.{d(10)}% growth)",
        f"Part no. {d(100, 999)}-{d(1000, 9999)}-{d(10, 99)} in bin {d(1, 99)}",
        f"订单号 {date.strftime('%Y%m%d')}{d(10**5, 10**6)}\uff0c日期 {date.year}年{date.month}月{date.day}日",
        f"Kundennummer {d(10**6, 10**7)}, Auftrag {d(10**5, 10**6)}",
        f"Score {d(100)}-{d(100)} after {d(90)} minutes; {d(10**3, 10**4)} spectators",
        f"SKU {d(10**7, 10**8)} in aisle {d(1, 40)}",
        f"Build {d(1, 9)}.{d(10)}.{d(10**4, 10**5)}.{d(1000, 9999)} released",
        f"version {d(1, 20)}.{d(10)}.{d(10)}.{d(10)} is the current release",
        f"Reference no. {d(10**5, 10**10)}",
        f"Tracking number {d(10**11, 10**12)} via parcel service",
        f"Case {d(10**8, 10**9)}/{d(10, 99)} filed",
        f"Order {d(10**12, 10**13)} shipped",
        f"Room {d(100, 999)}, building {d(1, 30)}, floor {d(1, 9)}",
        f"At {d(7, 19)}:{d(60):02d}:{d(60):02d} the job wrote {d(10**6, 10**9):,} rows",
        f"Temperature -{d(1, 40)}.{d(10)} °C, pressure {d(950, 1050)} hPa, {d(10**3, 10**4)} m altitude",
        f"Steps: 1) open 2) fill {d(10, 99)} fields 3) submit by {date.isoformat()}",
    ]


def generate(seed: int = 20261130, per_locale: int = 120) -> list[Doc]:
    """The corpus: ``per_locale`` documents per locale of :data:`LOCALES` (each with one to
    three labelled entities among locale sentences) and the hard negatives, shuffled."""
    rng = random.Random(seed)
    docs: list[Doc] = []
    cards = Faker("en_US")
    cards.seed_instance(rng.randrange(2**31))
    for locale, (region, id_kind, id_lead) in LOCALES.items():
        fake = Faker(locale)
        fake.seed_instance(rng.randrange(2**31))
        makers: list[Callable[[], tuple[str, str] | None]] = [
            lambda fake=fake: ("pii.email", str(fake.email())),
            lambda fake=fake, region=region: _opt("pii.phone", _phone(fake, rng, region)),
            lambda locale=locale: ("pii.payment_card", _card(cards, rng, locale)),
            lambda fake=fake: _opt("pii.iban", _iban(fake, rng)),
            lambda fake=fake: ("pii.ip_address", str(fake.ipv4() if rng.random() < 0.8 else fake.ipv6())),
            lambda: _secret(rng),
        ]
        if id_kind is not None:
            makers.append(
                lambda fake=fake, id_kind=id_kind: (f"pii.national_id.{id_kind}", _national_id(fake, rng, id_kind))
            )
        for _ in range(per_locale):
            b = _Builder()
            b.add(str(fake.sentence()) + " ")
            for _ in range(rng.randint(1, 3)):
                made = rng.choice(makers)()
                if made is None:
                    continue
                label, value = made
                if label.startswith("pii.national_id.") and not _valid_national_id(label.rsplit(".", 1)[1], value):
                    continue
                lead = id_lead if label.startswith("pii.national_id.") else _lead(label, locale)
                b.add(f"{lead} " if lead else "")
                b.add(value, label)
                b.add(rng.choice((". ", ", ", " ; ", "。", " ")) + str(fake.sentence()) + " ")
            docs.append(b.doc(locale))
        neg_fake = Faker(locale)
        neg_fake.seed_instance(rng.randrange(2**31))
        for _ in range(max(1, per_locale // 20)):
            docs.extend(
                Doc(f"{neg_fake.sentence()} {text}", (), f"{locale}:negative") for text in _negatives(rng, neg_fake)
            )
    rng.shuffle(docs)
    return docs


def _opt(label: str, value: str | None) -> tuple[str, str] | None:
    return None if value is None else (label, value)


# --- scoring ---------------------------------------------------------------------------------


class _Finds(Protocol):
    def find(self, texts: Sequence[str]) -> Iterable[tuple[str, int, int, int]]: ...


@dataclass
class Score:
    """Counts per label: true positives, false positives, false negatives; and the misses."""

    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, label, excerpt)

    def precision(self, label: str) -> float:
        found = self.tp[label] + self.fp[label]
        return self.tp[label] / found if found else 1.0

    def recall(self, label: str) -> float:
        gold = self.tp[label] + self.fn[label]
        return self.tp[label] / gold if gold else 1.0

    def labels(self) -> list[str]:
        return sorted(set(self.tp) | set(self.fp) | set(self.fn))

    def table(self) -> str:
        rows = [f"{'label':28s} {'gold':>5s} {'tp':>5s} {'fp':>4s} {'fn':>4s} {'precision':>9s} {'recall':>7s}"]
        for label in self.labels():
            gold = self.tp[label] + self.fn[label]
            rows.append(
                f"{label:28s} {gold:5d} {self.tp[label]:5d} {self.fp[label]:4d} {self.fn[label]:4d} "
                f"{self.precision(label):9.4f} {self.recall(label):7.4f}"
            )
        return "\n".join(rows)


def _family(label: str) -> str:
    return "pii.national_id" if label.startswith("pii.national_id.") else label


def score(detector: _Finds, docs: Sequence[Doc]) -> Score:
    """Match each prediction to an unmatched gold span with the same label that overlaps it.
    Counts per exact label and, for national IDs, also under ``pii.national_id``."""
    result = Score()
    for doc in docs:
        predicted = [(f[0], f[2], f[3]) for f in detector.find([doc.text])]
        unmatched = list(doc.spans)
        for label, start, end in predicted:
            hit = next((g for g in unmatched if g[0] == label and g[1] < end and start < g[2]), None)
            keys = {label, _family(label)}
            if hit is not None:
                unmatched.remove(hit)
                for key in keys:
                    result.tp[key] += 1
            else:
                for key in keys:
                    result.fp[key] += 1
                result.errors.append(("fp", label, doc.text[max(0, start - 30) : end + 10]))
        for label, start, end in unmatched:
            for key in {label, _family(label)}:
                result.fn[key] += 1
            result.errors.append(("fn", label, doc.text[max(0, start - 30) : end + 10]))
    return result


if __name__ == "__main__":
    import time

    from gateway.classify import BuiltinDetector

    t0 = time.perf_counter()
    corpus = generate()
    t1 = time.perf_counter()
    s = score(BuiltinDetector(), corpus)
    t2 = time.perf_counter()
    print(f"{len(corpus)} documents (generated in {t1 - t0:.2f} s, scored in {t2 - t1:.2f} s)")
    print(s.table())
    for kind, label, excerpt in s.errors[:60]:
        print(kind, label, repr(excerpt))
