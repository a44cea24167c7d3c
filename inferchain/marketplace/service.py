"""The market's HTTP API (FastAPI): health, the offer book, per-model coverage and route quotes.

Routers per resource; pydantic models are the contract; the database session and the planner come in by
dependency injection. OpenAPI at /openapi.json, docs at /docs. The p2p listener (if any) runs beside the app on
its own trio thread and feeds the same `OfferBook`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from inferchain.marketplace.book import OfferBook, list_offers
from inferchain.marketplace.planner import (
    CapsConflictError,
    LatencyCapError,
    NoRouteError,
    PriceCapError,
    RoutePlanner,
    UncoveredLayersError,
    UnknownModelError,
)
from inferchain.marketplace.verify import OfferVerifier


@dataclass
class MarketState:
    book: OfferBook
    verifier: OfferVerifier | None = None
    listener: Any = None  # inferchain.marketplace.listener.OfferListener, when subscribed to the network
    started_at: float = field(default_factory=time.time)
    chain: Any = None  # inferchain.wallet.chain.Chain; by default the one the verifier checks stakes on

    def __post_init__(self) -> None:
        if self.chain is None and self.verifier is not None and self.verifier.standings is not None:
            from inferchain.wallet.chain import Chain

            chain = self.verifier.standings.chain
            self.chain = chain if isinstance(chain, Chain) else None


# ----- schemas --------------------------------------------------------------------------------------------
class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    uptime_s: float
    models: int
    live_offers: int
    accepted: int = Field(description="offers verified and taken into the book since start")
    rejected: dict[str, int] = Field(description="offers dropped since start, by reason")
    peer_id: str | None = Field(None, description="the market's libp2p peer id, when listening")
    peers: int = Field(0, description="connected libp2p peers")


class OfferOut(BaseModel):
    node_id: str = Field(description="libp2p peer id of the node")
    model_id: str
    start: int = Field(description="first layer served")
    end: int = Field(description="layer after the last one served (exclusive)")
    wallet: str | None = Field(description="the node's wallet (None: free swarm, unsigned)")
    price_per_1k: int = Field(description="token wei per 1000 tokens per layer")
    ms_per_layer: float
    free_slots: int
    max_slots: int
    expires_at: float
    addrs: list[str]
    signed_offer: dict[str, Any] | None


class OffersOut(BaseModel):
    offers: list[OfferOut]


class CoverageOut(BaseModel):
    model_id: str
    num_layers: int
    layers: list[int] = Field(description="for each layer, how many routable nodes (with free slots) serve it")
    uncovered: list[list[int]] = Field(description="[start, end) ranges no routable node serves")
    fully_covered: bool


class QuoteRequest(BaseModel):
    model: str = Field(description="model id (sha256:<64 hex>)")
    max_price_per_1k: int | None = Field(None, ge=0, description="cap on the route's price, wei per 1k tokens")
    max_latency_ms: float | None = Field(None, ge=0, description="cap on the estimated latency per token")
    objective: Literal["latency", "price"] = "latency"


class HopOut(BaseModel):
    node_id: str
    start: int
    end: int
    price_per_1k: int
    latency_ms: float
    addrs: list[str]


class QuoteOut(BaseModel):
    model_id: str
    hops: list[HopOut]
    price_per_1k: int = Field(description="whole route, token wei per 1000 tokens")
    est_latency_ms: float = Field(description="estimated per-token latency: per hop RTT + compute")


class NoRouteOut(BaseModel):
    error: Literal["no_route"] = "no_route"
    kind: str = Field(description="uncovered_layers | price_cap | latency_cap | caps_conflict | no_route")
    reason: str
    gaps: list[list[int]] | None = None


# ----- dependencies -----------------------------------------------------------------------------------------
def get_state(request: Request) -> MarketState:
    state: MarketState = request.app.state.market
    return state


StateDep = Annotated[MarketState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.book.sessions() as session:
        yield session


def get_planner(state: StateDep) -> RoutePlanner:
    """The shared planner; handlers hold `state.book.lock` while they use it (the listener writes to it)."""
    return state.book.planner


SessionDep = Annotated[Session, Depends(get_session)]
PlannerDep = Annotated[RoutePlanner, Depends(get_planner)]


def _known_model(state: MarketState, model_id: str) -> int:
    layers = state.book.known.get(model_id)
    if layers is None:
        raise HTTPException(404, f"model {model_id!r} is not known to this market")
    return layers


# ----- routers ----------------------------------------------------------------------------------------------
health = APIRouter(tags=["health"])
offers = APIRouter(prefix="/v1/offers", tags=["offers"])
models = APIRouter(prefix="/v1/models", tags=["models"])
quotes = APIRouter(prefix="/v1/quotes", tags=["quotes"])


@health.get("/health", response_model=HealthOut)
def get_health(state: StateDep, planner: PlannerDep) -> HealthOut:
    now = time.time()
    with state.book.lock:
        live = sum(1 for mid in state.book.known for o in planner.offers(mid) if o.expires_at > now)
    listener = state.listener
    return HealthOut(
        uptime_s=now - state.started_at,
        models=len(state.book.known),
        live_offers=live,
        accepted=state.verifier.accepted if state.verifier else 0,
        rejected=dict(state.verifier.rejected) if state.verifier else {},
        peer_id=listener.peer_id if listener is not None else None,
        peers=listener.peer_count() if listener is not None else 0,
    )


@offers.get("", response_model=OffersOut)
def get_offers(
    state: StateDep,
    session: SessionDep,
    model: Annotated[str | None, Query(description="only this model's offers")] = None,
) -> OffersOut:
    """The live (unexpired, verified) offers in the persisted book, cheapest first."""
    if model is not None:
        _known_model(state, model)
    rows = list_offers(session, model, time.time())
    return OffersOut(
        offers=[
            OfferOut(
                node_id=r.node_id,
                model_id=r.model_id,
                start=r.start,
                end=r.end,
                wallet=r.wallet,
                price_per_1k=int(r.price_per_1k),
                ms_per_layer=r.ms_per_layer,
                free_slots=r.free_slots,
                max_slots=r.max_slots,
                expires_at=r.expires_at,
                addrs=list(r.addrs),
                signed_offer=r.signed_offer,
            )  # fmt: skip
            for r in rows
        ]
    )


@models.get("/{model_id}/coverage", response_model=CoverageOut)
def get_coverage(model_id: str, state: StateDep, planner: PlannerDep) -> CoverageOut:
    layers = _known_model(state, model_id)
    with state.book.lock:
        planner.expire(time.time())
        counts = planner.coverage(model_id)
    gaps: list[list[int]] = []
    for i, c in enumerate(counts):
        if c == 0:
            if gaps and gaps[-1][1] == i:
                gaps[-1][1] = i + 1
            else:
                gaps.append([i, i + 1])
    return CoverageOut(model_id=model_id, num_layers=layers, layers=counts, uncovered=gaps, fully_covered=not gaps)


@quotes.post("", response_model=QuoteOut, responses={503: {"model": NoRouteOut}, 404: {}})
def post_quote(body: QuoteRequest, state: StateDep, planner: PlannerDep, session: SessionDep) -> Any:
    """The best route for a request under the buyer's caps, or a 503 body with the planner's reason."""
    _known_model(state, body.model)
    try:
        with state.book.lock:
            route = planner.plan(body.model, body.max_price_per_1k, body.max_latency_ms, body.objective)
    except UnknownModelError as e:
        raise HTTPException(404, e.reason) from None
    except NoRouteError as e:
        return JSONResponse(status_code=503, content=_no_route(e).model_dump())
    addrs = {r.node_id: list(r.addrs) for r in list_offers(session, body.model, 0.0)}
    return QuoteOut(
        model_id=route.model_id,
        hops=[
            HopOut(
                node_id=h.node_id,
                start=h.start,
                end=h.end,
                price_per_1k=p,
                latency_ms=lat,
                addrs=addrs.get(h.node_id, []),
            )  # fmt: skip
            for h, p, lat in zip(route.hops, route.hop_price_per_1k, route.hop_latency_ms, strict=True)
        ],
        price_per_1k=route.price_per_1k,
        est_latency_ms=route.est_latency_ms,
    )


def _no_route(e: NoRouteError) -> NoRouteOut:
    if isinstance(e, UncoveredLayersError):
        return NoRouteOut(kind="uncovered_layers", reason=e.reason, gaps=[[a, b] for a, b in e.gaps])
    if isinstance(e, PriceCapError):
        return NoRouteOut(kind="price_cap", reason=e.reason)
    if isinstance(e, LatencyCapError):
        return NoRouteOut(kind="latency_cap", reason=e.reason)
    if isinstance(e, CapsConflictError):
        return NoRouteOut(kind="caps_conflict", reason=e.reason)
    return NoRouteOut(kind="no_route", reason=e.reason)


def create_app(state: MarketState, gateway: Any = None) -> FastAPI:
    """The market's app; with `gateway` (an `inferchain.marketplace.gateway.state.Gateway`) it also serves the
    OpenAI-compatible API and the reseller admin API (docs/gateway.md). The web UI (docs/webui.md) is always served
    at /app; its chat page needs the gateway's models."""
    app = FastAPI(
        title="inferchain market",
        version="1",
        description="The offer book of an inferchain network, per-model layer coverage, and route quotes.",
    )
    app.state.market = state
    for router in (health, offers, models, quotes):
        app.include_router(router)
    if gateway is not None:
        from inferchain.marketplace.gateway.mount import install

        install(app, gateway)
    from inferchain.marketplace.webui.mount import install as install_webui

    install_webui(app, state, gateway)
    return app
