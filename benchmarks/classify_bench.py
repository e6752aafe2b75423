"""Benchmark (not a test) of the classify engines — the built-in one and, next to it, the
optional Presidio engine: time per 16 KB prompt, throughput, and precision/recall per label on
the Faker corpus.

    .venv/bin/python -m benchmarks.classify_bench [--repeat 300] [--presidio-repeat 50] [--kib 16]
                                                  [--no-corpus] [--no-presidio]

Results are printed and written to ``benchmarks/results/classify_bench.json``.

Prompts (each ``--kib`` KiB of UTF-8, seeded so every run measures the same text):

* ``business``  English prose with the numbers business text carries — dates, times, amounts,
  order and ticket numbers, versions — one every ~250 characters, and one email, phone and IBAN:
  the headline figure (target: median ≤ 1 ms for 16 KB).
* ``prose``     English prose, no digits at all (the floor: folding, shapes and prefilters).
* ``dense``     a number-heavy log: a date, a time, a version and an order number every line.
* ``code``      Python source (this repository's gateway/service.py, repeated).
* ``zh_CN``     Chinese prose with full-width punctuation and a date every paragraph.
* ``pii``       one PII value or credential every ~120 characters (worst realistic case).

Each prompt is timed through each engine's ``detect`` (what the gateway runs) and, for the
headline prompt, through ``Classifier.classify`` on a chat body (adds the request walk).
Presidio (``gateway.classify.presidio.PresidioDetector``: pattern recognizers, no NLP model) is
measured when ``presidio-analyzer`` is installed (the ``presidio`` or ``dev`` extra), with
fewer timed calls (``--presidio-repeat``) because each takes tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from faker import Faker

from gateway.classify import BuiltinDetector, Classifier, SpanDetector
from gateway.context import DataLevel

ROOT = Path(__file__).resolve().parent.parent


def _fill(target_bytes: int, piece: Callable[[], str]) -> str:
    parts: list[str] = []
    size = 0
    while size < target_bytes:
        part = piece()
        parts.append(part)
        size += len(part.encode("utf-8"))
    text = "".join(parts)
    while len(text.encode("utf-8")) > target_bytes:
        text = text[:-1]
    return text


def prompts(kib: int, seed: int = 7) -> dict[str, str]:
    """The benchmark prompts, ``kib`` KiB each (see the module docstring)."""
    n = kib * 1024
    rng = random.Random(seed)
    en = Faker("en_US")
    en.seed_instance(seed)
    zh = Faker("zh_CN")
    zh.seed_instance(seed)

    def business_number() -> str:
        d = rng.randrange
        return rng.choice(
            (
                f" The order {d(10000, 99999)} shipped on {en.date()}.",
                f" Meeting moved to {d(8, 18)}:{d(60):02d} in room {d(100, 999)}.",
                f" Invoice total ${d(100, 99999):,}.{d(100):02d} due {en.date()}.",
                f" Ticket #{d(1000, 99999)} is fixed in v{d(1, 9)}.{d(20)}.{d(10)}.",
                f" We expect {d(2, 95)}% growth in Q{d(1, 5)}.",
            )
        )

    def business() -> str:
        return en.paragraph(nb_sentences=2) + business_number()

    text = _fill(n - 200, business)
    business_text = (
        text[: n // 3]
        + " Contact jane.roe@example.org or +44 20 7946 0958. "
        + text[n // 3 : 2 * n // 3]
        + " Pay to DE89 3704 0044 0532 0130 00. "
        + text[2 * n // 3 :]
    )

    def dense() -> str:
        d = rng.randrange
        return f"{en.date()} {d(24):02d}:{d(60):02d}:{d(60):02d} v{d(9)}.{d(9)}.{d(99)} order {d(10**5, 10**7)} ok\n"

    def pii() -> str:
        d = rng.randrange
        value = rng.choice(
            (
                en.email(),
                en.credit_card_number(card_type="visa16"),
                en.iban(),
                f"+49 30 {d(100000, 999999)}",
                en.ipv4(),
                "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
            )
        )
        return en.sentence() + " " + value + ". "

    def chinese() -> str:
        return zh.paragraph(nb_sentences=3) + f"\uff0c日期 {zh.date()}。"

    code = (ROOT / "gateway" / "service.py").read_text(encoding="utf-8")
    return {
        "business": business_text,
        "prose": _fill(n, lambda: en.paragraph(nb_sentences=6) + "\n"),
        "dense": _fill(n, dense),
        "code": _fill(n, lambda: code),
        "zh_CN": _fill(n, chinese),
        "pii": _fill(n, pii),
    }


def _time(fn: Callable[[], object], repeat: int) -> list[float]:
    for _ in range(5):
        fn()  # warm the memo caches, as a long-running gateway has them
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def _engine_report(
    name: str, detector: SpanDetector, texts: dict[str, str], repeat: int, corpus: bool
) -> dict[str, object]:
    """Time ``detector`` on every prompt and ``Classifier.classify`` on the business body;
    score it on the corpus unless ``corpus`` is false. Prints as it goes."""
    report: dict[str, object] = {"engine": name, "repeat": repeat}
    rows: list[dict[str, object]] = []
    print(f"\n{name} engine, {repeat} calls per prompt (median / p95 in ms)\n")
    print(f"{'prompt':10s} {'bytes':>6s} {'median ms':>9s} {'p95 ms':>7s} {'MB/s':>7s}  labels")
    for prompt, text in texts.items():
        size = len(text.encode("utf-8"))
        samples = _time(lambda text=text: detector.detect([text]), repeat)
        median = statistics.median(samples)
        p95 = sorted(samples)[max(0, int(0.95 * len(samples)) - 1)]
        labels = ",".join(sorted(detector.detect([text]))) or "-"
        print(f"{prompt:10s} {size:6d} {median * 1e3:9.3f} {p95 * 1e3:7.3f} {size / median / 1e6:7.1f}  {labels}")
        rows.append({"prompt": prompt, "bytes": size, "median_ms": median * 1e3, "p95_ms": p95 * 1e3, "labels": labels})
    report["prompts"] = rows

    classifier = Classifier([detector])
    body = {"model": "auto", "messages": [{"role": "user", "content": texts["business"]}]}
    samples = _time(lambda: classifier.classify(body, declared=None, floor=DataLevel.PUBLIC), repeat)
    median_ms = statistics.median(samples) * 1e3
    print(f"\nClassifier.classify ({name}) on a chat body with the business prompt: median {median_ms:.3f} ms")
    report["classify_business_median_ms"] = median_ms

    if corpus:
        from benchmarks.classify_corpus import generate, score

        docs = generate()
        started = time.perf_counter()
        result = score(detector, docs)
        elapsed = time.perf_counter() - started
        size = sum(len(d.text.encode("utf-8")) for d in docs)
        rate = size / elapsed / 1e6
        mb = size / 1e6
        print(f"\ncorpus ({name}): {len(docs)} documents, {mb:.2f} MB, scored in {elapsed:.2f} s ({rate:.2f} MB/s)")
        print(result.table())
        report["corpus"] = {
            "documents": len(docs),
            "mb_per_s": rate,
            "labels": {
                label: {"precision": result.precision(label), "recall": result.recall(label),
                        "gold": result.tp[label] + result.fn[label]}
                for label in result.labels()
            },
        }  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=300, help="timed calls per prompt (built-in engine)")
    parser.add_argument("--presidio-repeat", type=int, default=50, help="timed calls per prompt (Presidio)")
    parser.add_argument("--kib", type=int, default=16, help="prompt size in KiB")
    parser.add_argument("--no-corpus", action="store_true", help="skip the precision/recall table")
    parser.add_argument("--no-presidio", action="store_true", help="measure the built-in engine only")
    args = parser.parse_args()

    texts = prompts(args.kib)
    report: dict[str, object] = {"kib": args.kib, "repeat": args.repeat, "python": platform.python_version()}
    # The built-in engine's figures stay at the top level (as before); Presidio's under "presidio".
    report.update(_engine_report("built-in", BuiltinDetector(), texts, args.repeat, not args.no_corpus))
    del report["engine"]
    if not args.no_presidio:
        started = time.perf_counter()
        try:
            from gateway.classify.presidio import PresidioDetector
        except ImportError as exc:
            print(f"\nPresidio not measured: {exc} (install the 'presidio' extra)")
        else:
            presidio = PresidioDetector()
            built_ms = (time.perf_counter() - started) * 1e3
            print(f"\nimport + PresidioDetector() in {built_ms:.0f} ms (presidio-analyzer imports spaCy)")
            result = _engine_report("presidio", presidio, texts, args.presidio_repeat, not args.no_corpus)
            result["construct_ms"] = built_ms
            report["presidio"] = result
            print("\nside by side, median ms per prompt (built-in / Presidio):")
            builtin_rows = {str(r["prompt"]): r for r in report["prompts"]}  # type: ignore[attr-defined]
            for row in result["prompts"]:  # type: ignore[attr-defined]
                ours = builtin_rows[row["prompt"]]
                ratio = row["median_ms"] / ours["median_ms"]
                print(f"{row['prompt']:10s} {ours['median_ms']:8.3f} {row['median_ms']:9.3f}  ({ratio:.0f}x)")
    out = ROOT / "benchmarks" / "results" / "classify_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
