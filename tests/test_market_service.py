"""The market's HTTP API, served by uvicorn on 127.0.0.1 and driven over HTTP with httpx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferchain.marketplace.book import OfferBook
from inferchain.marketplace.db import init_db, make_engine
from inferchain.marketplace.planner import Offer
from inferchain.marketplace.service import MarketState, create_app
from inferchain.marketplace.verify import OfferVerifier, Verified
from tests.http_server import serve_app

MODEL = "sha256:" + "ab" * 32
SMALL = "sha256:" + "cd" * 32


def verified(node: str, model: str, start: int, end: int, price: int, ms: float = 1.0) -> Verified:
    offer = Offer(
        node_id=node, model_id=model, start=start, end=end, price_per_1k=price, ms_per_layer=ms, rtt_ms=5.0,
        free_slots=2, max_slots=4, expires_at=time.time() + 600,
    )  # fmt: skip
    return Verified(offer, (f"/ip4/127.0.0.1/tcp/9/p2p/{node}",), None, None)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OfferBook]]:
    path: Path = tmp_path_factory.mktemp("market") / "market.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    models = {MODEL: 30, SMALL: 4}
    book = OfferBook(init_db(engine), models)
    book.upsert(verified("fast", MODEL, 0, 30, price=10, ms=1.0))
    book.upsert(verified("cheapA", MODEL, 0, 15, price=1, ms=3.0))
    book.upsert(verified("cheapB", MODEL, 15, 30, price=1, ms=3.0))
    book.upsert(verified("half", SMALL, 0, 2, price=1))
    state = MarketState(book, OfferVerifier(models, allow_unsigned=True))
    server, thread, url = serve_app(create_app(state))
    try:
        yield url, book
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def test_health_and_openapi(market) -> None:
    url, _ = market
    with httpx.Client(base_url=url, timeout=10) as http:
        h = http.get("/health").json()
        assert h["status"] == "ok" and h["models"] == 2 and h["live_offers"] == 4
        spec = http.get("/openapi.json").json()
        assert {"/health", "/v1/offers", "/v1/models/{model_id}/coverage", "/v1/quotes"} <= set(spec["paths"])
        assert "QuoteRequest" in spec["components"]["schemas"]
        assert "swagger" in http.get("/docs").text.lower()


def test_offers_listing(market) -> None:
    url, _ = market
    with httpx.Client(base_url=url, timeout=10) as http:
        offers = http.get("/v1/offers", params={"model": MODEL}).json()["offers"]
        assert [(o["node_id"], o["start"], o["end"], o["price_per_1k"]) for o in offers] == [
            ("cheapA", 0, 15, 1), ("cheapB", 15, 30, 1), ("fast", 0, 30, 10),
        ]  # fmt: skip
        assert offers[0]["addrs"] == ["/ip4/127.0.0.1/tcp/9/p2p/cheapA"]
        assert len(http.get("/v1/offers").json()["offers"]) == 4
        assert http.get("/v1/offers", params={"model": "sha256:" + "00" * 32}).status_code == 404


def test_coverage(market) -> None:
    url, _ = market
    with httpx.Client(base_url=url, timeout=10) as http:
        c = http.get(f"/v1/models/{MODEL}/coverage").json()
        assert c["layers"] == [2] * 30 and c["fully_covered"] and c["uncovered"] == []
        c = http.get(f"/v1/models/{SMALL}/coverage").json()
        assert c["layers"] == [1, 1, 0, 0] and c["uncovered"] == [[2, 4]] and not c["fully_covered"]
        assert http.get("/v1/models/nope/coverage").status_code == 404


def test_quotes(market) -> None:
    url, _ = market
    with httpx.Client(base_url=url, timeout=10) as http:
        fast = http.post("/v1/quotes", json={"model": MODEL}).json()
        assert [(h["node_id"], h["start"], h["end"]) for h in fast["hops"]] == [("fast", 0, 30)]
        assert fast["price_per_1k"] == 300 and fast["est_latency_ms"] == pytest.approx(35.0)
        cheap = http.post("/v1/quotes", json={"model": MODEL, "objective": "price"}).json()
        assert [(h["node_id"], h["start"], h["end"]) for h in cheap["hops"]] == [("cheapA", 0, 15), ("cheapB", 15, 30)]
        assert cheap["price_per_1k"] == 30 and cheap["hops"][0]["addrs"] == ["/ip4/127.0.0.1/tcp/9/p2p/cheapA"]
        capped = http.post("/v1/quotes", json={"model": MODEL, "max_price_per_1k": 100}).json()
        # the fast route is over the cap: the fastest mix of fast and cheap spans within it
        assert 30 < capped["price_per_1k"] <= 100 and 35 < capped["est_latency_ms"] < cheap["est_latency_ms"]

        r = http.post("/v1/quotes", json={"model": MODEL, "max_price_per_1k": 29})
        assert r.status_code == 503 and r.json()["kind"] == "price_cap" and "29" in r.json()["reason"]
        r = http.post("/v1/quotes", json={"model": MODEL, "max_latency_ms": 10})
        assert r.status_code == 503 and r.json()["kind"] == "latency_cap"
        r = http.post("/v1/quotes", json={"model": SMALL})
        assert r.status_code == 503 and r.json() == {
            "error": "no_route", "kind": "uncovered_layers", "reason": r.json()["reason"], "gaps": [[2, 4]],
        }  # fmt: skip
        assert http.post("/v1/quotes", json={"model": "sha256:" + "00" * 32}).status_code == 404
        assert http.post("/v1/quotes", json={"model": MODEL, "objective": "vibes"}).status_code == 422
        assert http.post("/v1/quotes", json={"model": MODEL, "max_price_per_1k": -1}).status_code == 422
