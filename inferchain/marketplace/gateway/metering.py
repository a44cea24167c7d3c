"""Quotas and metering: a request reserves its worst case (prompt + max_tokens, at the quoted price) before any
work starts, and settles to what it really used afterwards. Reservations count against the quotas while they
are open, so a burst of concurrent requests cannot together pass a limit that each alone would fit.

Reserving is serialised: by a lock in this process and, on PostgreSQL, by `SELECT ... FOR UPDATE` on the key's
row (several gateway processes on one database). Windows: tokens per UTC day, spend per UTC calendar month,
requests per rolling minute.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.gateway.db import ApiKeyRow, UsageRow


class QuotaExceeded(Exception):
    """The request would pass one of the key's limits; `kind` is tokens_per_day | spend_per_month | rate."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after_s = kind, message, retry_after_s


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


class Meter:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
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
        receipts: list[Any],
        error: str | None = None,
    ) -> None:
        """Replace the reservation by what the request used (also for a request that failed part-way: the
        tokens the nodes served are still owed)."""
        with self.sessions.begin() as s:
            row = s.get(UsageRow, reservation.id)
            if row is None or row.status != "reserved":
                return
            row.status = "settled"
            row.settled_at = time.time()
            row.prompt_tokens, row.completion_tokens = prompt_tokens, completion_tokens
            row.spend, row.price_per_1k = spend, price_per_1k
            row.route, row.receipts, row.error = route, receipts, error

    def release(self, reservation: Reservation, error: str) -> None:
        """The request did no work (no route, bad input found late): the reservation counts for nothing."""
        with self.sessions.begin() as s:
            row = s.get(UsageRow, reservation.id)
            if row is not None and row.status == "reserved":
                row.status, row.settled_at, row.error = "failed", time.time(), error[:500]

    def usage(self, reseller: str, key_id: str | None = None, since: float = 0.0) -> list[UsageRow]:
        with self.sessions() as s:
            q = select(UsageRow).where(UsageRow.reseller == reseller, UsageRow.created_at >= since)
            if key_id is not None:
                q = q.where(UsageRow.key_id == key_id)
            return list(s.scalars(q.order_by(UsageRow.created_at)))
