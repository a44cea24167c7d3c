"""Quotas and metering: a request reserves its worst case (prompt + max_tokens, at the quoted price) before any
work starts, and settles to what it really used afterwards. Reservations count against the quotas while they
are open, so a burst of concurrent requests cannot together pass a limit that each alone would fit.

Reserving is serialised: by a lock in this process and, on PostgreSQL, by `SELECT ... FOR UPDATE` on the key's
row and on its reseller's row (several gateway processes on one database). Windows: tokens per UTC day, spend per
UTC calendar month, requests per rolling minute.

Paid mode (`escrow` set): the reseller's escrow balance on-chain, less what it already owes here (open
reservations, and receipts not settled on-chain yet), must cover the request's worst case, else
InsufficientBalance. A settled paid request costs exactly the sum of its node receipts, which are stored beside
its usage row for the settlement worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.gateway.db import ApiKeyRow, ReceiptRow, ResellerRow, UsageRow
from inferchain.wallet.receipts import SignedReceipt

UNSETTLED = ("pending", "submitted")  # receipt states the reseller still owes


class QuotaExceeded(Exception):
    """The request would pass one of the key's limits; `kind` is tokens_per_day | spend_per_month | rate."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after_s = kind, message, retry_after_s


class InsufficientBalance(Exception):
    """The reseller's escrow, less what it owes here, cannot pay the request's worst case."""

    def __init__(self, available: int, needed: int) -> None:
        super().__init__(f"the reseller's escrow can pay {max(0, available)} wei more; this request may cost {needed}")
        self.available, self.needed = available, needed


@dataclass(frozen=True)
class Reservation:
    id: str
    key_id: str
    tokens: int
    spend: int


def _day_start(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def _month_start(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


# a reserved row counts its reservation, a settled one what it used, a failed one nothing
_TOKENS = case(
    (UsageRow.status == "reserved", UsageRow.reserved_tokens),
    (UsageRow.status == "settled", UsageRow.prompt_tokens + UsageRow.completion_tokens),
    else_=0,
)
_SPEND = case(
    (UsageRow.status == "reserved", UsageRow.reserved_spend),
    (UsageRow.status == "settled", UsageRow.spend),
    else_=0,
)


def owed(s: Session, reseller: str) -> int:
    """Token wei the reseller owes here and the escrow has not paid yet: open reservations and unsettled
    receipts."""
    reserved = s.scalar(select(func.coalesce(func.sum(UsageRow.reserved_spend), 0)).where(
        UsageRow.reseller == reseller, UsageRow.status == "reserved"
    ))  # fmt: skip
    amounts = s.scalars(select(ReceiptRow.amount).where(ReceiptRow.reseller == reseller,
                                                        ReceiptRow.state.in_(UNSETTLED)))  # fmt: skip
    return int(reserved or 0) + sum(int(a) for a in amounts)


def receipt_rows(usage_id: str, receipts: Sequence[SignedReceipt], now: float) -> list[ReceiptRow]:
    rows = []
    for signed in receipts:
        r = signed.receipt
        data = r.to_json()
        data["price_per_1k"] = str(data["price_per_1k"])
        rows.append(ReceiptRow(
            key="0x" + r.key.hex(), usage_id=usage_id, reseller=r.buyer, node=r.node, receipt=data,
            node_signature="0x" + signed.node_signature.hex(), buyer_signature="0x" + signed.buyer_signature.hex(),
            amount=str(r.amount_owed), expiry=r.expiry, state="pending", attempts=0, next_attempt_at=0.0,
            created_at=now, updated_at=now,
        ))  # fmt: skip
    return rows


class Meter:
    def __init__(self, sessions: sessionmaker[Session], escrow: Callable[[str], int] | None = None) -> None:
        """`escrow(reseller)`: its escrow balance on-chain (paid mode); None: balances are not checked."""
        self.sessions = sessions
        self.escrow = escrow
        self._lock = threading.Lock()

    def reserve(self, request_id: str, key_id: str, model_id: str, tokens: int, spend: int) -> Reservation:
        """Record a reservation, or raise QuotaExceeded (nothing recorded)."""
        now = time.time()
        with self._lock, self.sessions.begin() as s:
            key = s.scalar(select(ApiKeyRow).where(ApiKeyRow.id == key_id).with_for_update())
            if key is None:
                raise QuotaExceeded("revoked", "the key no longer exists")
            if key.requests_per_minute is not None:
                recent = s.scalars(
                    select(UsageRow.created_at)
                    .where(UsageRow.key_id == key_id, UsageRow.created_at > now - 60)
                    .order_by(UsageRow.created_at)
                ).all()
                if len(recent) >= key.requests_per_minute:
                    retry = max(1.0, recent[len(recent) - key.requests_per_minute] + 60 - now)
                    raise QuotaExceeded(
                        "rate", f"rate limit of {key.requests_per_minute} requests per minute reached", retry
                    )
            if key.tokens_per_day is not None:
                used = self._sum(s, _TOKENS, key_id, _day_start(now))
                if used + tokens > key.tokens_per_day:
                    raise QuotaExceeded(
                        "tokens_per_day",
                        f"this request may use up to {tokens} tokens; {max(0, key.tokens_per_day - used)} of the "
                        f"key's {key.tokens_per_day} tokens per day are left",
                    )
            if key.spend_per_month is not None:
                spent = self._sum(s, _SPEND, key_id, _month_start(now))
                if spent + spend > key.spend_per_month:
                    raise QuotaExceeded(
                        "spend_per_month",
                        f"this request may cost up to {spend} wei; {max(0, key.spend_per_month - spent)} of the "
                        f"key's {key.spend_per_month} wei per month are left",
                    )
            if self.escrow is not None:
                s.scalar(select(ResellerRow).where(ResellerRow.address == key.reseller).with_for_update())
                available = self.escrow(key.reseller) - owed(s, key.reseller)
                if available < spend:
                    raise InsufficientBalance(available, spend)
            s.add(
                UsageRow(
                    id=request_id,
                    key_id=key_id,
                    reseller=key.reseller,
                    model_id=model_id,
                    status="reserved",
                    created_at=now,
                    reserved_tokens=tokens,
                    reserved_spend=spend,
                    route=[],
                    receipts=[],
                )  # fmt: skip
            )
        return Reservation(request_id, key_id, tokens, spend)

    @staticmethod
    def _sum(s: Session, column: Any, key_id: str, since: float) -> int:
        total = s.scalar(select(func.coalesce(func.sum(column), 0)).where(
            UsageRow.key_id == key_id, UsageRow.created_at >= since
        ))  # fmt: skip
        return int(total or 0)

    def settle(
        self,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        spend: int,
        price_per_1k: int,
        route: list[Any],
        receipts: Sequence[SignedReceipt] = (),
        error: str | None = None,
    ) -> None:
        """Replace the reservation by what the request used (also for a request that failed part-way: the
        tokens the nodes served are still owed). Paid requests' node receipts are stored in the same
        transaction (state `pending`, for the settlement worker)."""
        now = time.time()
        with self.sessions.begin() as s:
            row = s.get(UsageRow, reservation.id)
            if row is None or row.status != "reserved":
                return
            row.status = "settled"
            row.settled_at = now
            row.prompt_tokens, row.completion_tokens = prompt_tokens, completion_tokens
            row.spend, row.price_per_1k = spend, price_per_1k
            row.route, row.error = route, error
            row.receipts = ["0x" + r.receipt.key.hex() for r in receipts]
            s.add_all(receipt_rows(row.id, receipts, now))

    def release(self, reservation: Reservation, error: str) -> None:
        """The request did no work (no route, bad input found late): the reservation counts for nothing."""
        with self.sessions.begin() as s:
            row = s.get(UsageRow, reservation.id)
            if row is not None and row.status == "reserved":
                row.status, row.settled_at, row.error = "failed", time.time(), error[:500]

    def usage(
        self, reseller: str, key_id: str | None = None, since: float = 0.0
    ) -> tuple[list[UsageRow], dict[str, list[ReceiptRow]]]:
        """The reseller's usage rows (oldest first) and, by usage id, their node receipts."""
        with self.sessions() as s:
            q = select(UsageRow).where(UsageRow.reseller == reseller, UsageRow.created_at >= since)
            if key_id is not None:
                q = q.where(UsageRow.key_id == key_id)
            rows = list(s.scalars(q.order_by(UsageRow.created_at)))
            receipts: dict[str, list[ReceiptRow]] = {}
            paid = [r.id for r in rows if r.receipts]
            for i in range(0, len(paid), 500):
                for rc in s.scalars(select(ReceiptRow).where(ReceiptRow.usage_id.in_(paid[i : i + 500]))):
                    receipts.setdefault(rc.usage_id, []).append(rc)
            return rows, receipts
