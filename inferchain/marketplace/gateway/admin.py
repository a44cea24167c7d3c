"""Reseller admin API: sign in with the wallet (EIP-4361 message, EIP-191 signature, single-use nonce, expiry),
then create, list, revoke and rotate API keys, set their limits, and read usage with an admin bearer token.

Admin errors use FastAPI's plain `{"detail": ...}` shape; only the /v1 inference routes speak OpenAI's.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import delete

from inferchain.marketplace.gateway import siwe
from inferchain.marketplace.gateway.db import AdminNonceRow, AdminTokenRow, ReceiptRow, ResellerRow
from inferchain.marketplace.gateway.keys import KeyInfo, Limits, RouteDefaults
from inferchain.marketplace.gateway.openai_api import GatewayDep

router = APIRouter(prefix="/admin", tags=["reseller admin"])

NONCE_TTL_S = 600.0


class NonceOut(BaseModel):
    nonce: str
    domain: str
    chain_id: int
    expires_at: float


class LoginIn(BaseModel):
    message: str = Field(description="the EIP-4361 sign-in message, exactly as signed")
    signature: str = Field(description="EIP-191 personal_sign signature, 0x-hex")


class LoginOut(BaseModel):
    token: str = Field(description="admin bearer token (shown once)")
    address: str
    expires_at: float


class LimitsIn(BaseModel):
    tokens_per_day: int | None = Field(None, ge=0)
    spend_per_month: int | None = Field(None, ge=0, description="token wei")
    requests_per_minute: int | None = Field(None, ge=0)


class DefaultsIO(BaseModel):
    """Caps for the reseller's customers' requests that name none (null: no cap of that kind)."""

    max_price_per_1k: int | None = Field(
        None, ge=0, le=2**63 - 1, description="token wei per 1k tokens, whole route (at most ~9.2 INFER)"
    )
    max_latency_ms: float | None = Field(None, gt=0, description="estimated ms per token")


class KeyIn(LimitsIn):
    name: str = Field("", max_length=200)


class KeyOut(BaseModel):
    id: str
    name: str
    created_at: float
    revoked_at: float | None
    tokens_per_day: int | None
    spend_per_month: int | None
    requests_per_minute: int | None


class NewKeyOut(KeyOut):
    key: str = Field(description="the API key; shown this once, stored only as a hash")


class UsageOut(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    spend: int
    open_reservations: int
    rows: list[dict[str, Any]]


def _key_out(k: KeyInfo) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "created_at": k.created_at, "revoked_at": k.revoked_at,
            "tokens_per_day": k.limits.tokens_per_day, "spend_per_month": k.limits.spend_per_month,
            "requests_per_minute": k.limits.requests_per_minute}  # fmt: skip


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@router.get("/nonce", response_model=NonceOut)
def get_nonce(gw: GatewayDep) -> NonceOut:
    """A single-use nonce to put in the sign-in message (valid 10 minutes)."""
    nonce, now = secrets.token_hex(16), time.time()
    with gw.sessions.begin() as s:
        s.execute(delete(AdminNonceRow).where(AdminNonceRow.expires_at < now))
        s.add(AdminNonceRow(nonce=nonce, expires_at=now + NONCE_TTL_S, used=False))
    return NonceOut(nonce=nonce, domain=gw.domain, chain_id=gw.chain_id, expires_at=now + NONCE_TTL_S)


@router.post("/login", response_model=LoginOut)
def login(body: LoginIn, gw: GatewayDep) -> LoginOut:
    """Check the signed sign-in message, burn its nonce, and answer an admin token."""
    now = time.time()
    try:
        msg = siwe.verify(body.message, body.signature, gw.domain, now)
    except siwe.SignInError as e:
        raise HTTPException(401, f"sign-in refused: {e}") from None
    if msg.chain_id != gw.chain_id:
        raise HTTPException(401, f"sign-in refused: chain id {msg.chain_id}, this gateway is on {gw.chain_id}")
    if gw.resellers is not None and msg.address not in gw.resellers:
        raise HTTPException(403, f"{msg.address} is not a reseller of this gateway")
    token = secrets.token_urlsafe(32)
    expires = min(msg.expires_at, now + gw.admin_token_ttl_s)
    with gw.sessions.begin() as s:
        nonce = s.get(AdminNonceRow, msg.nonce, with_for_update=True)
        if nonce is None or nonce.used or nonce.expires_at < now:
            raise HTTPException(401, "sign-in refused: unknown, used or expired nonce")
        nonce.used = True
        if s.get(ResellerRow, msg.address) is None:
            s.add(ResellerRow(address=msg.address, created_at=now))
        s.add(AdminTokenRow(token_sha256=_sha(token), address=msg.address, expires_at=expires))
    return LoginOut(token=token, address=msg.address, expires_at=expires)


def reseller(request: Request, gw: GatewayDep) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "admin token required (sign in at /admin/login)")
    with gw.sessions() as s:
        row = s.get(AdminTokenRow, _sha(token))
        if row is None or row.expires_at <= time.time():
            raise HTTPException(401, "admin token unknown or expired")
        return row.address


ResellerDep = Annotated[str, Depends(reseller)]


@router.post("/keys", response_model=NewKeyOut, status_code=201)
def create_key(body: KeyIn, gw: GatewayDep, who: ResellerDep) -> dict[str, Any]:
    info, key = gw.keys.create(who, body.name, Limits(body.tokens_per_day, body.spend_per_month,
                                                      body.requests_per_minute))  # fmt: skip
    return _key_out(info) | {"key": key}


@router.get("/keys", response_model=list[KeyOut])
def list_keys(gw: GatewayDep, who: ResellerDep) -> list[dict[str, Any]]:
    return [_key_out(k) for k in gw.keys.list(who)]


def _found(k: Any, key_id: str) -> Any:
    if k is None:
        raise HTTPException(404, f"no key {key_id!r} of yours (or it is revoked)")
    return k


@router.delete("/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: str, gw: GatewayDep, who: ResellerDep) -> dict[str, Any]:
    return _key_out(_found(gw.keys.revoke(who, key_id), key_id))


@router.post("/keys/{key_id}/rotate", response_model=NewKeyOut)
def rotate_key(key_id: str, gw: GatewayDep, who: ResellerDep) -> dict[str, Any]:
    info, key = _found(gw.keys.rotate(who, key_id), key_id)
    return _key_out(info) | {"key": key}


@router.put("/keys/{key_id}/limits", response_model=KeyOut)
def set_limits(key_id: str, body: LimitsIn, gw: GatewayDep, who: ResellerDep) -> dict[str, Any]:
    limits = Limits(body.tokens_per_day, body.spend_per_month, body.requests_per_minute)
    return _key_out(_found(gw.keys.set_limits(who, key_id, limits), key_id))


@router.get("/settings", response_model=DefaultsIO)
def get_settings(gw: GatewayDep, who: ResellerDep) -> DefaultsIO:
    """The reseller's default route caps."""
    d = gw.keys.defaults(who)
    return DefaultsIO(max_price_per_1k=d.max_price_per_1k, max_latency_ms=d.max_latency_ms)


@router.put("/settings", response_model=DefaultsIO)
def put_settings(body: DefaultsIO, gw: GatewayDep, who: ResellerDep) -> DefaultsIO:
    """Set the default route caps for the reseller's customers' requests that name none; a request's own
    `max_price_per_1k` / `max_latency_ms` still win. They apply from the next request on."""
    gw.keys.set_defaults(who, RouteDefaults(body.max_price_per_1k, body.max_latency_ms))
    return body


@router.get("/usage", response_model=UsageOut)
async def usage(
    gw: GatewayDep,
    who: ResellerDep,
    key_id: Annotated[str | None, Query()] = None,
    since: Annotated[float, Query(description="UNIX time")] = 0.0,
) -> UsageOut:
    rows, receipts = await anyio.to_thread.run_sync(gw.meter.usage, who, key_id, since)
    settled = [r for r in rows if r.status == "settled"]
    return UsageOut(
        requests=len(settled),
        prompt_tokens=sum(r.prompt_tokens for r in settled),
        completion_tokens=sum(r.completion_tokens for r in settled),
        spend=sum(r.spend for r in settled),
        open_reservations=sum(1 for r in rows if r.status == "reserved"),
        rows=[{"id": r.id, "key_id": r.key_id, "model_id": r.model_id, "status": r.status,
               "created_at": r.created_at, "prompt_tokens": r.prompt_tokens,
               "completion_tokens": r.completion_tokens, "spend": r.spend, "price_per_1k": r.price_per_1k,
               "route": r.route, "receipts": [_receipt_out(rc) for rc in receipts.get(r.id, [])],
               "error": r.error} for r in rows],
    )  # fmt: skip


def _receipt_out(rc: ReceiptRow) -> dict[str, Any]:
    """A paid request's node receipt and where its settlement stands (amounts in token wei, as text)."""
    r = rc.receipt
    return {"key": rc.key, "node": rc.node, "span": [r["span_start"], r["span_end"]], "tokens_in": r["tokens_in"],
            "tokens_out": r["tokens_out"], "price_per_1k": r["price_per_1k"], "amount": rc.amount, "fee": rc.fee,
            "state": rc.state, "settled_tx": rc.settled_tx, "settled_block": rc.settled_block,
            "error": rc.error}  # fmt: skip
