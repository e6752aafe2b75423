"""Classify stage against a labelled corpus: Faker text in ten locales with known spans, plus
hand-written hard negatives (benchmarks/classify_corpus.py). Pins precision and recall per label
for the built-in engine: ≥ 0.98 for checksum-validated labels, ≥ 0.95 for email and phone."""

from __future__ import annotations

import time

import pytest

from benchmarks.classify_corpus import Score, generate, score
from gateway.classify import BuiltinDetector

THRESHOLDS = {
    "pii.payment_card": 0.98,
    "pii.iban": 0.98,
    "pii.national_id": 0.98,
    "pii.email": 0.95,
    "pii.phone": 0.95,
}


@pytest.fixture(scope="module")
def result() -> tuple[Score, list[str]]:
    docs = generate(seed=20261130, per_locale=150)
    return score(BuiltinDetector(), docs), sorted({d.locale for d in docs})


def test_corpus_covers_six_locales_and_hard_negatives(result: tuple[Score, list[str]]) -> None:
    s, locales = result
    base = {loc.split(":")[0] for loc in locales}
    assert {"zh_CN", "de_DE"} <= base and len(base) >= 6
    assert any(loc.endswith(":negative") for loc in locales)
    for label in THRESHOLDS:
        assert s.tp[label] + s.fn[label] >= 100, f"too few gold {label} to measure"


@pytest.mark.parametrize("label", sorted(THRESHOLDS))
def test_precision_and_recall_meet_the_bar(result: tuple[Score, list[str]], label: str) -> None:
    s, _ = result
    bar = THRESHOLDS[label]
    misses = [e for e in s.errors if e[1] == label or e[1].startswith(label + ".")][:10]
    assert s.precision(label) >= bar, f"{label} precision {s.precision(label):.4f}\n{s.table()}\n{misses}"
    assert s.recall(label) >= bar, f"{label} recall {s.recall(label):.4f}\n{s.table()}\n{misses}"


def test_every_national_id_country_in_the_corpus_is_found(result: tuple[Score, list[str]]) -> None:
    s, _ = result
    countries = [lb for lb in s.labels() if lb.startswith("pii.national_id.")]
    assert {"pii.national_id.cn", "pii.national_id.us"} <= set(countries)
    for label in countries:
        assert s.recall(label) >= 0.95 and s.precision(label) >= 0.95, s.table()


def test_corpus_run_is_quick() -> None:
    started = time.perf_counter()
    score(BuiltinDetector(), generate(seed=1, per_locale=40))
    assert time.perf_counter() - started < 5.0
