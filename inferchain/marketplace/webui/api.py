"""The JSON routes the pages need that the market and the gateway do not already serve (prefix /app/api)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from inferchain.client.chain import RouteLimits
from inferchain.marketplace.book import list_offers
from inferchain.marketplace.webui.authorization import AuthorizationError, Authorizations, Grant
from inferchain.marketplace.webui.chain_view import ChainView
from inferchain.marketplace.webui.chat import ChatRegistry, ChatRequest, TooManyChats, start_chat
from inferchain.marketplace.webui.db import chats_of, receipts_of_node

if TYPE_CHECKING:
    from inferchain.marketplace.gateway.state import Gateway
    from inferchain.marketplace.service import MarketState

MAX_CHAT_TOKENS = 512
UNCAPPED_PRICE = 2**255  # what the wallet countersigns at most when the buyer sets no price cap


@dataclass
class WebUI:
    market: MarketState
    store: sessionmaker[Session]
    gateway: Gateway | None = None
    view: ChainView | None = None
    chats: ChatRegistry = field(default_factory=ChatRegistry)
    authorizations: Authorizations | None = None  # paid markets: the buyers' signed chat authorisations


def get_webui(request: Request) -> WebUI:
    ui: WebUI = request.app.state.webui
    return ui


UIDep = Annotated[WebUI, Depends(get_webui)]
router = APIRouter(prefix="/app/api", tags=["web ui"])


def _address(value: str) -> str:
    if not is_address(value):
        raise HTTPException(422, f"{value!r} is not an address")
    return to_checksum_address(value)


def _view(ui: WebUI) -> ChainView:
    if ui.view is None:
        raise HTTPException(503, "this market runs without a chain (free swarm): nothing on-chain to show")
    return ui.view


# ----- config and network ------------------------------------------------------------------------------------
@router.get("/config")
def get_config(ui: UIDep) -> dict[str, Any]:
    """What the pages need to talk to the chain and the market: chain id, contract addresses, models, and the key
    a paid gateway countersigns its resellers' receipts with (resellers authorise it on the escrow)."""
    names, gateway_signer = {}, None
    if ui.gateway is not None:
        names = {mid: r.name for mid, r in ui.gateway.runners.by_id.items()}
        paid = getattr(ui.gateway, "paid", None)  # inferchain.marketplace.gateway.paid.PaidMode, when paid
        gateway_signer = paid.signer_address if paid is not None else None
    dep = ui.view.chain.deployment if ui.view else None
    return {
        "chain_id": dep.chain_id if dep else None,
        "addresses": dep.addresses.__dict__ if dep else None,
        "withdraw_delay_s": dep.params.withdraw_delay_s if dep else None,
        "chat": ui.gateway is not None,
        "gateway_signer": gateway_signer,
        "models": [
            {"id": mid, "name": names.get(mid, mid[:15]), "layers": n, "chat": mid in names}
            for mid, n in sorted(ui.market.book.known.items())
        ],
    }


def _region(signed_offer: dict[str, Any] | None, addrs: list[str]) -> str:
    """The region the node's signed offer states, else where it listens (the host of its first multiaddr)."""
    if signed_offer and signed_offer.get("region"):
        return str(signed_offer["region"])
    for a in addrs:
        parts = a.split("/")
        if len(parts) > 2 and parts[1] in ("ip4", "ip6", "dns", "dns4", "dns6"):
            return parts[2]
    return "unknown"


@router.get("/network")
def get_network(ui: UIDep) -> dict[str, Any]:
    """Models with per-layer coverage, and every live offer with price, throughput, load and stake."""
    book, now = ui.market.book, time.time()
    with book.lock:
        book.planner.expire(now)
        coverage = {mid: book.planner.coverage(mid) for mid in book.known}
    with book.sessions() as s:
        rows = list_offers(s, None, now)
    stakes = ui.view.stakes({r.wallet for r in rows if r.wallet}) if ui.view else {}
    nodes = [
        {
            "node_id": r.node_id,
            "model_id": r.model_id,
            "start": r.start,
            "end": r.end,
            "wallet": r.wallet,
            "price_per_1k": str(r.price_per_1k),
            "tokens_per_s": round(1000.0 / (r.ms_per_layer * max(1, r.end - r.start)), 2) if r.ms_per_layer else None,
            "load": round(1 - r.free_slots / r.max_slots, 3) if r.max_slots else None,
            "free_slots": r.free_slots,
            "max_slots": r.max_slots,
            "stake": stakes.get(r.wallet) if r.wallet else None,
            "region": _region(r.signed_offer, list(r.addrs)),
            "expires_at": r.expires_at,
        }
        for r in rows
    ]
    return {
        "models": [{"id": mid, "layers": n, "coverage": coverage[mid]} for mid, n in sorted(book.known.items())],
        "nodes": nodes,
    }


# ----- operator and history ---------------------------------------------------------------------------------
@router.get("/operators/{address}")
def get_operator(address: str, ui: UIDep) -> dict[str, Any]:
    """A node wallet's standing, claimable earnings and epoch rewards, settled earnings over time, and the receipts
    this market's browser chats countersigned that are not settled yet."""
    view, node = _view(ui), _address(address)
    out = view.operator(node)
    settled = view.node_settlements(node)
    total = 0
    series = []
    for ev in settled:
        total += int(ev["amount"]) - int(ev["fee"])
        series.append({"time": ev["time"], "earned": str(total), "tx": ev["tx"]})
    done = {ev["key"] for ev in settled}
    rows = receipts_of_node(ui.store, node)
    out["earnings_series"] = series
    out["pending_receipts"] = [
        {"key": r.key, "chat_id": r.chat_id, "amount": r.amount, "receipt": r.receipt}
        for r in rows
        if r.key not in done
    ]
    return out


@router.get("/history/{buyer}")
def get_history(buyer: str, ui: UIDep) -> dict[str, Any]:
    """The buyer's browser chats (newest first) with their receipts and, per receipt, its settlement transaction."""
    who = _address(buyer)
    chats = chats_of(ui.store, who)
    keys = [r.key for _, rows in chats for r in rows]
    settled = ui.view.settled_by_key(keys) if ui.view and keys else {}
    out = []
    for c, rows in chats:
        out.append(
            {
                "id": c.id,
                "model_id": c.model_id,
                "prompt": c.prompt,
                "answer": c.answer,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "route": c.route,
                "cost": c.cost,
                "receipt_errors": c.receipt_errors,
                "created_at": c.created_at,
                "receipts": [
                    {
                        "key": r.key,
                        "node": r.node,
                        "amount": r.amount,
                        "receipt": r.receipt,
                        "node_sig": r.node_sig,
                        "buyer_sig": r.buyer_sig,
                        "settlement": settled.get(r.key),
                    }
                    for r in rows
                ],
            }
        )
    return {"buyer": who, "chats": out}


# ----- browser chat -----------------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=20_000)


class AuthorizationIn(BaseModel):
    buyer: str = Field(description="the wallet that will chat")
    max_price_per_1k: int | None = Field(None, ge=0, description="the most a chat's route may cost, wei per 1k")


class SignedAuthorization(BaseModel):
    """The ChatSession message the wallet signed (its fields as the typed data had them) and the signature."""

    nonce: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    max_price_per_1k: int = Field(ge=0, description="the message's maxPricePer1k")
    expiry: int = Field(ge=0)
    market: str = Field(max_length=200)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="the wallet's eth_signTypedData_v4 answer")


class ChatIn(BaseModel):
    model: str = Field(description="model id or name")
    buyer: str | None = Field(None, description="the wallet that countersigns the receipts (paid markets)")
    authorization: SignedAuthorization | None = Field(
        None, description="paid markets: the buyer's signed ChatSession (POST /app/api/chats/authorization)"
    )
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int = Field(64, ge=1, le=MAX_CHAT_TOKENS)
    max_price_per_1k: int | None = Field(None, ge=0, description="cap on the route's price, wei per 1k tokens")
    max_latency_ms: float | None = Field(None, ge=0)
    objective: Literal["latency", "price"] = "latency"


class SignatureIn(BaseModel):
    request_id: str = Field(max_length=64)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="the wallet's eth_signTypedData_v4 answer")


@router.post("/chats/authorization")
def post_authorization(body: AuthorizationIn, request: Request, ui: UIDep) -> dict[str, Any]:
    """The EIP-712 `ChatSession` the buyer's wallet signs before chatting on a paid market: this market may open
    paid sessions for the buyer at most at `max_price_per_1k` (none: uncapped) for an hour. Sign it with
    `eth_signTypedData_v4` and send `{nonce, signature}` as each chat's `authorization`."""
    if ui.authorizations is None:
        raise HTTPException(503, "this market runs without a chain (free swarm): chats need no authorisation")
    cap = body.max_price_per_1k if body.max_price_per_1k is not None else UNCAPPED_PRICE
    grant = ui.authorizations.issue(_address(body.buyer), request.headers.get("host", "")[:200], cap)
    return {"typed_data": grant.typed_data(ui.authorizations.chain_id), "expiry": grant.expiry}


@router.post("/chats", response_class=StreamingResponse)
async def post_chat(body: ChatIn, ui: UIDep) -> StreamingResponse:
    """Run one chat turn; answers NDJSON events (see inferchain/marketplace/webui/chat.py). On a paid market the
    buyer's signed authorisation must come with it (401 when missing, unknown, expired or not the buyer's)."""
    if ui.gateway is None:
        raise HTTPException(503, "this market serves no models for chat (started with --no-gateway)")
    runner = ui.gateway.runners.find(body.model)
    if runner is None:
        raise HTTPException(404, f"model {body.model!r} is not served here")
    cap = body.max_price_per_1k if body.max_price_per_1k is not None else UNCAPPED_PRICE
    buyer = None
    if ui.authorizations is not None:  # a paid market
        if body.buyer is None:
            raise HTTPException(422, "a paid market needs the buyer's wallet address to countersign receipts")
        buyer = _address(body.buyer)
        if body.authorization is None:
            raise HTTPException(401, "sign the chat authorisation first (POST /app/api/chats/authorization)")
        a = body.authorization
        signed = Grant(buyer, a.market, a.max_price_per_1k, bytes.fromhex(a.nonce[2:]), a.expiry)
        try:
            ui.authorizations.check(buyer, signed, a.signature, cap)
        except AuthorizationError as e:
            raise HTTPException(401, str(e)) from None
    req = ChatRequest(
        buyer=buyer,
        messages=[m.model_dump() for m in body.messages],
        max_tokens=body.max_tokens,
        limits=RouteLimits(body.max_price_per_1k, body.max_latency_ms, body.objective),
        max_price_per_1k=cap,
    )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    domain = ui.view.chain.deployment.receipt_domain if ui.view else None
    try:
        live = start_chat(ui.chats, runner, domain, ui.store, req, emit)
    except TooManyChats as e:
        raise HTTPException(429, str(e)) from None

    async def lines() -> AsyncIterator[str]:
        try:
            while True:
                event = await events.get()
                yield json.dumps(event) + "\n"
                if event["type"] in ("done", "error"):
                    return
        finally:
            live.cancelled.set()  # the page went away: stop generating; pending signatures fail at once

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})


@router.post("/chats/{chat_id}/signatures", status_code=204)
def post_signature(chat_id: str, body: SignatureIn, ui: UIDep) -> None:
    """The wallet's countersignature of a receipt the chat stream asked for."""
    live = ui.chats.get(chat_id)
    if live is None or live.signer is None or not live.signer.answer(body.request_id, body.signature):
        raise HTTPException(404, "no such signature request waiting (unknown chat, already answered, or timed out)")
