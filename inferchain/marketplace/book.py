"""The persisted offer book: verified offers in the database, mirrored into the in-memory RoutePlanner.

The planner answers quotes; the database keeps the book across restarts and serves listings. Writes go to
both under one lock, so a quote never sees an offer the book lost (or the other way round).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from inferchain.marketplace.db import ModelRow, OfferRow
from inferchain.marketplace.planner import Offer, RoutePlanner
from inferchain.marketplace.verify import Verified


def row_to_offer(row: OfferRow) -> Offer:
    return Offer(
        node_id=row.node_id,
        model_id=row.model_id,
        start=row.start,
        end=row.end,
        price_per_1k=int(row.price_per_1k),
        ms_per_layer=row.ms_per_layer,
        rtt_ms=row.rtt_ms,
        free_slots=row.free_slots,
        max_slots=row.max_slots,
        expires_at=row.expires_at,
    )


class OfferBook:
    """Database + planner, kept in step. Thread-safe: the p2p listener writes, HTTP handlers read."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        models: Mapping[str, int],
        planner: RoutePlanner | None = None,
        clock: Callable[[], float] = time.time,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.planner = planner or RoutePlanner()
        self.lock = threading.RLock()
        self._clock = clock
        self.known = dict(models)
        with self.sessions.begin() as s:
            for model_id, layers in models.items():
                self.planner.add_model(model_id, layers)
                s.merge(ModelRow(model_id=model_id, num_layers=layers, name=(names or {}).get(model_id, "")))
        self.restore()

    @property
    def models(self) -> dict[str, int]:
        with self.sessions() as s:
            return {r.model_id: r.num_layers for r in s.scalars(select(ModelRow))}

    def restore(self) -> int:
        """Load every unexpired stored offer of a known model into the planner (after a restart)."""
        now = self._clock()
        restored = 0
        with self.lock, self.sessions() as s:
            for row in s.scalars(select(OfferRow).where(OfferRow.expires_at > now)):
                if row.model_id in self.known:
                    self.planner.upsert(row_to_offer(row))
                    restored += 1
        return restored

    def upsert(self, verified: Verified) -> None:
        o = verified.offer
        with self.lock:
            with self.sessions.begin() as s:
                s.merge(
                    OfferRow(
                        node_id=o.node_id,
                        model_id=o.model_id,
                        wallet=verified.wallet,
                        start=o.start,
                        end=o.end,
                        price_per_1k=o.price_per_1k,
                        ms_per_layer=o.ms_per_layer,
                        rtt_ms=o.rtt_ms,
                        free_slots=o.free_slots,
                        max_slots=o.max_slots,
                        expires_at=o.expires_at,
                        addrs=list(verified.addrs),
                        signed_offer=verified.signed_offer,
                        updated_at=self._clock(),
                    )  # fmt: skip
                )
            self.planner.upsert(o)

    def remove(self, node_id: str, model_id: str | None = None) -> int:
        with self.lock:
            with self.sessions.begin() as s:
                q = delete(OfferRow).where(OfferRow.node_id == node_id)
                if model_id is not None:
                    q = q.where(OfferRow.model_id == model_id)
                s.execute(q)
            return self.planner.remove(node_id, model_id)

    def expire(self, now: float | None = None) -> int:
        """Drop offers whose expiry has passed from both; returns how many rows were deleted."""
        now = self._clock() if now is None else now
        with self.lock:
            with self.sessions.begin() as s:
                result = s.execute(delete(OfferRow).where(OfferRow.expires_at <= now))
                deleted = getattr(result, "rowcount", 0) or 0
            self.planner.expire(now)
        return int(deleted)


def list_offers(session: Session, model_id: str | None, now: float) -> list[OfferRow]:
    """The live offers of one model (or all), cheapest first: a read for the HTTP listing."""
    q = select(OfferRow).where(OfferRow.expires_at > now)
    if model_id is not None:
        q = q.where(OfferRow.model_id == model_id)
    return list(session.scalars(q.order_by(OfferRow.model_id, OfferRow.price_per_1k, OfferRow.start)))
