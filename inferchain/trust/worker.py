"""The validator's loop: take evidence in, check sampled sessions, share signed verdicts, slash on-chain.

One `scan()`:

1. every new evidence file (`SessionEvidence` JSON a buyer dropped into the evidence folder) is recorded in the
   `EvidenceStore`; if the node signed a *different* receipt for the same session and span before, both go to
   `NodeStaking.reportEquivocation` at once (no quorum needed);
2. sessions this validator samples are re-run (`check_session`); a guilty one gets a verdict signed by this
   validator, written to the shared verdict folder (one JSON per session and signer) and stored; each check
   also yields a validation receipt (its pay, see `validation_receipt`) stored for the buyer to countersign;
3. verdict files of all validators are grouped per verdict: once `quorum` distinct on-chain validators signed the
   same one, this validator submits them to `NodeStaking.slashByVerdicts` (whoever gets there first is paid the
   reporter share; the others find the offence slashed and record `already`).

Every outcome, tx hash and error is in the store; nothing here loops without bound.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from inferchain.trust.commitment import CommitmentError, Sketch
from inferchain.trust.evidence import EvidenceStore
from inferchain.trust.validator import (
    SessionEvidence,
    Validator,
    report_equivocation,
    slash_by_quorum,
    validation_receipt,
)
from inferchain.wallet.receipts import Receipt
from inferchain.wallet.verdicts import Verdict

MAX_FILES_PER_SCAN = 10_000
MAX_VERDICT_FILES = 100_000


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def _verdict_json(verdict: Verdict, signer: str, signature: bytes) -> dict[str, Any]:
    return {
        "node": verdict.node,
        "session_id": _hex(verdict.session_id),
        "guilty": verdict.guilty,
        "evidence_hash": _hex(verdict.evidence_hash),
        "deadline": verdict.deadline,
        "signer": signer,
        "signature": _hex(signature),
    }


def _verdict_from_json(data: dict[str, Any]) -> tuple[Verdict, bytes]:
    verdict = Verdict(
        node=data["node"],
        session_id=bytes.fromhex(data["session_id"][2:]),
        guilty=bool(data["guilty"]),
        evidence_hash=bytes.fromhex(data["evidence_hash"][2:]),
        deadline=int(data["deadline"]),
    )
    return verdict, bytes.fromhex(data["signature"][2:])


@dataclass
class ScanReport:
    new_files: int = 0
    sampled: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    verdicts_signed: int = 0
    slashes: list[dict[str, Any]] = field(default_factory=list)  # submissions made in this scan

    def to_json(self) -> dict[str, Any]:
        return {
            "new_files": self.new_files,
            "sampled": self.sampled,
            "outcomes": dict(self.outcomes),
            "verdicts_signed": self.verdicts_signed,
            "slashes": self.slashes,
        }


class ValidatorWorker:
    """`chain`: inferchain.wallet.chain.Chain (None: judge and sign only, submit nothing). `span`: the SpanModel
    this validator re-runs (the same layers are loaded once more, at the other precision, the first time a node's
    sketch says it computed with int8 weights, or fp32 ones). `price_per_1k`: what its validation receipts bill
    (token wei per 1k tokens per layer)."""

    def __init__(
        self,
        validator: Validator,
        span: Any,
        store: EvidenceStore,
        evidence_dir: Path,
        verdict_dir: Path,
        chain: Any = None,
        price_per_1k: int = 0,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.validator, self.span, self.store, self.chain = validator, span, store, chain
        self._spans: dict[str, Any] = {} if span is None else {span.precision: span}  # by precision
        self.evidence_dir, self.verdict_dir = evidence_dir, verdict_dir
        self.price_per_1k = price_per_1k
        self.progress = progress or (lambda _event: None)
        verdict_dir.mkdir(parents=True, exist_ok=True)

    @property
    def account(self) -> LocalAccount:
        return self.validator.account

    def scan(self) -> ScanReport:
        report = ScanReport()
        for path in sorted(self.evidence_dir.glob("*.json"))[:MAX_FILES_PER_SCAN]:
            if self.store.has_seen(path.name):
                continue
            report.new_files += 1
            try:
                evidence = SessionEvidence.from_json(json.loads(path.read_text()))
            except Exception as e:  # whatever a buyer drops in must not stop the validator
                reason = f"{type(e).__name__}: {e}"[:500]
                self.store.add_unreadable(path.name, reason)
                self.progress({"file": path.name, "outcome": "unreadable", "reason": reason})
                continue
            self._take(path.name, evidence, report)
        if self.chain is not None:
            self._submit_quorums(report)
        return report

    def _span_for(self, evidence: SessionEvidence) -> Any:
        """This validator's span at the precision the node's sketch commits to (each loaded once)."""
        try:
            precision = Sketch.from_bytes(evidence.sketch).precision
        except CommitmentError:  # check_session judges a malformed sketch; any span will do
            return self.span
        if precision not in self._spans:
            from inferchain.models.span import SpanModel

            path = self.span.info.folder.path
            self._spans[precision] = SpanModel(path, self.span.start, self.span.end, precision=precision)  # type: ignore[arg-type]  # a sketch precision is one of the SpanModel ones
        return self._spans[precision]

    # -- one evidence file -------------------------------------------------------------------------------
    def _take(self, name: str, evidence: SessionEvidence, report: ScanReport) -> None:
        r = evidence.receipt
        domain = self.validator.receipt_domain
        signed_by_node = r.recover(evidence.node_signature, domain) == r.node
        sampled = self.validator.wants(evidence) and signed_by_node
        receipt_json = {k: (str(v) if k == "price_per_1k" else v) for k, v in r.to_json().items()}
        conflicts = self.store.add_seen(
            name, receipt_json, _hex(evidence.node_signature), _hex(r.digest(domain)), sampled
        )
        if signed_by_node:
            for other in conflicts:
                self._report_equivocation(evidence, other.receipt, other.node_signature, report)
        if not sampled:
            return
        report.sampled += 1
        began = time.monotonic()
        check, verdict, signature = self.validator.judge(self._span_for(evidence), evidence)
        self.store.add_check(name, r.node, _hex(r.session_id), check, time.monotonic() - began)
        report.outcomes[check.outcome] += 1
        self.progress({"file": name, "node": r.node, "outcome": check.outcome, "reason": check.reason})
        if check.outcome != "unverifiable":
            pay = validation_receipt(evidence, self.validator.address, self.price_per_1k, check)
            self.store.add_payment(_hex(pay.key), name, pay.to_json(), _hex(pay.sign(self.account, domain)))
        if verdict is not None and signature is not None:
            data = _verdict_json(verdict, self.validator.address, signature)
            (self.verdict_dir / f"{data['session_id']}-{self.validator.address}.json").write_text(json.dumps(data))
            self.store.add_verdict(verdict.node, data["session_id"], data, data["signature"])
            report.verdicts_signed += 1

    def _report_equivocation(
        self, evidence: SessionEvidence, other: dict[str, Any], other_sig: str, report: ScanReport
    ) -> None:
        r = evidence.receipt
        staking = self.chain.contracts.staking if self.chain is not None else None
        if staking is None:
            self.progress({"node": r.node, "outcome": "equivocation", "reason": "no chain to report to"})
            return
        offence = _hex(staking.functions.equivocationOffence(r.node, r.session_id, r.span_start, r.span_end).call())
        theirs = dict(other)
        theirs["price_per_1k"] = int(theirs["price_per_1k"])
        self._submit(
            offence,
            "equivocation",
            r.node,
            _hex(r.session_id),
            lambda: report_equivocation(
                self.chain,
                self.account,
                (r, evidence.node_signature),
                (Receipt.from_json(theirs), bytes.fromhex(other_sig[2:])),
            ),
            report,
        )

    # -- verdict quorums ---------------------------------------------------------------------------------
    def _submit_quorums(self, report: ScanReport) -> None:
        staking = self.chain.contracts.staking
        quorum = int(staking.functions.quorum().call())
        if quorum == 0:
            return
        domain = self.chain.deployment.verdict_domain
        groups: dict[Verdict, dict[str, bytes]] = defaultdict(dict)
        for path in sorted(self.verdict_dir.glob("*.json"))[:MAX_VERDICT_FILES]:
            try:
                verdict, signature = _verdict_from_json(json.loads(path.read_text()))
                signer = verdict.recover(signature, domain)
            except Exception:  # a malformed or half-written file: skip it, the next scan retries
                continue
            if verdict.guilty and verdict.deadline > time.time():
                groups[verdict][to_checksum_address(signer)] = signature
        for verdict, by_signer in groups.items():
            valid = {s: sig for s, sig in by_signer.items() if staking.functions.isValidator(s).call()}
            if len(valid) < quorum:
                continue
            offence = _hex(staking.functions.verdictOffence(verdict.node, verdict.session_id).call())
            signatures = list(valid.values())[: max(quorum, len(valid))]
            self._submit(
                offence,
                "verdicts",
                verdict.node,
                _hex(verdict.session_id),
                partial(slash_by_quorum, self.chain, self.account, verdict, signatures),
                report,
                signatures=len(signatures),
            )

    def _submit(
        self,
        offence: str,
        kind: str,
        node: str,
        session_id: str,
        send: Callable[[], Any],
        report: ScanReport,
        signatures: int | None = None,
    ) -> None:
        previous = self.store.submission(offence)
        if previous is not None and previous["status"] in ("mined", "already"):
            return
        if bool(self.chain.contracts.staking.functions.offenceSlashed(bytes.fromhex(offence[2:])).call()):
            self.store.add_submission(offence, kind, node, session_id, "already", signatures=signatures)
            return
        try:
            tx = send()
        except Exception as e:  # a revert (e.g. another validator was first) or RPC trouble: recorded, retried
            self.store.add_submission(offence, kind, node, session_id, "failed", signatures=signatures, error=str(e))
            self.progress({"node": node, "outcome": f"{kind} submission failed", "reason": str(e)[:200]})
            return
        tx_hash = _hex(bytes(tx["transactionHash"]))
        self.store.add_submission(offence, kind, node, session_id, "mined", tx_hash, int(tx["blockNumber"]), signatures)
        event = {"kind": kind, "node": node, "session_id": session_id, "tx": tx_hash, "offence": offence}
        report.slashes.append(event)
        self.progress({**event, "outcome": "slashed"})


def evidence_file_name(evidence: SessionEvidence) -> str:
    """A stable file name for a buyer dropping evidence: the receipt's node-signature hash (two different receipts
    for one session never collide)."""
    return _hex(keccak(evidence.node_signature)) + ".json"
