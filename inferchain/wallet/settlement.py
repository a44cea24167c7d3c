"""Submitting countersigned receipts to the escrow in batches, safely after a crash.

Settling twice is impossible on-chain (the escrow refuses a replayed key); this module also never *tries*:
before each run it asks the escrow which receipts are already settled (e.g. by a run that was killed after its
transaction was mined but before it recorded the fact), simulates every receipt, drops the ones the escrow
would refuse, and only then sends `settleBatch` for the rest, grouped by node then buyer (the cheap order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from inferchain.wallet.chain import Chain
from inferchain.wallet.tx import TransactionFailed, call_view

DEFAULT_BATCH = 50
#: Errors after which a receipt can never be settled; anything else (e.g. a short deposit) may pass later.
PERMANENT = {"ReceiptExpired", "InvalidBuyerSignature", "InvalidNodeSignature", "SelfDealing", "InvalidSpan"}


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


@dataclass
class SettlementReport:
    already: list[str] = field(default_factory=list)  # keys the escrow had settled before this run
    settled: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (tx, block)
    refused: dict[str, tuple[str, bool]] = field(default_factory=dict)  # key -> (reason, permanent)
    txs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "already_settled": self.already,
            "settled": sorted(self.settled),
            "refused": {k: {"reason": r, "permanent": p} for k, (r, p) in self.refused.items()},
            "txs": self.txs,
        }


def settle_receipts(
    chain: Chain,
    sender: LocalAccount,
    receipts: Sequence[Any],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_already: Callable[[list[str]], None] | None = None,
    on_refused: Callable[[str, str, bool], None] | None = None,
    on_batch: Callable[[list[str], str, int], None] | None = None,
    explain: Callable[[BaseException], str] = str,
) -> SettlementReport:
    """Settles `receipts` (SignedReceipt) and reports what happened to each key.

    The callbacks run as soon as each fact is known, so the caller can record it durably right away:
    `on_already(keys)`, `on_refused(key, reason, permanent)`, `on_batch(keys, tx_hash, block)`.
    """
    report = SettlementReport()
    escrow = chain.contracts.escrow
    pending = []
    for signed in receipts:
        key = _hex(signed.receipt.key)
        if chain.is_settled(signed.receipt):
            report.already.append(key)
            continue
        call = escrow.functions.settle(signed.receipt.as_tuple(), signed.node_signature, signed.buyer_signature)
        try:
            call_view(call, what="settle")
        except TransactionFailed as exc:
            permanent = exc.error in PERMANENT
            report.refused[key] = (explain(exc), permanent)
            if on_refused:
                on_refused(key, explain(exc), permanent)
            continue
        pending.append(signed)
    if report.already and on_already:
        on_already(report.already)

    pending.sort(key=lambda s: (s.receipt.node, s.receipt.buyer))
    for i in range(0, len(pending), max(1, batch_size)):
        batch = pending[i : i + batch_size]
        keys = [_hex(s.receipt.key) for s in batch]
        try:
            receipt = chain.settle_batch(sender, batch)
        except TransactionFailed as exc:  # e.g. deposits short in aggregate: the next run retries
            for key in keys:
                report.refused[key] = (explain(exc), False)
                if on_refused:
                    on_refused(key, explain(exc), False)
            continue
        tx, block = _hex(receipt["transactionHash"]), int(receipt["blockNumber"])
        report.txs.append(
            {"what": f"settleBatch({len(batch)})", "tx": tx, "block": block, "gas": int(receipt["gasUsed"])}
        )
        if on_batch:
            on_batch(keys, tx, block)
        for key in keys:
            report.settled[key] = (tx, block)
    return report
