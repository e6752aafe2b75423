"""Verify audit hash chains and signed checkpoints — standalone: stdlib + ``cryptography`` only.

This module imports nothing from the gateway, so an auditor can copy it out and run it on an
export with only the public key::

    python chainverify.py audit-export.jsonl --public-key audit-public.pem

Formats (one JSON object per line in an export):

* entry: ``{"type": "entry", "chain_id", "seq", "kind", "request_id", "prev_hash",
  "record_hash", "body"}``. ``body`` is the record's canonical JSON (RFC 8785) text and the
  hash pre-image: ``record_hash = sha256(body as UTF-8)``; ``body`` itself holds
  ``chain_id, seq, kind, request_id, prev_hash, created_at, record``. The first entry of a
  chain has ``prev_hash`` = 64 zeros; each next one the previous entry's ``record_hash``.
* checkpoint: ``{"type": "checkpoint", "chain_id", "seq", "head_hash", "key_id", "body",
  "signature"}``; ``body`` is canonical JSON of ``{chain_id, seq, head_hash, created_at,
  key_id, final}``, ``signature`` the base64 Ed25519 signature (RFC 8032) of ``body``.
  ``final`` marks the checkpoint written when the chain's process shut down.

Detected: a modified record (hash mismatch), a deleted record (gap in ``seq``), an inserted or
reordered record (duplicate ``seq``, broken ``prev_hash`` link, or ``seq`` differing from the
body), truncation (a signed checkpoint beyond the last record, or one whose head hash differs),
records appended after a chain's final checkpoint. Records after the last checkpoint of a
running chain are linked but not yet signed: checkpoint often enough for your tolerance.
Retention may remove a chain's oldest records up to a signed checkpoint; the chain then
verifies from that checkpoint (its head hash is the first remaining record's prev_hash).
Each problem names the first bad ``seq`` of its chain.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

__all__ = ["GENESIS", "ChainReport", "Report", "key_id", "main", "verify"]

GENESIS = "0" * 64
"""``prev_hash`` of the first entry of every chain."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """Key identifier: the first 16 hex digits of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass
class ChainReport:
    """Verification result of one chain. ``first_bad_seq`` is None when the chain is intact."""

    chain_id: str
    records: int = 0
    last_seq: int = 0
    pruned_through: int = 0
    checkpoints: int = 0
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    def fail(self, seq: int, problem: str) -> None:
        """Record a problem at ``seq`` (keeps the smallest bad seq)."""
        self.problems.append(f"seq {seq}: {problem}")
        if self.first_bad_seq is None or seq < self.first_bad_seq:
            self.first_bad_seq = seq


@dataclass
class Report:
    """Verification result of every chain in the input."""

    chains: dict[str, ChainReport]

    @property
    def ok(self) -> bool:
        """True when every chain verified and at least one record or checkpoint was seen."""
        return bool(self.chains) and all(c.first_bad_seq is None for c in self.chains.values())

    def summary(self) -> str:
        """Human-readable lines, one per chain."""
        lines = []
        for chain in self.chains.values():
            state = "OK" if chain.first_bad_seq is None else f"FAILED at seq {chain.first_bad_seq}"
            lines.append(
                f"chain {chain.chain_id}: {state} ({chain.records} records, {chain.checkpoints} signed checkpoints)"
            )
            lines.extend(f"  - {p}" for p in chain.problems)
        return "\n".join(lines) or "no audit records found"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _verify_chain(report: ChainReport, entries: list[Mapping[str, Any]], anchors: Mapping[int, str]) -> dict[int, str]:
    """Walk one chain in seq order; returns seq → record_hash for the verified prefix.

    A chain whose oldest records were removed by retention starts right after a signed
    checkpoint (``anchors``: seq → head_hash of checkpoints whose signature verified) whose
    head hash is the first remaining record's ``prev_hash``.
    """
    heads: dict[int, str] = {}
    prev = GENESIS
    expected = 1
    ordered = sorted(entries, key=lambda e: int(e["seq"]))
    if ordered and int(ordered[0]["seq"]) > 1:
        first = int(ordered[0]["seq"])
        if anchors.get(first - 1) == ordered[0]["prev_hash"]:
            prev, expected = str(ordered[0]["prev_hash"]), first
            report.last_seq = report.pruned_through = first - 1
        elif any(a < first for a in anchors):
            # pruned to an earlier checkpoint, then more was deleted: report from there
            anchor = max(a for a in anchors if a < first)
            prev, expected = anchors[anchor], anchor + 1
            report.last_seq = report.pruned_through = anchor
    for entry in ordered:
        seq = int(entry["seq"])
        if seq < expected:
            report.fail(seq, "duplicate seq (a record was inserted or reordered)")
            return heads
        if seq > expected:
            report.fail(expected, f"records {expected}..{seq - 1} are missing (deleted)")
            return heads
        body_text = str(entry["body"])
        try:
            body = json.loads(body_text)
        except ValueError:
            report.fail(seq, "body is not JSON (modified)")
            return heads
        if _sha256(body_text) != entry["record_hash"]:
            report.fail(seq, "record hash does not match its body (modified)")
            return heads
        for name in ("chain_id", "seq", "kind", "request_id", "prev_hash"):
            if body.get(name) != entry.get(name) and not (name == "seq" and body.get(name) == seq):
                report.fail(seq, f"{name} differs from the hashed body (modified or reordered)")
                return heads
        if entry["prev_hash"] != prev:
            report.fail(seq, "prev_hash does not link to the previous record (inserted, reordered or modified)")
            return heads
        prev = str(entry["record_hash"])
        heads[seq] = prev
        report.records += 1
        report.last_seq = seq
        expected += 1
    return heads


def _checkpoint_problem(
    cp: Mapping[str, Any], chain_id: str, keys: Mapping[str, Ed25519PublicKey] | None
) -> str | None:
    """Why a checkpoint cannot be trusted (its body, fields or signature), or None.
    Signatures are checked only when ``keys`` is given."""
    try:
        body = json.loads(str(cp["body"]))
    except ValueError:
        return "checkpoint body is not JSON (modified)"
    if (
        body.get("chain_id") != chain_id
        or body.get("seq") != int(cp["seq"])
        or body.get("head_hash") != cp["head_hash"]
    ):
        return "checkpoint fields differ from its signed body (modified)"
    if keys is not None:
        key = keys.get(str(body.get("key_id")))
        if key is None:
            return f"checkpoint signed by unknown key {body.get('key_id')!r}"
        try:
            key.verify(base64.b64decode(str(cp["signature"])), str(cp["body"]).encode("utf-8"))
        except (InvalidSignature, ValueError):
            return "checkpoint signature is invalid"
    return None


def _verify_checkpoint(
    report: ChainReport,
    cp: Mapping[str, Any],
    heads: Mapping[int, str],
    keys: Mapping[str, Ed25519PublicKey] | None,
) -> None:
    seq = int(cp["seq"])
    problem = _checkpoint_problem(cp, report.chain_id, keys)
    if problem is not None:
        report.fail(seq, problem)
        return
    body = json.loads(str(cp["body"]))
    if seq < report.pruned_through:
        report.checkpoints += 1  # covers records removed by retention
        return
    if seq > report.last_seq and report.first_bad_seq is None:
        problem = f"chain ends at seq {report.last_seq} but a signed checkpoint covers seq {seq} (truncated)"
        report.fail(report.last_seq + 1, problem)
        return
    if seq in heads and heads[seq] != cp["head_hash"]:
        report.fail(seq, "record hash differs from the signed checkpoint's head hash (modified)")
        return
    if body.get("final") is True and report.last_seq > seq:
        report.fail(seq + 1, f"records after the chain was closed at seq {seq} (inserted)")
        return
    report.checkpoints += 1


def verify(
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Mapping[str, Any]] = (),
    public_keys: Iterable[Ed25519PublicKey] | None = None,
) -> Report:
    """Verify every chain found in ``entries`` against its signed ``checkpoints``.

    ``public_keys``: the keys checkpoints may be signed with; None skips signature checks
    (structure and hashes are still checked). Returns a Report; never raises on bad data.
    """
    by_chain: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_chain[str(entry["chain_id"])].append(entry)
    cps: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for cp in checkpoints:
        cps[str(cp["chain_id"])].append(cp)
    keys = {key_id(k): k for k in public_keys} if public_keys is not None else None
    chains: dict[str, ChainReport] = {}
    for chain_id in sorted(set(by_chain) | set(cps)):
        report = ChainReport(chain_id)
        anchors = {
            int(cp["seq"]): str(cp["head_hash"])
            for cp in cps.get(chain_id, [])
            if _checkpoint_problem(cp, chain_id, keys) is None
        }
        heads = _verify_chain(report, by_chain.get(chain_id, []), anchors)
        for cp in sorted(cps.get(chain_id, []), key=lambda c: int(c["seq"])):
            _verify_checkpoint(report, cp, heads, keys)
        chains[chain_id] = report
    return Report(chains)


def main(argv: list[str] | None = None) -> int:
    """CLI: verify a JSONL export. Exit 0 if every chain verifies, 1 otherwise."""
    parser = argparse.ArgumentParser(description="Verify a Sovereign Gateway audit export.")
    parser.add_argument("export", help="JSONL export (entries and checkpoints)")
    parser.add_argument("--public-key", action="append", default=[], help="PEM Ed25519 public key (repeatable)")
    args = parser.parse_args(argv)
    keys = []
    for path in args.public_key:
        with open(path, "rb") as fh:
            key = load_pem_public_key(fh.read())
        if not isinstance(key, Ed25519PublicKey):
            parser.error(f"{path} is not an Ed25519 public key")
        keys.append(key)
    entries: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    with open(args.export, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                item = json.loads(line)
                (checkpoints if item.get("type") == "checkpoint" else entries).append(item)
    report = verify(entries, checkpoints, keys or None)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
