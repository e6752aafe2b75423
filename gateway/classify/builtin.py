"""The built-in detector engine: regulated data and credentials found by format *and* validation.

Labels (stable, dotted; see :data:`LABELS`)::

    pii.email  pii.phone  pii.payment_card  pii.iban  pii.ip_address
    pii.national_id.<cc>   cc ∈ cn us fr es it fi se kr no be pl nl in de jp
    secret.cloud_key  secret.private_key  secret.api_token  secret.jwt

How a text is scanned (one request text at a time, nothing leaves the process):

1. :func:`~gateway.classify.normalize.shapes` folds what people type (full-width digits, odd
   spaces and dashes) and builds two byte "shapes" of the text (digit → ``0``, letter → ``a``;
   token character → ``t``). Offsets in every shape are offsets in the text.
2. Each family is found by a regex over a shape that begins with a literal, so CPython's ``re``
   skips to candidates at memchr speed: digit runs (``0``), IBAN heads (``aa00``), HETU/codice
   fiscale shapes, token runs of 20+ characters, ``@`` and ``PRIVATE KEY``.
3. Candidates are *validated*, never accepted on pattern alone: Luhn + issuer range for cards,
   ISO 13616 mod-97 for IBANs, ``python-stdnum`` rules for national IDs, ``phonenumbers`` for
   phones, ``ipaddress`` for IPs, the published token formats for secrets (see each rule).
4. Findings claim their span; a later, weaker rule cannot relabel digits already claimed (a
   card number is not also a phone number; IBAN digits are not a national ID).

The result is a list of :class:`Finding` (label + span). The classifier and the audit record use
only the labels; spans exist for redaction.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from gateway.classify import validators as v
from gateway.classify.normalize import NUM_TABLE, shapes

__all__ = ["DEFAULT_PHONE_REGIONS", "LABELS", "BuiltinDetector", "Finding"]

DEFAULT_PHONE_REGIONS: Final = ("GB", "DE", "US", "FR", "CN")
"""Countries whose *national* phone formats are recognised (``020 7946 0958``). Numbers written
internationally (``+49 30 901820``) are recognised for every country."""

NATIONAL_ID_COUNTRIES: Final = (
    "cn",
    "us",
    "fr",
    "es",
    "it",
    "fi",
    "se",
    "kr",
    "no",
    "be",
    "pl",
    "nl",
    "in",
    "de",
    "jp",
)

LABELS: Final = frozenset(
    {
        "pii.email",
        "pii.phone",
        "pii.payment_card",
        "pii.iban",
        "pii.ip_address",
        "secret.cloud_key",
        "secret.private_key",
        "secret.api_token",
        "secret.jwt",
    }
    | {f"pii.national_id.{cc}" for cc in NATIONAL_ID_COUNTRIES}
)
"""Every label this engine can emit."""


class Finding(NamedTuple):
    """One detected value: ``label``; ``text``: index into the scanned sequence of texts;
    ``start``/``end``: character offsets (end exclusive) into that text. Never the value."""

    label: str
    text: int
    start: int
    end: int


# --- patterns (compiled once) ------------------------------------------------------------------

# Separator between two digit groups of one number (checked on the text): "-", ".", "/"
# (optionally spaced), one or two spaces, a line break (with indentation), or a parenthesis as
# in "(0)30" / "(415) 555".
_SEP_OK: Final = re.compile(r"[ ]?[\-./][ ]?|[ ]?\n[ ]*|[ ]?\)[ ]?|[ ]?\([ ]?|[ ]{1,2}")
# Candidate digit runs, on the number shape (digit → 0, separator character → -): at least 7
# characters starting with a digit. Starts with the literal "0" so the scan skips at memchr
# speed; the look-behind makes a failed attempt inside a short number cost one byte compare.
_NUM_CANDIDATE: Final = re.compile(rb"0(?<!00)[0\-]{6,}")
_DIGIT_GROUP: Final = re.compile(rb"0+")

_IBAN_HEAD: Final = re.compile(rb"aa00(?:(?:[ \-]|[ ]?\n[ ]*)?[0a]){10,32}")
_HETU: Final = re.compile(rb"000000[\-+a]000[0a]")  # DDMMYY, century sign, NNN, check character
_CODICE_FISCALE: Final = re.compile(rb"aaaaaa00a00a000a")
_CODICE_FISCALE_TAIL: Final = b"a00a000a"
# French NIR of someone born in Corsica (department 2A / 2B), compact or spaced
_NIR_CORSICA_RE: Final = re.compile(rb"0 ?00 ?00 ?0a ?000 ?000 ?00")
_UUID: Final = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_TOKEN_MIN: Final = b"t" * 20  # no credential format below is shorter than 20 characters
_TOKEN_BREAK: Final = re.compile(rb"[./+=]")  # a token may start right after one of these
_SECRET: Final = re.compile(
    rb"""
    (?:
      (?P<aws>(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?![A-Za-z0-9])              # AWS access key id (IAM docs)
    | (?P<gcp_api>AIza[0-9A-Za-z_\-]{35})(?![A-Za-z0-9_\-])                   # Google API key
    | (?P<azure>(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{40,86}={0,2})     # Azure storage / SAS key
    | (?P<jwt>eyJ[A-Za-z0-9_\-]{6,}\.eyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{16,})  # RFC 7519 JWS compact
    | (?P<token>
        sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_\-]{20,}  # OpenAI, Anthropic
      | gh[pousr]_[A-Za-z0-9]{36,}                                              # GitHub tokens
      | github_pat_[A-Za-z0-9_]{50,}                                            # GitHub fine-grained PAT
      | xox[abposr]-[A-Za-z0-9\-]{10,}                                          # Slack
      | xapp-\d-[A-Za-z0-9\-]{10,}                                              # Slack app-level token
      | gl(?:pat|dt|rt|ptt|soat|cbt|imt)-[A-Za-z0-9_\-]{20,}                    # GitLab
      | (?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}                                # Stripe secret / restricted
      | hf_[A-Za-z]{30,}                                                        # Hugging Face
      | npm_[A-Za-z0-9]{36}                                                     # npm
      | pypi-AgE[A-Za-z0-9_\-]{50,}                                             # PyPI (macaroon)
      | dop_v1_[a-f0-9]{64}                                                     # DigitalOcean
      | shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}                                      # Shopify
      | gsk_[A-Za-z0-9]{48,}                                                    # Groq
      | xai-[A-Za-z0-9]{60,}                                                    # xAI
      | SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}                              # SendGrid
      | ya29\.[0-9A-Za-z_\-]{30,}                                               # Google OAuth access token
      | dapi[a-f0-9]{32}                                                        # Databricks
      )
    | (?P<hex40>[0-9a-f]{40})(?![A-Za-z0-9])                                   # GCP private_key_id (context)
    | (?P<b64_40>[A-Za-z0-9+/]{40})(?![A-Za-z0-9+/=])                          # AWS secret key (context)
    )
    """,
    re.X,
)
_SECRET_LABELS: Final = {
    "aws": "secret.cloud_key",
    "gcp_api": "secret.cloud_key",
    "azure": "secret.cloud_key",
    "jwt": "secret.jwt",
    "token": "secret.api_token",
    "hex40": "secret.cloud_key",
    "b64_40": "secret.cloud_key",
}
_SECRET_CONTEXT: Final = {
    "hex40": (b"private_key_id",),
    "b64_40": (b"aws_secret_access_key", b"secretaccesskey", b"aws_secret_key", b"secret_access_key"),
}
_SECRET_FIRST: Final = frozenset(b"AScsegxrhnpdy")  # first bytes of the prefixed formats above
_PEM: Final = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,24}PRIVATE KEY(?: BLOCK)?-----")

_EMAIL_LOCAL: Final = re.compile(rb"[A-Za-z0-9._%+\-]{1,64}\Z")
_EMAIL_DOMAIN: Final = re.compile(
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-_]|\.[A-Za-z0-9])"
)

_IPV6_HINT: Final = re.compile(rb":[0-9A-Fa-f]{0,4}:")
_IPV6_TOKEN: Final = re.compile(rb"[0-9A-Fa-f:.]+")
_HEX_COLON: Final = frozenset(b"0123456789abcdefABCDEF:.")

_ALNUM: Final = frozenset(b"0a")  # class-shape bytes of a digit or letter

# Keywords that must appear within _CONTEXT_WINDOW characters before a weakly checked number
# (a check digit that one random number in ten passes) for it to count as that ID.
_CONTEXT_WINDOW: Final = 48
_CONTEXT: Final[dict[str, tuple[bytes, ...]]] = {
    "us9": (b"ssn", b"social security", b"soc. sec"),
    "pl": (b"pesel",),
    "nl": (b"bsn", b"burgerservicenummer", b"sofinummer", b"sofi-nummer"),
    "in": (b"aadhaar", b"aadhar", b"uidai", b"uid"),
    "de": (b"steuer-id", b"steuerid", b"steuer-idnr", b"identifikationsnummer", b"idnr", b"steuernummer"),
    "jp": (b"my number", b"mynumber", b"individual number"),
    "no": (b"fodselsnummer", b"personnummer", b"fnr", b"national identity number"),
    "be": (b"rijksregisternummer", b"national number", b"numero national", b"insz", b"niss", b"nn"),
    # a bare 10-digit NANP number (no separators) is taken as a phone only after one of these
    "phone": (b"phone", b"tel", b"call", b"mobile", b"cell", b"fax", b"sms", b"text me", b"whatsapp"),
}
_CONTEXT_NON_ASCII: Final[dict[str, tuple[str, ...]]] = {
    "in": ("आधार",),
    "jp": ("マイナンバー", "個人番号"),
    "no": ("fødselsnummer",),
    "be": ("numéro national",),
}

_FR_SEX: Final = frozenset("12378")


def _keywords(words: tuple[bytes, ...]) -> re.Pattern[bytes]:
    return re.compile(rb"(?<![a-z])(?:" + b"|".join(re.escape(w) for w in words) + rb")(?![a-z])")


_CONTEXT_RE: Final = {kind: _keywords(words) for kind, words in _CONTEXT.items()}
_VERSION_BEFORE: Final = re.compile(rb"(?:(?<![a-z])(?:version|ver\.?|release|build|firmware)[ :]*|v)\Z")


def _has_context(kind: str, folded: str, raw: bytes, start: int) -> bool:
    """Whether a keyword of ``kind`` (whole word, any case) occurs in the
    :data:`_CONTEXT_WINDOW` characters before ``start`` (20 for a phone keyword)."""
    lo = max(0, start - (20 if kind == "phone" else _CONTEXT_WINDOW))
    if _CONTEXT_RE[kind].search(raw[lo:start].lower()):
        return True
    extra = _CONTEXT_NON_ASCII.get(kind)
    return extra is not None and any(word in folded[lo:start] for word in extra)


def _is_date(sizes: Sequence[int], groups: Sequence[str], seps: Sequence[str]) -> bool:
    """Three groups joined by the same - . / that read as Y-M-D, D-M-Y or M-D-Y."""
    if len(sizes) != 3 or seps[0] != seps[1] or seps[0].strip() not in ("-", ".", "/"):
        return False
    a, b, c = (int(g) for g in groups)
    if sizes[0] == 4:
        return 1 <= b <= 12 and 1 <= c <= 31
    if sizes[2] in (2, 4):
        return (1 <= b <= 12 and 1 <= a <= 31) or (1 <= a <= 12 and 1 <= b <= 31)
    return False


class _Taken:
    """Non-overlapping spans already claimed in one text, sorted by start (bisect lookups)."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def free(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, start)
        if i and self.ends[i - 1] > start:
            return False
        return i == len(self.starts) or self.starts[i] >= end

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)


def _plain_date(folded: str, start: int, shape: bytes) -> bool:
    """A digit run shaped and valued like a calendar date (2024-03-15, 15.03.2024, 3/15/2024),
    with one repeated separator. Lets the hot path skip the commonest number in prose."""
    text = folded[start : start + len(shape)]
    sep = text[shape.index(b"-")]
    if sep not in "-./" or text.count(sep) != 2:
        return False
    groups = text.split(sep)
    return _is_date([len(g) for g in groups], groups, [sep, sep])


_MONTHS: Final = frozenset(f"{m:02d}" for m in range(1, 13))
_DAYS: Final = frozenset(f"{d:02d}" for d in range(1, 32))


def _date10(folded: str, start: int, shape: bytes) -> bool:
    """YYYY-MM-DD, DD.MM.YYYY or MM/DD/YYYY (one repeated separator) at ``start``."""
    t = folded[start : start + 10]
    if shape[4] == 0x2D:  # "0000-00-00"
        sep = t[4]
        return sep in "-./" and t[7] == sep and t[5:7] in _MONTHS and t[8:10] in _DAYS
    sep = t[2]
    a, b = t[0:2], t[3:5]
    return sep in "-./" and t[5] == sep and ((b in _MONTHS and a in _DAYS) or (a in _MONTHS and b in _DAYS))


def _after_date(folded: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` without a leading calendar date ("2024-03-15 10:30", "15.03.2024 0800 …"):
    the groups after it are a number of their own."""
    if len(spans) < 4:
        return spans
    (a0, a1), (b0, b1), (c0, c1) = spans[0], spans[1], spans[2]
    sep = folded[a1:b0]
    if len(sep) != 1 or sep not in "-./" or folded[b1:c0] != sep or 4 not in (a1 - a0, c1 - c0):
        return spans  # only dates with a four-digit year: "1.31.65.66" is an IPv4 address
    groups = [folded[a0:a1], folded[b0:b1], folded[c0:c1]]
    return spans[3:] if _is_date([len(g) for g in groups], groups, [sep, sep]) else spans


_DATE_SHAPES: Final = frozenset(
    {b"0000-00-00", b"0000-0-0", b"0000-00-0", b"0000-0-00", b"00-00-0000", b"0-00-0000", b"00-0-0000", b"0-0-0000"}
)  # fmt: skip


_SHORT: Final = 20
# In a text shorter than _SHORT: "@" (email), ":" (IPv6: "a::1") or four ASCII digits (the
# fewest any digit rule reads: an IPv4 dotted quad) — see _nothing_to_find.
_SHORT_TRIGGER: Final = re.compile(r"[@:]|[0-9](?:[^0-9]*[0-9]){3}")


def _nothing_to_find(text: str) -> bool:
    """Whether no rule can match ``text``: ASCII (nothing to fold), shorter than 20 characters
    (no credential format is shorter; a PEM header is longer), no ``@`` (emails), no ``:``
    (IPv6) and fewer than four digits (every other rule needs seven digits, or four in a dotted
    quad; the shortest IBANs hold ten). tests/test_classify.py checks it against the full scan."""
    return len(text) < _SHORT and text.isascii() and _SHORT_TRIGGER.search(text) is None


class _Scan:
    """Per-text state of one scan: the shapes, the claimed spans and the findings so far."""

    __slots__ = ("cls", "folded", "found", "labels", "labels_only", "raw", "size", "taken", "tok")

    def __init__(self, text: str, *, labels_only: bool) -> None:
        self.folded, self.raw, self.cls, self.tok = shapes(text)
        self.size = len(text)
        self.taken = _Taken()
        self.found: list[tuple[str, int, int]] = []
        self.labels: set[str] = set()
        self.labels_only = labels_only

    def claim(self, label: str, start: int, end: int) -> bool:
        """Record a finding unless its span overlaps one already claimed."""
        if not self.taken.free(start, end):
            return False
        self.found.append((label, start, end))
        self.labels.add(label)
        self.taken.add(start, end)
        return True

    def alnum_at(self, index: int) -> bool:
        """Whether the character at ``index`` is an ASCII letter or digit (False outside)."""
        return 0 <= index < self.size and self.cls[index] in _ALNUM


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _hex_token(sc: _Scan, start: int, end: int) -> bool:
    """Whether the letters-and-digits token around ``[start, end)`` is hex text of 20 or more
    characters (a hash, a UUID part, a key id): a digit run inside one is no card number."""
    left, right = start, end
    while left > 0 and sc.alnum_at(left - 1):
        left -= 1
    while sc.alnum_at(right):
        right += 1
    token = sc.folded[left:right]
    return right - left >= 20 and all(c in _HEX for c in token)


class BuiltinDetector:
    """Fast in-process detector for PII and credentials (the default engine).

    ``phone_regions``: ISO 3166 alpha-2 countries whose national phone formats are recognised
    (default :data:`DEFAULT_PHONE_REGIONS`); international ``+CC`` numbers always are.

    Thread-safe; its only state is memo caches. Cost on ASCII text: about 5-40 µs per KiB
    depending on how many digit runs and long tokens it holds (``benchmarks/classify_bench.py``).
    """

    name = "builtin"

    def __init__(self, *, phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS) -> None:
        regions = tuple(r.upper() for r in phone_regions)
        self._nanp = "US" in regions or "CA" in regions
        self._cn_mobile = "CN" in regions
        # Regions whose national numbers start with the trunk prefix 0 (GB, DE, FR, CN, IT…).
        self._trunk0 = tuple(r for r in regions if r not in ("US", "CA"))

    # -- public ------------------------------------------------------------------------------

    def detect(self, texts: Sequence[str]) -> set[str]:
        """The labels found in any of ``texts`` (never the matched values).

        Label mode: once a text holds a phone number, further phone candidates in it are not
        validated (libphonenumber costs tens of µs per candidate); the label set is the same
        as :meth:`find` gives."""
        labels: set[str] = set()
        for text in texts:
            if text and not _nothing_to_find(text):
                for found in self._scan(text, labels_only=True):
                    labels.add(found[0])
        return labels

    def find(self, texts: Sequence[str]) -> list[Finding]:
        """Every finding in ``texts``, with its text index and character span."""
        out: list[Finding] = []
        for index, text in enumerate(texts):
            if text:
                out.extend(Finding(label, index, start, end) for label, start, end in self.scan(text))
        return out

    def scan(self, text: str, *, labels_only: bool = False) -> list[tuple[str, int, int]]:
        """``(label, start, end)`` for each finding in one text (character offsets), in
        detection order: secrets, emails, IBANs, shaped IDs, digit runs, IPv6.

        A short ASCII text that cannot hold a finding (:func:`_nothing_to_find`: JSON keys,
        enums, small numbers — most of a request's strings) returns at once."""
        if _nothing_to_find(text):
            return []
        return self._scan(text, labels_only=labels_only)

    def _scan(self, text: str, *, labels_only: bool) -> list[tuple[str, int, int]]:
        sc = _Scan(text, labels_only=labels_only)
        self._secrets(sc)
        if b"@" in sc.raw:
            self._emails(sc)
        if b"0" in sc.cls:
            self._ibans(sc)
            self._shaped_ids(sc)
            self._numbers(sc)
        if b"::" in sc.raw or sc.raw.count(b":") >= 7:
            self._ipv6(sc)
        return sc.found

    # -- families ----------------------------------------------------------------------------

    def _secrets(self, sc: _Scan) -> None:
        raw, tok = sc.raw, sc.tok
        if b"PRIVATE KEY" in raw:
            for m in _PEM.finditer(raw):
                sc.claim("secret.private_key", m.start(), m.end())
        at = tok.find(_TOKEN_MIN)
        # hex40/b64_40 tokens count only after their keyword; without one, a candidate must
        # start with the first character of a published prefix.
        contexts = at >= 0 and (b"private_key_id" in raw or b"ecret" in raw or b"ECRET" in raw)
        while at >= 0:
            run_end = tok.find(b" ", at)
            if run_end < 0:
                run_end = len(tok)
            if run_end - at >= 36 and b"-" in raw[at:run_end]:
                for uuid in _UUID.finditer(raw, at, run_end):  # its digit groups are no number
                    if sc.taken.free(*uuid.span()):
                        sc.taken.add(*uuid.span())
            starts = [at]
            starts.extend(b.end() for b in _TOKEN_BREAK.finditer(raw, at, run_end))
            at = tok.find(_TOKEN_MIN, run_end)
            for pos in starts:
                if pos >= run_end or (raw[pos] not in _SECRET_FIRST and not contexts):
                    continue
                hit = _SECRET.match(raw, pos, run_end)
                if hit is None:
                    continue
                kind = hit.lastgroup or ""
                start, end = hit.span()
                if kind == "jwt" and not v.jwt_ok(hit.group().decode()):
                    continue
                context = _SECRET_CONTEXT.get(kind)
                if context is not None:
                    window = raw[max(0, start - 64) : start].lower().replace(b'"', b"").replace(b" ", b"")
                    if not any(word in window for word in context):
                        continue
                sc.claim(_SECRET_LABELS[kind], start, end)

    def _emails(self, sc: _Scan) -> None:
        raw = sc.raw
        at = raw.find(b"@")
        while at >= 0:
            domain = _EMAIL_DOMAIN.match(raw, at + 1)
            local = _EMAIL_LOCAL.search(raw, max(0, at - 64), at) if domain and at > 0 else None
            if domain and local:
                start = local.start()
                while start < at and raw[start] in b".-+":
                    start += 1
                if start < at:
                    sc.claim("pii.email", start, domain.end())
            at = raw.find(b"@", at + 1)

    def _ibans(self, sc: _Scan) -> None:
        """IBANs (ISO 13616: country, length, mod-97 and the country's BBAN format), also glued
        to letters or digits as in identifiers ("xDE89…", "…3000x"): the checks are strong
        enough that no word boundary is needed."""
        raw, cls = sc.raw, sc.cls
        at = cls.find(b"aa00")
        while at >= 0:
            m = _IBAN_HEAD.match(cls, at)
            at = cls.find(b"aa00", at + 1)
            if m is None:
                continue
            start = m.start()
            length = v.iban_length(raw[start : start + 2].decode().upper())
            if not length:
                continue
            chars = bytearray()
            end = start
            for i in range(start, m.end()):
                if cls[i] in _ALNUM:
                    chars.append(raw[i])
                    if len(chars) == length:
                        end = i + 1
                        break
            if len(chars) == length and v.iban_ok(chars.decode().upper()):
                sc.claim("pii.iban", start, end)

    def _shaped_ids(self, sc: _Scan) -> None:
        cls = sc.cls
        candidates = [(m, "fi") for m in _HETU.finditer(cls)]
        at = cls.find(_CODICE_FISCALE_TAIL, 8)
        while at >= 0:
            m = _CODICE_FISCALE.match(cls, at - 8)
            if m is not None:
                candidates.append((m, "it"))
            at = cls.find(_CODICE_FISCALE_TAIL, at + 1)
        at = cls.find(b"0a")  # the department digit and letter of a Corsican NIR ("2A", "2B")
        while at >= 0:
            for back in (5, 6, 7, 8):  # "190042B…" … "1 90 04 2B …"
                m = _NIR_CORSICA_RE.match(cls, at - back) if at >= back else None
                if m is not None and m.start() + back == at:
                    candidates.append((m, "fr"))
                    break
            at = cls.find(b"0a", at + 1)
        for m, kind in candidates:
            start, end = m.span()
            if sc.alnum_at(start - 1) or sc.alnum_at(end):
                continue
            value = sc.folded[start:end].upper()
            if kind == "fr":
                value = value.replace(" ", "")
            if kind == "fi" and value[6] == "-" and value[-1].isdigit() and v.national_id_ok("se", value):
                continue  # YYMMDD-NNNN reads as a Swedish personnummer too: the digit rules decide
            if v.national_id_ok(kind, value):
                sc.claim(f"pii.national_id.{kind}", start, end)

    def _ipv6(self, sc: _Scan) -> None:
        raw = sc.raw
        pos = 0
        while (hint := _IPV6_HINT.search(raw, pos)) is not None:
            start = hint.start()
            while start > 0 and raw[start - 1] in _HEX_COLON:
                start -= 1
            token = _IPV6_TOKEN.match(raw, start)
            end = token.end() if token else hint.end()
            pos = max(end, hint.end())
            value = raw[start:end].rstrip(b".").decode()
            end = start + len(value)
            if sc.alnum_at(start - 1) or sc.alnum_at(end):
                continue
            if "::" not in value and value.count(":") < 7:
                continue  # times (10:30:45), ratios, labels
            groups = [g for g in value.split(":") if g]
            if len(groups) < 2 or not any(c.isdigit() for c in value):
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            sc.claim("pii.ip_address", start, end)

    # -- digit runs --------------------------------------------------------------------------

    def _numbers(self, sc: _Scan) -> None:
        folded, cls = sc.folded, sc.cls
        num = sc.raw.translate(NUM_TABLE)
        for candidate in _NUM_CANDIDATE.finditer(num):
            shape = candidate.group().rstrip(b"-")
            digits = shape.count(b"0")
            if digits < 7 and (digits < 4 or shape.count(b"-") < 3):
                continue  # too short for anything but an IPv4 dotted quad, and not one
            start = candidate.start()
            if (shape == b"0000-00-00" or shape == b"00-00-0000") and _date10(folded, start, shape):
                continue  # the commonest number in prose, settled without building anything
            if digits < 9 and shape.count(b"-") == 0:
                # one plain group of 7-8 digits: only a national phone (leading 0), an
                # international one (+), a DNI (letter after) or an NIE (X/Y/Z before) qualify
                end = start + len(shape)
                if (
                    folded[start] != "0"
                    and (start == 0 or sc.raw[start - 1] not in b"+(XYZxyz")
                    and cls[end : end + 1] != b"a"
                ):
                    continue
            head = next((k for k in (10, 9, 8) if shape[:k] in _DATE_SHAPES), 0)
            if (
                head
                and (len(shape) == head or shape[head] == 0x2D)
                and shape.count(b"0", head) < 7
                and _plain_date(folded, start, shape[:head])
            ):
                continue  # a date, maybe with the hour after it: "2024-03-15 10:30"
            spans = [g.span() for g in _DIGIT_GROUP.finditer(cls, candidate.start(), candidate.end())]
            first = 0
            for k in range(1, len(spans)):
                if not _SEP_OK.fullmatch(folded, spans[k - 1][1], spans[k][0]):
                    self._run(sc, _after_date(folded, spans[first:k]))
                    first = k
            self._run(sc, _after_date(folded, spans[first:]))

    def _run(self, sc: _Scan, spans: list[tuple[int, int]]) -> None:
        """Try every window of consecutive digit groups of one run (longest first) against the
        digit rules; a window that matches claims its span."""
        count = len(spans)
        if count != 4 and sum(b - a for a, b in spans) < 7:
            return
        folded = sc.folded
        groups = [folded[a:b] for a, b in spans]
        seps = [folded[spans[k][1] : spans[k + 1][0]] for k in range(count - 1)]
        if count == 1:
            windows = [(0, 0, 0)]
        else:
            windows = []
            for i in range(count):
                digits = 0
                for j in range(i, count):
                    digits += len(groups[j])
                    if digits > 19:
                        break
                    if digits >= 7 or j - i == 3:
                        windows.append((-digits, i, j))
            windows.sort()
        for _neg, i, j in windows:
            start, end = spans[i][0], spans[j][1]
            if sc.taken.free(start, end):
                hit = self._window(sc, groups[i : j + 1], seps[i:j], start, end, seps[i - 1] if i else None)
                if hit is not None:
                    sc.claim(*hit)

    def _window(
        self, sc: _Scan, groups: list[str], seps: list[str], start: int, end: int, lead_sep: str | None
    ) -> tuple[str, int, int] | None:
        """Label the digit groups ``groups`` (joined by ``seps``) spanning [start, end), or None.

        Order: IPv4, payment card, national IDs, phone — the first rule that validates wins."""
        digits = "".join(groups)
        n = len(digits)
        if n < 7 and len(groups) != 4:
            return None
        sizes = [len(g) for g in groups]
        raw, cls = sc.raw, sc.cls
        quad = len(groups) == 4 and seps[0] == seps[1] == seps[2] == "."
        if 7 <= n <= 13 and not quad and not self._plausible(sc, digits, sizes, seps, start, end):
            return None
        before_alnum = sc.alnum_at(start - 1)
        after_alnum = sc.alnum_at(end)
        seps_plain = {s.strip(" ") or " " for s in seps}

        # IPv4 (ipaddress; RFC 791 dotted quad, no leading zeros); "v1.2.3.4" and a quad after
        # "version"/"build" are version numbers.
        if quad and max(sizes) <= 3:
            if before_alnum or raw[start - 1 : start] == b"." or (raw[end : end + 1] == b"." and sc.alnum_at(end + 1)):
                return None
            if _VERSION_BEFORE.search(raw[max(0, start - 12) : start].lower()):
                return None
            try:
                ipaddress.IPv4Address(sc.folded[start:end])
            except ValueError:
                return None
            return ("pii.ip_address", start, end)
        if n < 7:
            return None
        clean = not before_alnum and not after_alnum

        # IDs before cards where both fit: an 18-digit UnionPay-range number with a valid Luhn
        # digit is far less likely than a China RIC whose birth date, province and check digit
        # all hold; a legacy 15-digit JCB (1800…, 2131…) less likely than a French NIR (mod 97),
        # unless it is grouped like a card (4-6-5, 4-4-4-3)
        if n in (17, 18) or (n == 15 and digits[0] in "12" and sizes not in ([4, 6, 5], [4, 4, 4, 3])):
            ident = self._national_id(sc, digits, sizes, seps, seps_plain, start, end, clean)
            if ident is not None:
                return ident

        # payment card (one grouping character throughout: spaces or dashes; line breaks allowed);
        # an ungrouped one also glued to letters, as in an identifier ("f4111111111111111"),
        # unless the whole token is hex (a hash or UUID holding a digit run)
        card_seps = seps_plain - {"\n"}
        if (
            (clean or (not seps and not _hex_token(sc, start, end)))
            and 14 <= n <= 19
            and len(card_seps) <= 1
            and card_seps <= {" ", "-"}
            and v.card_ok(digits)
        ):
            return ("pii.payment_card", start, end)

        ident = self._national_id(sc, digits, sizes, seps, seps_plain, start, end, clean)
        if ident is not None:
            return ident

        extension = after_alnum and raw[end : end + 1] in (b"x", b"X") and cls[end + 1 : end + 2] == b"0"
        if before_alnum or (after_alnum and not extension):
            return None
        if sc.labels_only and "pii.phone" in sc.labels:
            return None
        if self._phone(sc, digits, sizes, groups, seps, seps_plain, start, end, lead_sep):
            if raw[start - 1 : start] in (b"+", b"(") and start > 0:
                start -= 1
                if raw[start - 1 : start] == b"(" and start > 0:  # "(+49)"
                    start -= 1
            return ("pii.phone", start, end)
        return None

    def _plausible(self, sc: _Scan, digits: str, sizes: list[int], seps: list[str], start: int, end: int) -> bool:
        """Cheap necessary condition for a 7-13 digit window: could any rule below fire?
        Most numbers in prose (order numbers, amounts, years, times) fail it at once."""
        n = len(digits)
        if digits[0] == "0" or (start > 0 and sc.raw[start - 1] in b"+("):
            return True  # a phone number written nationally or internationally
        if sc.cls[end : end + 1] == b"a" or n == 11 or (n in (9, 12) and len(sizes) == 1):
            return True  # DNI/NIE letter, phone extension; 11 digits: NO/BE/PL/DE, NANP, CN mobile
        if len(sizes) == 1:
            return n == 10 and self._nanp  # bare NANP number after a phone keyword
        if sizes == [3, 2, 4] or sizes == [3, 3, 4] or sizes == [1, 3, 3, 4] or sizes == [3, 4, 4]:
            return True  # SSN, NANP, CN mobile grouped
        if "-" in seps and sizes in ([6, 4], [8, 4], [6, 7]):
            return True  # personnummer, resident registration number
        return n == 11 or (n == 12 and all(s.strip(" ") in ("", "\n") for s in seps))  # spaced IDs

    def _national_id(
        self,
        sc: _Scan,
        digits: str,
        sizes: list[int],
        seps: list[str],
        seps_plain: set[str],
        start: int,
        end: int,
        clean: bool,
    ) -> tuple[str, int, int] | None:
        """National identifiers that are written as digit runs (rules: module docstrings of
        :mod:`gateway.classify.validators`). Weak checksums need a keyword before them."""
        n = len(digits)
        folded, raw = sc.folded, sc.raw
        if start > 0 and raw[start - 1] == 0x2B:  # "+": a phone number, never an ID
            return None
        ok = v.national_id_ok
        spaced = seps_plain <= {" ", "\n"}
        before_alnum = sc.alnum_at(start - 1)

        # China RIC: 17 digits + digit or X (GB 11643-1999)
        if not before_alnum and spaced:
            if n == 18 and not sc.alnum_at(end) and ok("cn", digits):
                return ("pii.national_id.cn", start, end)
            if n == 17 and raw[end : end + 1] in (b"X", b"x") and not sc.alnum_at(end + 1) and ok("cn", digits + "X"):
                return ("pii.national_id.cn", start, end + 1)
        # Spain DNI (8 digits + letter) and NIE (X/Y/Z + 7 digits + letter)
        if len(sizes) == 1 and sc.cls[end : end + 1] == b"a" and not sc.alnum_at(end + 1):
            letter = folded[end].upper()
            if n == 8 and not before_alnum and ok("es.dni", digits + letter):
                return ("pii.national_id.es", start, end + 1)
            if (
                n == 7
                and start > 0
                and folded[start - 1].upper() in "XYZ"
                and not sc.alnum_at(start - 2)
                and ok("es.nie", folded[start - 1].upper() + digits + letter)
            ):
                return ("pii.national_id.es", start - 1, end + 1)
        if not clean:
            return None
        if len(sizes) == 2 and seps_plain == {"-"}:
            if sizes == [6, 7] and ok("kr", f"{digits[:6]}-{digits[6:]}"):
                return ("pii.national_id.kr", start, end)
            if sizes in ([6, 4], [8, 4]) and ok("se", f"{digits[:-4]}-{digits[-4:]}"):
                return ("pii.national_id.se", start, end)
        if n == 15 and digits[0] in _FR_SEX and spaced and ok("fr", digits):
            return ("pii.national_id.fr", start, end)
        if n == 11 and (spaced or seps_plain <= {".", "-"}):
            # a named ID first: "PESEL 44100377334" may pass the Norwegian or Belgian check too
            if _has_context("pl", folded, raw, start) and ok("pl", digits):
                return ("pii.national_id.pl", start, end)
            if _has_context("de", folded, raw, start) and ok("de", digits):
                return ("pii.national_id.de", start, end)
            # 11 digits 1[3-9]… are also a China mobile number: without the ID's name before
            # it, a number that libphonenumber accepts as one is left to the phone rule
            cn_mobile = self._cn_mobile and digits[0] == "1" and digits[1] in "3456789"
            for kind, shapes_ok in (("no", ([11], [6, 5])), ("be", ([11], [2, 2, 2, 3, 2], [6, 3, 2]))):
                if (
                    sizes in shapes_ok
                    and ok(kind, digits)
                    and (not cn_mobile or _has_context(kind, folded, raw, start) or not v.phone_ok(digits, "CN"))
                ):
                    return (f"pii.national_id.{kind}", start, end)
        if n == 9:
            if sizes == [3, 2, 4] and seps[0] == seps[1] and seps[0] in ("-", " "):
                if ok("us", digits):
                    return ("pii.national_id.us", start, end)
            elif len(sizes) == 1:
                if _has_context("us9", folded, raw, start) and ok("us", digits):
                    return ("pii.national_id.us", start, end)
                if _has_context("nl", folded, raw, start) and ok("nl", digits):
                    return ("pii.national_id.nl", start, end)
        if n == 12 and spaced:
            if _has_context("in", folded, raw, start) and ok("in", digits):
                return ("pii.national_id.in", start, end)
            if _has_context("jp", folded, raw, start) and ok("jp", digits):
                return ("pii.national_id.jp", start, end)
        return None

    def _phone(
        self,
        sc: _Scan,
        digits: str,
        sizes: list[int],
        groups: list[str],
        seps: list[str],
        seps_plain: set[str],
        start: int,
        end: int,
        lead_sep: str | None,
    ) -> bool:
        """Phone rules: libphonenumber validity (``validators.phone_ok``) for the formats
        people write — ``+CC …`` for any country; national numbers with trunk prefix 0 for the
        configured regions; NANP ``(415) 555-2671`` / ``415-555-2671``; China mobile
        ``138 0013 8000``. A number must start its digit run, or follow a "/" or line break
        inside it ("030 1234 / 030 5678"): otherwise every tail of a run would be tried."""
        n = len(digits)
        if n > 15 or len(groups) > 7:
            return False
        if lead_sep is not None and "/" not in lead_sep and "\n" not in lead_sep:
            return False
        if any(s != "/" and s.strip() == "/" for s in seps):
            return False  # "030 1234 / 030 5678" lists two numbers; "030/1234" is one
        if "." in seps_plain and (sum(s.strip() == "." for s in seps) < 2 or sizes[0] == 1):
            return False  # one dot is a decimal point, "0.000…" a fraction
        if _is_date(sizes, groups, seps):
            return False
        raw = sc.raw
        number = sc.folded[start:end]
        prefix = raw[start - 1 : start] if start > 0 else b""
        if prefix == b"+" or (prefix == b"(" and raw[start - 2 : start - 1] == b"+" and start > 1):
            return v.phone_ok("+" + number, None)
        if prefix == b"(":
            number = "(" + number
        if digits[0] == "0":
            return any(v.phone_ok(number, region) for region in self._trunk0)
        if self._nanp and (
            (n == 10 and (sizes == [3, 3, 4] or (sizes == [10] and _has_context("phone", sc.folded, raw, start))))
            or (n == 11 and sizes == [1, 3, 3, 4] and digits[0] == "1")
        ):
            return v.phone_ok(number, "US")
        if self._cn_mobile and n == 11 and digits[0] == "1" and sizes in ([11], [3, 4, 4], [3, 8]):
            return v.phone_ok(number, "CN")
        return False
