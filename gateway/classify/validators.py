"""Checksums and structural rules that turn a pattern match into a finding.

Each function takes the candidate already compacted (separators removed, ASCII) and returns a
bool; none raises. Sources are given per function; the national-ID and IBAN rules are those of
``python-stdnum``, phone numbers those of Google's libphonenumber (``phonenumbers``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from functools import lru_cache
from typing import Final

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn
from stdnum.be import nn as _be_nn
from stdnum.cn import ric as _cn_ric
from stdnum.de import idnr as _de_idnr
from stdnum.es import dni as _es_dni
from stdnum.es import nie as _es_nie
from stdnum.exceptions import ValidationError
from stdnum.fi import hetu as _fi_hetu
from stdnum.fr import nir as _fr_nir
from stdnum.in_ import aadhaar as _in_aadhaar
from stdnum.it import codicefiscale as _it_cf
from stdnum.jp import in_ as _jp_in
from stdnum.kr import rrn as _kr_rrn
from stdnum.nl import bsn as _nl_bsn
from stdnum.no import fodselsnummer as _no_fnr
from stdnum.pl import pesel as _pl_pesel
from stdnum.se import personnummer as _se_pnr
from stdnum.us import ssn as _us_ssn

__all__ = [
    "card_ok",
    "cn_ric_ok",
    "iban_length",
    "iban_ok",
    "jwt_ok",
    "national_id_ok",
    "phone_ok",
]

# --- payment cards ---------------------------------------------------------------------------

# (prefix range low, high, allowed lengths) over the first 2/4/6 digits; ISO/IEC 7812 issuer
# ranges as published by the card schemes (summarised in Wikipedia "Payment card number",
# IIN ranges table). Numbers under 14 digits (legacy 13-digit Visa, 12/13-digit Maestro) are
# deliberately not accepted: EAN-13 barcodes and 12/13-digit order numbers would pass too often.
_IIN: Final[tuple[tuple[int, int, int, frozenset[int]], ...]] = (
    (1, 4, 4, frozenset({16, 19})),  # Visa
    (2, 51, 55, frozenset({16})),  # Mastercard
    (4, 2221, 2720, frozenset({16})),  # Mastercard 2-series
    (4, 2200, 2204, frozenset({16, 17, 18, 19})),  # Mir
    (4, 2131, 2131, frozenset({15})),  # JCB (legacy 15-digit)
    (4, 1800, 1800, frozenset({15})),  # JCB (legacy 15-digit)
    (2, 34, 34, frozenset({15})),  # American Express
    (2, 37, 37, frozenset({15})),
    (3, 300, 305, frozenset({14, 15, 16, 17, 18, 19})),  # Diners Club
    (2, 36, 36, frozenset({14, 15, 16, 17, 18, 19})),
    (2, 38, 39, frozenset({14, 15, 16, 17, 18, 19})),
    (2, 35, 35, frozenset({15, 16, 17, 18, 19})),  # JCB (3528-3589 issued; all of 35 accepted)
    (2, 50, 50, frozenset({16, 17, 18, 19})),  # Maestro / Verve / RuPay
    (2, 56, 59, frozenset({16, 17, 18, 19})),  # Maestro
    (2, 60, 69, frozenset({16, 17, 18, 19})),  # Discover, UnionPay, Maestro, RuPay, Troy
    (2, 81, 82, frozenset({16})),  # RuPay
)


def card_ok(digits: str) -> bool:
    """A payment card number (PAN): 14-19 digits, a known issuer range for that length
    (ISO/IEC 7812 IIN), and a valid Luhn check digit (ISO/IEC 7812-1 Annex B, via
    ``stdnum.luhn``)."""
    n = len(digits)
    if n < 14 or n > 19:
        return False
    for width, low, high, lengths in _IIN:
        if n in lengths and low <= int(digits[:width]) <= high:
            return luhn.is_valid(digits)
    return False


# --- IBAN --------------------------------------------------------------------------------------

_BBAN_PART: Final = re.compile(r"(\d+)!")


@lru_cache(maxsize=256)
def iban_length(country: str) -> int:
    """Total IBAN length for a two-letter country code (uppercase), from the SWIFT IBAN
    registry as shipped in ``stdnum/iban.dat``; 0 for a country without IBANs."""
    info = _iban._ibandb.info(country + "00")
    bban = info[0][1].get("bban", "") if info and info[0][0] == country else ""
    return 4 + sum(int(n) for n in _BBAN_PART.findall(bban)) if bban else 0


@lru_cache(maxsize=4096)
def iban_ok(compact: str) -> bool:
    """An IBAN (ISO 13616): country registry length and BBAN structure, ISO 7064 mod-97-10
    check digits and the country's own BBAN check where stdnum has one (``stdnum.iban``).
    ``compact``: uppercase, no separators. Memoised."""
    return _iban.is_valid(compact)


# --- national identifiers ------------------------------------------------------------------------

# GB/T 2260 province-level prefixes of a resident identity number (first two digits).
_CN_PROVINCES: Final = frozenset(
    {
        "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42", "43",
        "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82", "83", "91",
    }
)  # fmt: skip


def cn_ric_ok(compact: str) -> bool:
    """China Resident Identity Card number (GB 11643-1999): 17 digits + check character
    (ISO 7064 MOD 11-2, ``stdnum.cn.ric.calc_check_digit``), a real birth date
    (``stdnum.cn.ric.get_birth_date``, 1900 to today) and a GB/T 2260 province prefix.

    stdnum's full ``validate`` also requires the county code to have existed in the birth year;
    that is relaxed to the province so a number with a re-coded county is still caught."""
    if len(compact) != 18 or not compact[:17].isdigit() or compact[:2] not in _CN_PROVINCES:
        return False
    try:
        if _cn_ric.calc_check_digit(compact) != compact[17]:
            return False
        born = _cn_ric.get_birth_date(compact)
    except (ValidationError, ValueError):
        return False
    return born.year >= 1900 and born <= datetime.date.today()


def _stdnum_ok(module: object, number: str) -> bool:
    try:
        return bool(module.is_valid(number))  # type: ignore[attr-defined]
    except Exception:  # stdnum validators are not all exception-tight on odd input
        return False


_NATIONAL: Final[dict[str, object]] = {
    "us": _us_ssn,  # SSA rules: area not 000/666/9xx, group not 00, serial not 0000, known-bad list
    "fr": _fr_nir,  # NIR: 13 digits + mod-97 key
    "es.dni": _es_dni,  # DNI: 8 digits + mod-23 letter
    "es.nie": _es_nie,  # NIE: X/Y/Z + 7 digits + mod-23 letter
    "it": _it_cf,  # codice fiscale: 16 characters, birth date, check letter
    "fi": _fi_hetu,  # HETU: birth date, century sign, mod-31 check character
    "se": _se_pnr,  # personnummer: birth date + Luhn
    "kr": _kr_rrn,  # resident registration number: birth date + weighted mod-11
    "no": _no_fnr,  # fødselsnummer: birth date + two mod-11 check digits
    "be": _be_nn,  # rijksregisternummer: birth date + mod-97
    "pl": _pl_pesel,  # PESEL: birth date + weighted check digit
    "nl": _nl_bsn,  # BSN: 11-proof
    "in": _in_aadhaar,  # Aadhaar: Verhoeff
    "de": _de_idnr,  # Steuer-IdNr: ISO 7064 mod 11,10 + digit-repetition rule
    "jp": _jp_in,  # My Number (individual number): check digit
}


def _no_quick(d: str) -> bool:
    # first check digit of a fødselsnummer (weights from stdnum.no.fodselsnummer)
    total = sum(w * int(c) for w, c in zip((3, 7, 6, 1, 8, 9, 4, 5, 2), d, strict=False))
    return (11 - total % 11) % 11 == int(d[9])


def _be_quick(d: str) -> bool:
    # mod-97 check digits over the first 9 digits, born before or after 2000 (stdnum.be.nn)
    check = int(d[9:])
    return 97 - int(d[:9]) % 97 == check or 97 - int("2" + d[:9]) % 97 == check


# Cheap necessary conditions tried before the stdnum call (which costs ~10 µs of cleaning and
# formatting): 11-digit runs are common (phone numbers) and these rules reject most at once.
_QUICK: Final = {"no": _no_quick, "be": _be_quick}


@lru_cache(maxsize=4096)
def national_id_ok(kind: str, compact: str) -> bool:
    """Validate ``compact`` as the national identifier ``kind`` (a key of the table above,
    e.g. ``"fr"``, ``"es.nie"``) with the matching ``python-stdnum`` module; ``"cn"`` uses
    :func:`cn_ric_ok`. Memoised (conversations resend their history)."""
    if kind == "cn":
        return cn_ric_ok(compact)
    quick = _QUICK.get(kind)
    if quick is not None and not (compact.isdigit() and quick(compact)):
        return False
    module = _NATIONAL.get(kind)
    return module is not None and _stdnum_ok(module, compact)


# --- phone numbers ---------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def phone_ok(number: str, region: str | None) -> bool:
    """A phone number valid under the ITU-T E.164 numbering plan of its country, per
    libphonenumber's metadata (``phonenumbers.is_valid_number``). ``number`` is as written
    (``"+49 30 901820"``, ``"020 7946 0958"``); ``region`` (ISO 3166 alpha-2) is the country
    assumed for a national number, None when it starts with ``+``. Memoised: parsing costs
    tens of microseconds and conversations resend the same history on every turn."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(parsed))


# --- JSON Web Token ----------------------------------------------------------------------------


def jwt_ok(token: str) -> bool:
    """A JWS compact serialisation (RFC 7515 §7.1, RFC 7519): three base64url segments whose
    first decodes to a JSON object header naming an ``alg``."""
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded
