"""The persisted offer book on SQLite and on a real PostgreSQL server this test starts (scripts/postgres.sh)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from inferchain.marketplace.book import OfferBook, list_offers
from inferchain.marketplace.db import SchemaVersionError, init_db, make_engine
from inferchain.marketplace.planner import Offer, UncoveredLayersError
from inferchain.marketplace.verify import Verified

REPO = Path(__file__).resolve().parents[1]
MODEL = "sha256:" + "ab" * 32


def verified(node: str, start: int, end: int, price: int = 5, expires_at: float | None = None) -> Verified:
    offer = Offer(
        node_id=node, model_id=MODEL, start=start, end=end, price_per_1k=price, ms_per_layer=1.0, rtt_ms=2.0,
        free_slots=3, max_slots=4, expires_at=expires_at or time.time() + 600,
    )  # fmt: skip
    signed = {"node": "0x" + "11" * 20, "span": [start, end]} if price else None
    return Verified(offer, (f"/ip4/127.0.0.1/tcp/1/p2p/{node}",), "0x" + "11" * 20 if price else None, signed)


def test_book_round_trip_expiry_and_restart(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        book = OfferBook(init_db(engine), {MODEL: 30})
        book.upsert(verified("A", 0, 10))
        book.upsert(verified("B", 10, 30, price=2**61 // 1024))  # the largest prices survive the column type
        book.upsert(verified("C", 0, 30, price=0, expires_at=time.time() + 0.5))
        book.upsert(verified("A", 0, 12, price=7))  # replaces A's offer
        with book.sessions() as s:
            rows = list_offers(s, MODEL, time.time())
        assert sorted((r.node_id, r.start, r.end, int(r.price_per_1k)) for r in rows) == [
            ("A", 0, 12, 7), ("B", 10, 30, 2**61 // 1024), ("C", 0, 30, 0),
        ]  # fmt: skip
        b = next(r for r in rows if r.node_id == "B")
        assert b.addrs == ["/ip4/127.0.0.1/tcp/1/p2p/B"] and b.signed_offer == {
            "node": "0x" + "11" * 20,
            "span": [10, 30],
        }
        assert next(r for r in rows if r.node_id == "C").wallet is None
        assert book.planner.coverage(MODEL) == [2] * 10 + [3, 3] + [2] * 18

        assert book.expire(time.time() + 1) == 1  # C's short expiry
        assert book.planner.coverage(MODEL)[0] == 1
        route = book.planner.plan(MODEL)
        assert [(h.node_id, h.start, h.end) for h in route.hops] == [("A", 0, 12), ("B", 12, 30)]

        # a restart reads the book back into a fresh planner
        again = OfferBook(init_db(engine), {MODEL: 30})
        assert again.planner.coverage(MODEL) == book.planner.coverage(MODEL)
        assert again.remove("B") == 1
        with pytest.raises(UncoveredLayersError):
            again.planner.plan(MODEL)
        with again.sessions() as s:
            assert [r.node_id for r in list_offers(s, None, time.time())] == ["A"]
        assert again.models == {MODEL: 30}
    finally:
        engine.dispose()


def test_schema_version_is_checked(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        init_db(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE schema_version SET version = 99"))
        with pytest.raises(SchemaVersionError, match="99"):
            init_db(engine)
    finally:
        engine.dispose()
