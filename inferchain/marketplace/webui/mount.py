"""Mount the web UI on the market's app: the JSON routes under /app/api and the built pages under /app."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from inferchain.marketplace.webui import api
from inferchain.marketplace.webui.authorization import Authorizations
from inferchain.marketplace.webui.chain_view import ChainView
from inferchain.marketplace.webui.db import init_webui_db

if TYPE_CHECKING:
    from inferchain.marketplace.service import MarketState

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI, state: MarketState, gateway: Any = None) -> None:
    """`gateway` (an `inferchain.marketplace.gateway.state.Gateway`) provides the models the chat page runs."""
    engine = state.book.sessions.kw["bind"]
    chain = state.chain
    app.state.webui = api.WebUI(
        market=state,
        store=init_webui_db(engine),
        gateway=gateway,
        view=ChainView(chain) if chain is not None else None,
        authorizations=Authorizations(chain.deployment.chain_id) if chain is not None else None,
    )
    app.include_router(api.router)
    if (STATIC_DIR / "index.html").exists():
        app.mount("/app", StaticFiles(directory=STATIC_DIR, html=True), name="webui")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/app/")
