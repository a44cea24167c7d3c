"""The gateway's settlement worker: pays the nodes' receipts of paid gateway requests from the resellers' escrow.

Each pass (`SettlementWorker.run_once`):

1. Resume. A batch transaction is stored, signed, before it is broadcast (`gateway_settlement_batches`, state
   `signed`); its receipts are `submitted`. A pass first learns what became of every such batch: mined (its
   receipts are `settled` with the amounts and fees read from the escrow's events), reverted or replaced (its
   nonce went to another transaction, so it can never be mined: the receipts go back to `pending`), or still
   unknown to the chain (the same signed bytes are broadcast again: the same transaction, which cannot pay
   twice). Nothing new is sent while a batch is unresolved.
2. Settle. Due `pending` receipts go through the shared core (`inferchain.wallet.settlement`): ones the escrow
   already settled (e.g. by the node itself) are recorded with the transaction that paid them, refusals are
   `flagged` when permanent (expired, bad signature) and retried with exponential backoff otherwise (a short
   deposit, an RPC error) until `max_attempts`, the rest are sent in `settleBatch` transactions.

Every receipt so ends `settled` (with its transaction) or `flagged` (with the reason). Run one worker per
database: `inferchain market start` runs it in a thread when paid, `inferchain market settle` on its own.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.gateway.db import BatchRow, ReceiptRow
from inferchain.wallet.buyer import receipt_from_wire
from inferchain.wallet.chain import Chain
from inferchain.wallet.receipts import SignedReceipt
from inferchain.wallet.settlement import (
    DEFAULT_BATCH,
    Settled,
    find_settled,
    resume_batch,
    settle_receipts,
    settled_in,
)
from inferchain.wallet.tx import SignedTx

log = logging.getLogger(__name__)

CRASH_AFTER_SEND_ENV = "INFERCHAIN_TEST_CRASH_AFTER_SETTLE_SEND"  # tests: SIGKILL right after a batch is broadcast


@dataclass
class PassReport:
    """What one pass did (keys of receipts)."""

    resumed: dict[str, str] = field(default_factory=dict)  # batch tx -> mined | reverted | replaced | pending
    settled: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # paid on-chain by someone else (or before a crash)
    retry: dict[str, str] = field(default_factory=dict)  # key -> reason (back to pending, later)
    flagged: dict[str, str] = field(default_factory=dict)  # key -> reason
    txs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"resumed": self.resumed, "settled": sorted(self.settled), "already_settled": sorted(self.already),
                "retry": self.retry, "flagged": self.flagged, "txs": self.txs}  # fmt: skip


def _signed(row: ReceiptRow) -> SignedReceipt:
    receipt = receipt_from_wire(row.receipt)
    return SignedReceipt(receipt, bytes.fromhex(row.node_signature[2:]), bytes.fromhex(row.buyer_signature[2:]))


class SettlementWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        chain: Chain,
        sender: LocalAccount,
        *,
        batch_size: int = DEFAULT_BATCH,
        max_attempts: int = 8,
        backoff_s: float = 5.0,
        max_backoff_s: float = 600.0,
        explain: Callable[[BaseException], str] = str,
    ) -> None:
        """`sender` signs and pays gas for the batch transactions (anyone may submit a receipt)."""
        self.sessions, self.chain, self.sender = sessions, chain, sender
        self.batch_size, self.max_attempts = batch_size, max_attempts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.explain = explain

    # -- one pass ------------------------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> PassReport:
        report = PassReport()
        if not self._resume(report):
            return report  # a batch is still in flight: send nothing until it resolves
        due = self._due(time.time() if now is None else now)
        if not due:
            return report
        crash = bool(os.environ.get(CRASH_AFTER_SEND_ENV))

        def on_sent(_keys: list[str], _tx: SignedTx) -> None:
            if crash:
                os.kill(os.getpid(), signal.SIGKILL)

        result = settle_receipts(
            self.chain,
            self.sender,
            [_signed(r) for r in due],
            batch_size=self.batch_size,
            on_already=lambda keys: self._record_already(keys, report),
            on_refused=lambda key, why, permanent: self._refused([key], why, permanent, report),
            on_signed=self._record_signed,
            on_sent=on_sent,
            on_batch=lambda keys, tx, block: self._record_mined(tx, keys, report),
            explain=self.explain,
        )
        report.txs += [t["tx"] for t in result.txs]
        return report

    def _due(self, now: float) -> list[ReceiptRow]:
        with self.sessions() as s:
            q = (
                select(ReceiptRow)
                .where(ReceiptRow.state == "pending", ReceiptRow.next_attempt_at <= now)
                .order_by(ReceiptRow.created_at)
                .limit(self.batch_size * 10)
            )
            return list(s.scalars(q))

    # -- batches recorded before a crash -------------------------------------------------------------------

    def _resume(self, report: PassReport) -> bool:
        """Resolves every recorded batch; True when none is left in flight."""
        with self.sessions() as s:
            open_batches = list(s.scalars(select(BatchRow).where(BatchRow.state == "signed")))
        clear = True
        for batch in open_batches:
            tx = SignedTx(batch.tx_hash, bytes.fromhex(batch.raw_tx[2:]), batch.sender, batch.nonce)
            outcome = resume_batch(self.chain, tx)
            report.resumed[batch.tx_hash] = outcome.state
            if outcome.state == "mined":
                self._record_mined(batch.tx_hash, batch.keys, report, outcome.receipt)
            elif outcome.state in ("reverted", "replaced"):
                self._close_batch(batch.tx_hash, outcome.state, outcome.receipt)
                with self.sessions.begin() as s:
                    s.execute(
                        update(ReceiptRow)
                        .where(ReceiptRow.key.in_(batch.keys), ReceiptRow.state == "submitted")
                        .values(state="pending", batch_tx=None, updated_at=time.time())
                    )
                if outcome.state == "reverted":  # check each again on the next pass: the escrow says why
                    self._refused(batch.keys, f"batch {batch.tx_hash} reverted", False, report)
            else:
                clear = False
        return clear

    # -- recording (each fact committed as soon as it is known) --------------------------------------------

    def _record_signed(self, keys: list[str], tx: SignedTx) -> None:
        """The batch is signed but not sent: store it and mark its receipts submitted, in one transaction."""
        now = time.time()
        with self.sessions.begin() as s:
            s.add(BatchRow(tx_hash=tx.hash, raw_tx="0x" + tx.raw.hex(), sender=tx.sender, nonce=tx.nonce,
                           keys=keys, state="signed", created_at=now, updated_at=now))  # fmt: skip
            s.execute(
                update(ReceiptRow)
                .where(ReceiptRow.key.in_(keys), ReceiptRow.state == "pending")
                .values(state="submitted", batch_tx=tx.hash, updated_at=now)
            )

    def _close_batch(self, tx_hash: str, state: str, receipt: Any = None) -> None:
        with self.sessions.begin() as s:
            row = s.get(BatchRow, tx_hash)
            if row is not None:
                row.state, row.updated_at = state, time.time()
                if receipt is not None:
                    row.block, row.gas = int(receipt["blockNumber"]), int(receipt["gasUsed"])

    def _record_mined(self, tx_hash: str, keys: list[str], report: PassReport, receipt: Any = None) -> None:
        if receipt is None:
            receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        paid = settled_in(self.chain, receipt)
        self._mark_settled(paid.values())
        self._close_batch(tx_hash, "mined", receipt)
        report.settled += [k for k in keys if k in paid]
        missing = [k for k in keys if k not in paid]
        if missing:  # cannot happen with an escrow that emits per receipt; never lose track of one anyway
            self._refused(missing, f"batch {tx_hash} was mined without paying it", False, report)

    def _record_already(self, keys: list[str], report: PassReport) -> None:
        found = find_settled(self.chain, keys)
        self._mark_settled(found.values())
        report.already += list(found)
        lost = [k for k in keys if k not in found]
        if lost:
            self._refused(lost, "settled on-chain, but no ReceiptSettled event found", True, report)

    def _mark_settled(self, paid: Iterable[Settled]) -> None:
        now = time.time()
        with self.sessions.begin() as s:
            for p in paid:
                s.execute(
                    update(ReceiptRow)
                    .where(ReceiptRow.key == p.key)
                    .values(state="settled", settled_tx=p.tx, settled_block=p.block, amount=str(p.amount),
                            fee=str(p.fee), error=None, updated_at=now)
                )  # fmt: skip

    def _refused(self, keys: list[str], why: str, permanent: bool, report: PassReport) -> None:
        """A permanent refusal flags the receipts; a passing one backs off exponentially, then gives up."""
        now = time.time()
        with self.sessions.begin() as s:
            for row in s.scalars(select(ReceiptRow).where(ReceiptRow.key.in_(keys))):
                if row.state == "settled":
                    continue
                if row.batch_tx is not None:  # its batch was mined reverted: resolved, not to be resumed
                    s.execute(update(BatchRow).where(BatchRow.tx_hash == row.batch_tx, BatchRow.state == "signed")
                              .values(state="reverted", updated_at=now))  # fmt: skip
                    row.batch_tx = None
                row.attempts += 1
                row.updated_at = now
                if permanent or row.attempts >= self.max_attempts:
                    row.state = "flagged"
                    row.error = (why if permanent else f"gave up after {row.attempts} attempts: {why}")[:500]
                    report.flagged[row.key] = row.error
                else:
                    row.state = "pending"
                    row.error = why[:500]
                    row.next_attempt_at = now + min(self.backoff_s * 2 ** (row.attempts - 1), self.max_backoff_s)
                    report.retry[row.key] = why

    # -- running -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, every_s: float = 10.0) -> None:
        """Passes every `every_s` seconds until `stop` is set; a failed pass (chain unreachable) is logged and
        retried on the next."""
        while not stop.is_set():
            try:
                report = self.run_once()
                if report.settled or report.flagged or report.already:
                    log.info("settlement pass: %s", report.to_json())
            except Exception:
                log.exception("settlement pass failed; retrying in %.0f s", every_s)
            stop.wait(every_s)

    def start_thread(self, every_s: float = 10.0) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop, every_s), name="gateway-settlement", daemon=True)
        thread.start()
        return thread, stop

    def summary(self) -> dict[str, Any]:
        """Receipts by state, with their amounts (token wei, as text)."""
        with self.sessions() as s:
            rows = s.execute(select(ReceiptRow.state, ReceiptRow.amount)).all()
        count: dict[str, int] = {}
        value: dict[str, int] = {}
        for state, amount in rows:
            count[state] = count.get(state, 0) + 1
            value[state] = value.get(state, 0) + int(amount)
        return {"by_state": count, "value": {k: str(v) for k, v in value.items()}}
