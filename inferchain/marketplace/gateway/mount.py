"""Mount the gateway on the market's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from inferchain.marketplace.gateway import admin, openai_api
from inferchain.marketplace.gateway.errors import OpenAIError, openai_error_handler
from inferchain.marketplace.gateway.state import Gateway


def install(app: FastAPI, gateway: Gateway) -> None:
    """Add the OpenAI-compatible routes, the reseller admin routes and the OpenAI error handler. Call after the
    market's own routers so `/v1/models/{id}/coverage` keeps its route."""
    app.state.gateway = gateway
    app.add_exception_handler(OpenAIError, openai_error_handler)
    app.include_router(openai_api.router)
    app.include_router(admin.router)
