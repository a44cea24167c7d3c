"""Mount the gateway on the market's FastAPI app."""

from __future__ import annotations

import time

from fastapi import FastAPI

from inferchain.marketplace.book import OfferBook, list_offers
from inferchain.marketplace.gateway import admin, openai_api
from inferchain.marketplace.gateway.errors import OpenAIError, openai_error_handler
from inferchain.marketplace.gateway.runner import PeerSource
from inferchain.marketplace.gateway.state import Gateway


def install(app: FastAPI, gateway: Gateway) -> None:
    """Add the OpenAI-compatible routes, the reseller admin routes and the OpenAI error handler. Call after the
    market's own routers so `/v1/models/{id}/coverage` keeps its route."""
    app.state.gateway = gateway
    app.add_exception_handler(OpenAIError, openai_error_handler)
    app.include_router(openai_api.router)
    app.include_router(admin.router)


def book_peers(book: OfferBook) -> PeerSource:
    """Nodes to route a model through: the addresses of its live offers in the market's book."""

    def peers(model_id: str) -> list[str]:
        with book.sessions() as s:
            return [a for row in list_offers(s, model_id, time.time()) for a in row.addrs[:1]]

    return peers
