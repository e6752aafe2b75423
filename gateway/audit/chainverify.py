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

* witness: a file outside the database with one checkpoint object (the format above) per
  line, appended and fsync'd by the gateway each time it signs a checkpoint
  (``audit.witness_file``), or lines saved from ``gateway audit head``. Several chains (one
  per gateway process) may share one file; a torn last line (a crash mid-append) is ignored.

Detected: a modified record (hash mismatch), a deleted record (gap in ``seq``), an inserted or
reordered record (duplicate ``seq``, broken ``prev_hash`` link, or ``seq`` differing from the
body), truncation (a signed checkpoint beyond the last record, or one whose head hash differs),
records appended after a chain's final checkpoint. Records after the last checkpoint of a
running chain are linked but not yet signed: checkpoint often enough for your tolerance.
Retention may remove a chain's oldest records up to a signed checkpoint; the chain then
verifies from that checkpoint (its head hash is the first remaining record's prev_hash), and
a chain whose records were all removed keeps that checkpoint alone.
Each problem names the first bad ``seq`` of its chain.

The checkpoints stored beside the records can be deleted with them: cutting a chain's tail
together with the checkpoints that cover it (or deleting a whole chain) leaves a shorter chain
that verifies. Only a signed head kept elsewhere rules that out — Certificate Transparency's
signed tree heads held by witnesses (RFC 9162 section 8). Given a witness, every chain in it
must reach each witnessed checkpoint with the same head hash and a valid signature, or it
fails; a witnessed chain missing from the input is reported as deleted. Without a witness
the summary says which tails cannot be vouched for.
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

__all__ = ["GENESIS", "ChainReport", "Report", "key_id", "load_witness", "main", "verify"]

GENESIS = "0" * 64
"""``prev_hash`` of the first entry of every chain."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """Key identifier: the first 16 hex digits of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass
class ChainReport:
    """Verification result of one chain. ``first_bad_seq`` is None when the chain is intact.

    ``pruned_through``: the seq retention removed records through (0: none removed), and
    ``pruned_signed_at`` when its checkpoint was signed (ISO 8601 from the signed body: a
    retention period is in time, so an auditor can tell a prune from a deletion of recent
    records, which reads the same otherwise);
    ``checkpoints``: signed checkpoints from the input that verified; ``witnessed``: witnessed
    checkpoints the chain matched; ``witnessed_seq``: the highest of them (0: none)."""

    chain_id: str
    records: int = 0
    last_seq: int = 0
    pruned_through: int = 0
    pruned_signed_at: str | None = None
    checkpoints: int = 0
    witnessed: int = 0
    witnessed_seq: int = 0
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    def fail(self, seq: int, problem: str) -> None:
        """Record a problem at ``seq`` (keeps the smallest bad seq)."""
        self.problems.append(f"seq {seq}: {problem}")
        if self.first_bad_seq is None or seq < self.first_bad_seq:
            self.first_bad_seq = seq


@dataclass
class Report:
    """Verification result of every chain in the input; ``witnessed`` tells whether a
    witness was given (even an empty one)."""

    chains: dict[str, ChainReport]
    witnessed: bool = False

    @property
    def ok(self) -> bool:
        """True when every chain verified and at least one record or checkpoint was seen."""
        return bool(self.chains) and all(c.first_bad_seq is None for c in self.chains.values())

    def summary(self) -> str:
        """Human-readable lines: one per chain with its problems, then what was not covered:
        without a witness, that truncation after each chain's last signed checkpoint cannot
        be ruled out; with one, which chains' tails lie beyond their last witnessed checkpoint."""
        lines = []
        uncovered = []
        for chain in self.chains.values():
            state = "OK" if chain.first_bad_seq is None else f"FAILED at seq {chain.first_bad_seq}"
            counts = f"{chain.records} records, {chain.checkpoints} signed checkpoints"
            if self.witnessed:
                counts += f", {chain.witnessed} witnessed"
            if chain.pruned_through:
                counts += f", seq 1..{chain.pruned_through} removed by retention"
                if chain.pruned_signed_at:
                    counts += f" (signed through seq {chain.pruned_through} at {chain.pruned_signed_at})"
            lines.append(f"chain {chain.chain_id}: {state} ({counts})")
            lines.extend(f"  - {p}" for p in chain.problems)
            if self.witnessed and chain.first_bad_seq is None and chain.last_seq > chain.witnessed_seq:
                uncovered.append(f"{chain.chain_id} after seq {chain.witnessed_seq}")
        if not lines:
            return "no audit records found"
        if not self.witnessed:
            lines.append(
                "no witness given: the signed checkpoints checked are the ones stored with the records, so "
                "deleting a chain's tail together with its checkpoints (or a whole chain) cannot be ruled out; "
                "verify against a witness (--witness, audit.witness_file) to rule it out"
            )
        elif uncovered:
            lines.append("not covered by the witness (truncation there cannot be ruled out): " + "; ".join(uncovered))
        return "\n".join(lines)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _verify_chain(
    report: ChainReport,
    entries: list[Mapping[str, Any]],
    anchors: Mapping[int, str],
    stored: Mapping[int, str],
) -> dict[int, str]:
    """Walk one chain in seq order; returns seq → record_hash for the verified prefix (and
    the retention anchor's seq → head hash).

    A chain whose oldest records were removed by retention starts right after a signed
    checkpoint (``anchors``: seq → head_hash of checkpoints whose signature verified, stored
    or witnessed) whose head hash is the first remaining record's ``prev_hash``. A chain with
    no records left was pruned through its newest ``stored`` checkpoint (those in the input
    itself: a witnessed one alone does not make a deleted chain a pruned one).
    """
    heads: dict[int, str] = {}
    prev = GENESIS
    expected = 1
    ordered = sorted(entries, key=lambda e: int(e["seq"]))
    if not ordered and stored:
        anchor = max(stored)
        heads[anchor] = stored[anchor]
        report.last_seq = report.pruned_through = anchor
    if ordered and int(ordered[0]["seq"]) > 1:
        first = int(ordered[0]["seq"])
        if anchors.get(first - 1) == ordered[0]["prev_hash"]:
            prev, expected = str(ordered[0]["prev_hash"]), first
            report.last_seq = report.pruned_through = first - 1
            heads[first - 1] = prev
        elif any(a < first for a in anchors):
            # pruned to an earlier checkpoint, then more was deleted: report from there
            anchor = max(a for a in anchors if a < first)
            prev, expected = anchors[anchor], anchor + 1
            report.last_seq = report.pruned_through = anchor
            heads[anchor] = prev
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
        or ("key_id" in cp and body.get("key_id") != cp["key_id"])
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
    *,
    witnessed: bool = False,
    present: bool = True,
) -> None:
    """Check one checkpoint against the walked chain: its signature, that the chain reaches
    its seq, that the record there has its head hash, that nothing follows a final one.
    ``witnessed``: it comes from the witness, not the input; ``present``: the input holds
    records or checkpoints of this chain."""
    seq = int(cp["seq"])
    what = "witnessed checkpoint" if witnessed else "signed checkpoint"
    problem = _checkpoint_problem(cp, report.chain_id, keys)
    if problem is not None:
        report.fail(seq, f"witness: {problem}" if witnessed else problem)
        return
    body = json.loads(str(cp["body"]))
    if seq < report.pruned_through:
        pass  # covers records removed by retention
    elif seq > report.last_seq and report.first_bad_seq is None:
        if not present:
            problem = f"chain is missing but a {what} covers seq {seq} (deleted)"
        else:
            problem = f"chain ends at seq {report.last_seq} but a {what} covers seq {seq} (truncated)"
        report.fail(report.last_seq + 1, problem)
        return
    elif seq in heads and heads[seq] != cp["head_hash"]:
        report.fail(seq, f"record hash differs from the {what}'s head hash (modified)")
        return
    elif body.get("final") is True and report.last_seq > seq:
        report.fail(seq + 1, f"records after the chain was closed at seq {seq} (inserted)")
        return
    if witnessed:
        report.witnessed += 1
        report.witnessed_seq = max(report.witnessed_seq, seq)
    else:
        report.checkpoints += 1


def verify(
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Mapping[str, Any]] = (),
    public_keys: Iterable[Ed25519PublicKey] | None = None,
    witness: Iterable[Mapping[str, Any]] | None = None,
) -> Report:
    """Verify every chain found in ``entries`` against its signed ``checkpoints``.

    ``public_keys``: the keys checkpoints may be signed with; None skips signature checks
    (structure and hashes are still checked). ``witness``: checkpoints kept outside the
    input (:func:`load_witness`); each must verify and be reached by its chain with the same
    head hash, and a witnessed chain absent from the input fails as deleted. None: no
    witness (the summary says what that leaves open). Returns a Report; never raises on bad
    data.
    """
    by_chain: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_chain[str(entry["chain_id"])].append(entry)
    cps: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for cp in checkpoints:
        cps[str(cp["chain_id"])].append(cp)
    seen: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for cp in witness or ():
        seen[str(cp["chain_id"])].append(cp)
    keys = {key_id(k): k for k in public_keys} if public_keys is not None else None
    chains: dict[str, ChainReport] = {}
    for chain_id in sorted(set(by_chain) | set(cps) | set(seen)):
        report = ChainReport(chain_id)
        stored = {
            int(cp["seq"]): str(cp["head_hash"])
            for cp in cps.get(chain_id, [])
            if _checkpoint_problem(cp, chain_id, keys) is None
        }
        anchors = {
            int(cp["seq"]): str(cp["head_hash"])
            for cp in seen.get(chain_id, [])
            if _checkpoint_problem(cp, chain_id, keys) is None
        }
        anchors.update(stored)
        heads = _verify_chain(report, by_chain.get(chain_id, []), anchors, stored)
        if report.pruned_through:
            for cp in [*cps.get(chain_id, []), *seen.get(chain_id, [])]:
                if int(cp["seq"]) == report.pruned_through and _checkpoint_problem(cp, chain_id, keys) is None:
                    report.pruned_signed_at = str(json.loads(str(cp["body"])).get("created_at"))
                    break
        for cp in sorted(cps.get(chain_id, []), key=lambda c: int(c["seq"])):
            _verify_checkpoint(report, cp, heads, keys)
        present = chain_id in by_chain or chain_id in cps
        for cp in sorted(seen.get(chain_id, []), key=lambda c: int(c["seq"])):
            _verify_checkpoint(report, cp, heads, keys, witnessed=True, present=present)
        chains[chain_id] = report
    return Report(chains, witnessed=witness is not None)


def load_witness(path: str) -> list[dict[str, Any]]:
    """The checkpoints in a witness file (JSON lines, see the module docstring).

    A last line without its newline that is not JSON is a torn append and is skipped; any
    other line that is not a checkpoint object raises ValueError naming the line number.
    Raises OSError if the file cannot be read.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    lines = text.split("\n")
    found: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            if number == len(lines):  # no newline after it: the append was cut short
                continue
            raise ValueError(f"{path}, line {number}: not JSON") from None
        if not isinstance(item, dict) or not {"chain_id", "seq", "head_hash", "body", "signature"} <= item.keys():
            raise ValueError(f"{path}, line {number}: not a checkpoint")
        found.append(item)
    return found


def main(argv: list[str] | None = None) -> int:
    """CLI: verify a JSONL export, against witness files if given. Exit 0 if every chain
    verifies, 1 otherwise, 2 on unusable arguments (an unreadable or malformed witness)."""
    parser = argparse.ArgumentParser(description="Verify a Sovereign Gateway audit export.")
    parser.add_argument("export", help="JSONL export (entries and checkpoints)")
    parser.add_argument("--public-key", action="append", default=[], help="PEM Ed25519 public key (repeatable)")
    parser.add_argument(
        "--witness",
        action="append",
        default=None,
        help="JSONL of signed checkpoints kept outside the database (repeatable): the chains must reach them",
    )
    args = parser.parse_args(argv)
    witness: list[dict[str, Any]] | None = None
    if args.witness is not None:
        witness = []
        for path in args.witness:
            try:
                witness.extend(load_witness(path))
            except (OSError, ValueError) as exc:
                parser.error(f"witness {path}: {exc}")
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
    report = verify(entries, checkpoints, keys or None, witness)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
