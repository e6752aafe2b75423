"""Length-preserving normalisation of what people type, and the byte "shapes" the detectors scan.

Every function here maps one character to exactly one character, so an offset into the
result is an offset into the original text: spans found on the normalised text can later be
used to redact the original (issue 3, redaction obligation).

* :func:`fold` — full-width forms (U+FF10-FF19 digits, U+FF21-FF5A letters, U+3000 ideographic space) to ASCII by
  Unicode NFKC (UAX #15) where the result is a character a detector reads (letters, digits,
  ``+-./()@_=:``), every decimal digit of any script (Unicode category Nd, e.g. Arabic-Indic
  ``٤``) to its ASCII digit, space separators (Zs: NBSP, thin space…) to ``" "``, dash punctuation
  (Pd, U+2212 minus) to ``"-"``, line/paragraph separators (Zl, Zp) to ``"\\n"``. Everything
  else is kept as it is.
* :func:`shapes` — the folded text as ASCII bytes (non-ASCII → ``?``) plus two class maps over it,
  used so the hot regexes start with a literal and run at memchr speed instead of testing a
  character class at every position (CPython ``re`` only fast-skips to literal prefixes).
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["CLASS_TABLE", "FOLD_CACHE_MAX", "NUM_TABLE", "TOKEN_CHARS", "TOKEN_TABLE", "fold", "shapes"]

FOLD_CACHE_MAX: Final = 65_536
"""Most distinct non-ASCII code points whose fold is memoised (bounds memory on hostile input)."""

TOKEN_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./+="
"""Bytes that may occur inside a credential token (base64, base64url, JWT, prefixed API keys)."""


_RELEVANT: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz +-./()@_=:")
"""ASCII characters a detector reads; other compatibility forms (full-width commas…) are kept."""


def _fold_char(code_point: int) -> int:
    ch = chr(code_point)
    category = unicodedata.category(ch)
    if category == "Nd":
        return 0x30 + unicodedata.digit(ch)
    if category == "Zs":
        return 0x20
    if category in ("Zl", "Zp"):
        return 0x0A
    if category == "Pd":
        return 0x2D
    if code_point == 0x2212:  # MINUS SIGN (category Sm)
        return 0x2D
    folded = unicodedata.normalize("NFKC", ch)
    if len(folded) == 1 and folded in _RELEVANT:
        return ord(folded)
    return code_point


_FOLD_CACHE: Final[dict[str, str]] = {}
_ASCII_BYTES: Final = bytes(range(0x80))
_REPLACE_LIMIT: Final = 12  # distinct characters to fold by str.replace passes; beyond, one translate


class _FoldTable(dict[int, int]):
    """``str.translate`` table that computes and memoises each character's fold."""

    def __missing__(self, code_point: int) -> int:
        value = code_point if code_point < 0x80 else _fold_char(code_point)
        if len(self) < FOLD_CACHE_MAX:
            self[code_point] = value
        return value


_FOLD_TABLE: Final = _FoldTable()


def _folded(ch: str) -> str:
    value = _FOLD_CACHE.get(ch)
    if value is None:
        value = chr(_fold_char(ord(ch)))
        if len(_FOLD_CACHE) < FOLD_CACHE_MAX:
            _FOLD_CACHE[ch] = value
    return value


def fold(text: str) -> str:
    """``text`` with full-width, non-ASCII digits, odd spaces and dashes folded to ASCII.

    Same length as ``text`` (one character in, one out). ASCII text is returned as is (no copy).
    Cost scales with the *distinct* non-ASCII characters present: they are found by deleting
    the ASCII bytes of the UTF-8 encoding (C speed), and each one that folds is replaced in one
    pass; text in other scripts that needs no folding is returned unchanged.
    """
    if text.isascii():
        return text
    present = set(text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))
    todo = [(ch, f) for ch in present if (f := _folded(ch)) != ch]
    if not todo:
        return text
    if len(todo) > _REPLACE_LIMIT:
        return text.translate(_FOLD_TABLE)
    for ch, f in todo:
        text = text.replace(ch, f)
    return text


def _table(pairs: dict[bytes, int]) -> bytes:
    table = bytearray(range(256))
    for chars, value in pairs.items():
        for byte in chars:
            table[byte] = value
    return bytes(table)


_DIGITS = b"0123456789"
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

CLASS_TABLE: Final = _table({_DIGITS: ord("0"), _LETTERS: ord("a"), b"\t\x0b\x0c": ord(" "), b"\r": ord("\n")})
"""Byte map for the *class shape*: digit → ``0``, ASCII letter → ``a``, tab/VT/FF → space,
CR → LF; everything else unchanged."""

NUM_TABLE: Final = bytes(
    ord("0") if b in _DIGITS else ord("-") if b in b" \t\r\n-./()" else ord(" ") for b in range(256)
)
"""Byte map for the *number shape*: digit → ``0``, a character that may separate digit groups
(space, tab, line break, ``- . / ( )``) → ``-``, everything else → space."""

TOKEN_TABLE: Final = bytes(ord("t") if b in TOKEN_CHARS else ord(" ") for b in range(256))
"""Byte map for the *token shape*: credential-token characters → ``t``, everything else → space."""


def shapes(text: str) -> tuple[str, bytes, bytes, bytes]:
    """Fold ``text`` and return ``(folded, raw, classes, tokens)``.

    ``folded``: :func:`fold` of ``text``. ``raw``: ``folded`` as ASCII bytes, each non-ASCII
    character replaced by ``?`` (so byte offset == character offset). ``classes``: ``raw``
    through :data:`CLASS_TABLE`. ``tokens``: ``raw`` through :data:`TOKEN_TABLE`. All four have
    ``len(text)`` elements.
    """
    folded = fold(text)
    raw = folded.encode("ascii", "replace")
    return folded, raw, raw.translate(CLASS_TABLE), raw.translate(TOKEN_TABLE)
