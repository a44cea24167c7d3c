"""Submitting countersigned receipts to the escrow in batches, safely after a crash.

Settling twice is impossible on-chain (the escrow refuses a replayed key); this module also never *tries*:
before each run it asks the escrow which receipts are already settled (e.g. by a run that was killed after its
transaction was mined but before it recorded the fact), simulates every receipt, drops the ones the escrow
would refuse, and only then sends `settleBatch` for the rest, grouped by node then buyer (the cheap order).

Two callers share this core: a node settling its own receipts (`inferchain node settle`) and the gateway's
settlement worker (`inferchain market settle`). The worker also records each batch transaction, signed, before
it is broadcast (`on_signed`), so a restart finds it: `resume_batch` then learns what became of it (mined,
reverted, or never to be mined because its nonce went to another transaction) and re-broadcasts the very same
bytes when the chain forgot it — the same transaction again, which cannot pay twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from inferchain.wallet.chain import Chain
from inferchain.wallet.receipts import SignedReceipt
from inferchain.wallet.tx import SignedTx, TransactionFailed, broadcast, call_view, sign_call, wait_mined

DEFAULT_BATCH = 50
#: Errors after which a receipt can never be settled; anything else (e.g. a short deposit) may pass later.
PERMANENT = {"ReceiptExpired", "InvalidBuyerSignature", "InvalidNodeSignature", "SelfDealing", "InvalidSpan"}


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def receipt_key(signed: SignedReceipt) -> str:
    return _hex(signed.receipt.key)


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


def classify(
    chain: Chain, receipts: Sequence[SignedReceipt], explain: Callable[[BaseException], str] = str
) -> tuple[list[str], dict[str, tuple[str, bool]], list[SignedReceipt]]:
    """(keys already settled on-chain, refused key -> (reason, permanent), receipts the escrow would pay now)."""
    already: list[str] = []
    refused: dict[str, tuple[str, bool]] = {}
    pending: list[SignedReceipt] = []
    escrow = chain.contracts.escrow
    for signed in receipts:
        key = receipt_key(signed)
        if chain.is_settled(signed.receipt):
            already.append(key)
            continue
        call = escrow.functions.settle(signed.receipt.as_tuple(), signed.node_signature, signed.buyer_signature)
        try:
            call_view(call, what="settle")
        except TransactionFailed as exc:
            refused[key] = (explain(exc), exc.error in PERMANENT)
            continue
        pending.append(signed)
    return already, refused, pending


def batches(pending: Sequence[SignedReceipt], batch_size: int) -> list[list[SignedReceipt]]:
    """`pending` in batches of at most `batch_size`, grouped by node then buyer (what the escrow settles cheapest)."""
    ordered = sorted(pending, key=lambda s: (s.receipt.node, s.receipt.buyer))
    size = max(1, batch_size)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def tx_summary(batch_len: int, receipt: Any) -> dict[str, Any]:
    return {
        "what": f"settleBatch({batch_len})",
        "tx": _hex(receipt["transactionHash"]),
        "block": int(receipt["blockNumber"]),
        "gas": int(receipt["gasUsed"]),
    }


def settle_receipts(
    chain: Chain,
    sender: LocalAccount,
    receipts: Sequence[SignedReceipt],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_already: Callable[[list[str]], None] | None = None,
    on_refused: Callable[[str, str, bool], None] | None = None,
    on_signed: Callable[[list[str], SignedTx], None] | None = None,
    on_sent: Callable[[list[str], SignedTx], None] | None = None,
    on_batch: Callable[[list[str], str, int], None] | None = None,
    explain: Callable[[BaseException], str] = str,
) -> SettlementReport:
    """Settles `receipts` and reports what happened to each key.

    The callbacks run as soon as each fact is known, so the caller can record it durably right away:
    `on_already(keys)`, `on_refused(key, reason, permanent)`, `on_signed(keys, tx)` (the batch transaction,
    signed, before it is broadcast), `on_sent(keys, tx)` (broadcast), `on_batch(keys, tx_hash, block)` (mined).
    """
    report = SettlementReport()
    report.already, refused, pending = classify(chain, receipts, explain)
    for key, (why, permanent) in refused.items():
        report.refused[key] = (why, permanent)
        if on_refused:
            on_refused(key, why, permanent)
    if report.already and on_already:
        on_already(report.already)

    for batch in batches(pending, batch_size):
        keys = [receipt_key(s) for s in batch]
        label = f"settleBatch({len(batch)})"
        try:
            tx = sign_call(chain.w3, sender, chain.settle_batch_call(batch), what=label)
            if on_signed:
                on_signed(keys, tx)
            broadcast(chain.w3, tx)
            if on_sent:
                on_sent(keys, tx)
            receipt = wait_mined(chain.w3, tx.hash, label)
        except TransactionFailed as exc:  # e.g. deposits short in aggregate: the next run retries
            for key in keys:
                report.refused[key] = (explain(exc), False)
                if on_refused:
                    on_refused(key, explain(exc), False)
            continue
        summary = tx_summary(len(batch), receipt)
        report.txs.append(summary)
        if on_batch:
            on_batch(keys, summary["tx"], summary["block"])
        for key in keys:
            report.settled[key] = (summary["tx"], summary["block"])
    return report


@dataclass(frozen=True)
class BatchOutcome:
    """What became of a recorded batch transaction: `mined` (with its receipt), `reverted`, `replaced` (its
    nonce went to another transaction, so it can never be mined) or `pending` (sent again, not mined yet)."""

    state: str
    receipt: Any = None


def resume_batch(chain: Chain, tx: SignedTx, wait_s: float = 30.0) -> BatchOutcome:
    """Finds out what became of a batch transaction recorded before a crash; re-broadcasts the same bytes if the
    chain does not know it and its nonce is still free."""
    w3 = chain.w3
    try:
        receipt = w3.eth.get_transaction_receipt(tx.hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        receipt = None
    if receipt is None:
        if w3.eth.get_transaction_count(Web3.to_checksum_address(tx.sender), "latest") > tx.nonce:
            return BatchOutcome("replaced")
        broadcast(w3, tx)
        try:
            receipt = w3.eth.wait_for_transaction_receipt(tx.hash, timeout=wait_s)  # type: ignore[arg-type]
        except Exception:  # web3's TimeExhausted: still in the mempool
            return BatchOutcome("pending")
    return BatchOutcome("mined" if receipt["status"] == 1 else "reverted", receipt)


@dataclass(frozen=True)
class Settled:
    """One `ReceiptSettled` event: where a receipt was paid, and the amount and fee the escrow moved."""

    key: str
    tx: str
    block: int
    amount: int
    fee: int


def _settled(event: Any) -> Settled:
    args = event["args"]
    return Settled(_hex(args["key"]), _hex(event["transactionHash"]), int(event["blockNumber"]), int(args["amount"]),
                   int(args["fee"]))  # fmt: skip


def settled_in(chain: Chain, tx_receipt: Any) -> dict[str, Settled]:
    """The receipts a mined settlement transaction paid, by key."""
    events = chain.contracts.escrow.events.ReceiptSettled().process_receipt(tx_receipt, errors=DISCARD)
    return {s.key: s for s in map(_settled, events)}


def find_settled(chain: Chain, keys: Sequence[str]) -> dict[str, Settled]:
    """Where receipts the escrow reports settled were paid (by whoever sent it: a node may settle its own)."""
    event = chain.contracts.escrow.events.ReceiptSettled
    found: dict[str, Settled] = {}
    for key in keys:
        for log in event.get_logs(argument_filters={"key": key}, from_block=chain.deployment.block):
            found[key] = _settled(log)
    return found
