"""The validator: re-run a sampled session's span inputs through the same span, compare with the node's committed
sketch, sign a verdict; a quorum of guilty verdicts submitted to `NodeStaking.slashByVerdicts` slashes the node.

What a validator needs for one session (`SessionEvidence`, handed over by the buyer that kept it): the receipt the
node signed (and its signature), the serialized sketch whose keccak is the receipt's `activationCommitment`, and
the exact wire tensors the buyer sent to that span with their positions. The sketch's header holds the sha256 of
those inputs as the node received them, so invented inputs are detected (`unverifiable`, never `guilty`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from inferchain.models.span import SpanModel
from inferchain.trust.commitment import CommitmentError, Comparison, Sketch, Tolerance, compare, input_digest_update
from inferchain.wallet.receipts import Receipt
from inferchain.wallet.typed_data import Domain
from inferchain.wallet.verdicts import Verdict, order_signatures
from inferchain.wire.errors import WireError
from inferchain.wire.tensors import decode_tensor

Outcome = Literal["honest", "guilty", "unverifiable"]
VERDICT_TTL_S = 24 * 3600


@dataclass(frozen=True)
class SessionEvidence:
    receipt: Receipt
    node_signature: bytes
    sketch: bytes
    inputs: list[tuple[int, dict[str, Any]]]  # (position, wire tensor map) per forward, in order

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt": {k: (str(v) if k == "price_per_1k" else v) for k, v in self.receipt.to_json().items()},
            "node_signature": "0x" + self.node_signature.hex(),
            "sketch": "0x" + self.sketch.hex(),
            "inputs": [{"pos": p, "d": x["d"], "s": list(x["s"]), "b": bytes(x["b"]).hex()} for p, x in self.inputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionEvidence:
        receipt = dict(data["receipt"])
        receipt["price_per_1k"] = int(receipt["price_per_1k"])
        return cls(
            receipt=Receipt.from_json(receipt),
            node_signature=bytes.fromhex(data["node_signature"].removeprefix("0x")),
            sketch=bytes.fromhex(data["sketch"].removeprefix("0x")),
            inputs=[
                (int(x["pos"]), {"d": x["d"], "s": list(x["s"]), "b": bytes.fromhex(x["b"])}) for x in data["inputs"]
            ],
        )


@dataclass(frozen=True)
class Check:
    outcome: Outcome
    reason: str
    comparison: Comparison | None = None

    @property
    def evidence_hash(self) -> bytes:
        return bytes(keccak(repr((self.outcome, self.reason, self.comparison)).encode()))


def recompute(span: SpanModel, inputs: list[tuple[int, dict[str, Any]]], start: int, end: int) -> np.ndarray:
    """Run the recorded inputs through layers [start, end) with a fresh cache; returns [tokens, hidden]."""
    cache = span.new_cache()
    outs = []
    for position, wire in inputs:
        x = decode_tensor(wire, span.info.hidden_size, 1 << 16)
        out = span.forward(torch.from_numpy(x.astype(np.float32)), position, cache, start, end)
        outs.append(out.numpy().reshape(-1, span.info.hidden_size))
    return np.concatenate(outs)


def check_session(
    span: SpanModel, evidence: SessionEvidence, domain: Domain, tolerance: Tolerance | None = None
) -> Check:
    """Judge one session. `domain`: the escrow's receipt domain (to check the node's signature)."""
    r = evidence.receipt
    if r.recover(evidence.node_signature, domain) != r.node:
        return Check("unverifiable", "the receipt's node signature does not verify")
    if keccak(evidence.sketch) != r.activation_commitment:
        return Check("unverifiable", "the sketch does not hash to the receipt's activation commitment")
    try:
        sketch = Sketch.from_bytes(evidence.sketch)
    except CommitmentError as e:  # the node signed a commitment to a malformed sketch: that alone is a lie
        return Check("guilty", f"the committed sketch is malformed: {e}")
    digest = hashlib.sha256()
    expected_pos = 0
    for position, wire in evidence.inputs:
        if position != expected_pos:
            return Check("unverifiable", f"inputs are not contiguous at position {position}")
        input_digest_update(digest, position, wire)
        expected_pos += int(wire["s"][1])
    if digest.digest() != sketch.inputs_sha256:
        return Check("unverifiable", "the inputs do not hash to what the node committed it received")
    if expected_pos != r.tokens_in + r.tokens_out or sketch.tokens != expected_pos:
        return Check("guilty", f"the sketch covers {sketch.tokens} tokens, the receipt bills {expected_pos}")
    if not (span.start <= r.span_start < r.span_end <= span.end):
        return Check("unverifiable", "this validator does not hold the session's span")
    if span.precision != sketch.precision:  # int8 and fp32 outputs differ by more than honest variation
        why = f"the node computed with {sketch.precision} weights; this re-run is {span.precision}"
        return Check("unverifiable", why)
    try:
        outputs = recompute(span, evidence.inputs, r.span_start, r.span_end)
    except WireError as e:
        return Check("unverifiable", f"inputs do not decode: {e}")
    comparison = compare(sketch, outputs, tolerance)
    if comparison.mismatch:
        return Check("guilty", f"{comparison.failed_tokens}/{comparison.tokens} tokens off", comparison)
    return Check("honest", "within tolerance", comparison)


def verdict_deadline(receipt: Receipt) -> int:
    """The same for every validator (signatures of one verdict only add up to a quorum if the verdicts are equal):
    a day after the receipt's expiry, or a day from now if the receipt has already expired."""
    return max(receipt.expiry, int(time.time()) // VERDICT_TTL_S * VERDICT_TTL_S) + VERDICT_TTL_S


def validation_receipt(evidence: SessionEvidence, validator: str, price_per_1k: int, check: Check) -> Receipt:
    """What the validator bills for re-running a session: a receipt of its own, for the same buyer, span and token
    count, whose session id derives from the judged session and whose commitment is the check's evidence hash.
    Countersigned by the buyer and settled on the escrow like any receipt, it pays the validator from the buyer's
    deposit and records its contribution with the RewardPool (the validator is a staked, routable account), so
    it also earns its share of each epoch's pool (docs/trust.md)."""
    r = evidence.receipt
    return Receipt(
        session_id=bytes(keccak(b"inferchain/validation" + r.session_id + bytes.fromhex(r.node[2:]))),
        buyer=r.buyer,
        node=validator,
        model_id=r.model_id,
        span_start=r.span_start,
        span_end=r.span_end,
        tokens_in=r.tokens_in,
        tokens_out=r.tokens_out,
        price_per_1k=price_per_1k,
        activation_commitment=check.evidence_hash,
        expiry=max(r.expiry, int(time.time()) + VERDICT_TTL_S),
    )


def is_sampled(validator: str, session_id: bytes, rate: float) -> bool:
    """Deterministic sampling per (validator, session): a node cannot tell which sessions a given validator takes
    before it signs, but anyone can recompute it afterwards (see SECURITY.md: sampling is not secret)."""
    draw = int.from_bytes(keccak(bytes.fromhex(validator.removeprefix("0x")) + session_id)[:8], "big")
    return draw < rate * 2**64


@dataclass
class Validator:
    account: LocalAccount
    verdict_domain: Domain  # NodeStaking's EIP-712 domain
    receipt_domain: Domain  # the escrow's
    sample_rate: float = 0.1
    tolerance: Tolerance = field(default_factory=Tolerance)
    checked: int = 0
    guilty: int = 0

    @property
    def address(self) -> str:
        return str(self.account.address)

    def wants(self, evidence: SessionEvidence) -> bool:
        return is_sampled(self.address, evidence.receipt.session_id, self.sample_rate)

    def judge(self, span: SpanModel, evidence: SessionEvidence) -> tuple[Check, Verdict | None, bytes | None]:
        """Check a session; a guilty outcome comes with a verdict signed by this validator."""
        check = check_session(span, evidence, self.receipt_domain, self.tolerance)
        self.checked += 1
        if check.outcome != "guilty":
            return check, None, None
        self.guilty += 1
        verdict = Verdict(
            node=evidence.receipt.node,
            session_id=evidence.receipt.session_id,
            guilty=True,
            evidence_hash=keccak(evidence.sketch),
            deadline=verdict_deadline(evidence.receipt),
        )
        return check, verdict, verdict.sign(self.account, self.verdict_domain)


def slash_by_quorum(chain: Any, sender: Any, verdict: Verdict, signatures: list[bytes]) -> Any:
    """Submit a guilty verdict with a quorum of validator signatures to NodeStaking (`chain`: wallet.chain.Chain)."""
    from inferchain.wallet.tx import send

    ordered = order_signatures(verdict, signatures, chain.deployment.verdict_domain)
    fn = chain.contracts.staking.functions.slashByVerdicts(verdict.as_tuple(), ordered)
    return send(chain.w3, sender, fn, what="slashByVerdicts")


def report_equivocation(chain: Any, sender: Any, a: tuple[Receipt, bytes], b: tuple[Receipt, bytes]) -> Any:
    """Two receipts the node signed for one session and span that differ: slashed without any quorum."""
    from inferchain.wallet.tx import send

    fn = chain.contracts.staking.functions.reportEquivocation(a[0].as_tuple(), a[1], b[0].as_tuple(), b[1])
    return send(chain.w3, sender, fn, what="reportEquivocation")
