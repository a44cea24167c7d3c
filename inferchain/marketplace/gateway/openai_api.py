"""OpenAI-compatible routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/{model}].

Streaming answers are server-sent events exactly as OpenAI sends them: `data: <chunk json>\\n\\n` per chunk (the
first carries the assistant role, the last the finish reason, then a usage chunk when
`stream_options.include_usage`), and `data: [DONE]\\n\\n`. Blocking work (tokenizing, opening sessions, every
decode step) runs in worker threads via `anyio.to_thread`, so the event loop serves many streams at once.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from inferchain.client.chain import RouteLimits
from inferchain.client.generation import Chunk, SamplingParams
from inferchain.marketplace.gateway.errors import OpenAIError, bad_key, no_route
from inferchain.marketplace.gateway.keys import KeyInfo
from inferchain.marketplace.gateway.metering import InsufficientBalance, QuotaExceeded, Reservation
from inferchain.marketplace.gateway.runner import Generation, ModelRunner
from inferchain.marketplace.gateway.schemas import ChatRequest, CompletionRequest
from inferchain.marketplace.gateway.state import Gateway
from inferchain.marketplace.planner import NoRouteError

router = APIRouter(prefix="/v1", tags=["openai"])
T = TypeVar("T")


def get_gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def api_key(request: Request, gw: GatewayDep) -> KeyInfo:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise OpenAIError(401, "No API key provided (Authorization: Bearer <key>).", code="invalid_api_key")
    key = await anyio.to_thread.run_sync(gw.keys.authenticate, token)
    if key is None:
        raise bad_key()
    return key


KeyDep = Annotated[KeyInfo, Depends(api_key)]


# ----- models ---------------------------------------------------------------------------------------------
def _model_card(r: ModelRunner) -> dict[str, Any]:
    return {"id": r.name, "object": "model", "created": 0, "owned_by": "inferchain", "model_id": r.model_id}


@router.get("/models")
def list_models(gw: GatewayDep, _key: KeyDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(r) for r in gw.runners.by_id.values()]}


@router.get("/models/{model}")
def get_model(model: str, gw: GatewayDep, _key: KeyDep) -> dict[str, Any]:
    return _model_card(_runner(gw, model))


def _runner(gw: Gateway, model: str) -> ModelRunner:
    runner = gw.runners.find(model)
    if runner is None:
        raise OpenAIError(404, f"The model `{model}` does not exist on this gateway.", code="model_not_found",
                          param="model")  # fmt: skip
    return runner


# ----- completions ----------------------------------------------------------------------------------------
async def _body(request: Request, schema: type[ChatRequest] | type[CompletionRequest]) -> Any:
    try:
        raw = await request.json()
    except ValueError:
        raise OpenAIError(422, "The request body is not valid JSON.", code="invalid_json") from None
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise OpenAIError(422, f"Invalid request: {param}: {err['msg']}", code="invalid_value", param=param) from None


@router.post("/chat/completions")
async def chat_completions(request: Request, gw: GatewayDep, key: KeyDep) -> Any:
    body: ChatRequest = await _body(request, ChatRequest)
    runner = _runner(gw, body.model)
    try:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]  # fmt: skip
    except ValueError as e:
        raise OpenAIError(422, str(e), code="invalid_value", param="messages") from None
    prompt = await anyio.to_thread.run_sync(runner.encode_chat, messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    return await _serve(gw, key, runner, body, prompt, max_tokens, chat=True)


@router.post("/completions")
async def completions(request: Request, gw: GatewayDep, key: KeyDep) -> Any:
    body: CompletionRequest = await _body(request, CompletionRequest)
    runner = _runner(gw, body.model)
    prompt = await anyio.to_thread.run_sync(runner.encode, body.prompt)
    if not prompt:
        raise OpenAIError(422, "The prompt is empty.", code="invalid_value", param="prompt")
    return await _serve(gw, key, runner, body, prompt, body.max_tokens, chat=False)


def _quote(gw: Gateway, runner: ModelRunner, cap: int | None, max_latency_ms: float | None) -> int | None:
    """The route price (wei per 1k tokens) the market's book quotes under the price and latency caps; None without
    a book."""
    if gw.book is None:
        return None
    try:
        with gw.book.lock:
            route = gw.book.planner.plan(runner.model_id, cap, max_latency_ms, "latency")
    except NoRouteError as e:
        raise no_route(e.reason) from None
    return int(route.price_per_1k)


def _cost(tokens: int, price_per_1k: int) -> int:
    return math.ceil(tokens * price_per_1k / 1000)


async def _serve(
    gw: Gateway,
    key: KeyInfo,
    runner: ModelRunner,
    body: ChatRequest | CompletionRequest,
    prompt: list[int],
    max_tokens: int | None,
    chat: bool,
) -> Any:
    room = runner.max_length - len(prompt)
    if max_tokens is None:
        max_tokens = min(gw.default_max_tokens, room)
    if max_tokens > room or room < 1:
        raise OpenAIError(
            422, f"This model's context is {runner.max_length} tokens; the prompt has {len(prompt)} and "
            f"max_tokens asks for {max_tokens}.", code="context_length_exceeded", param="max_tokens",
        )  # fmt: skip
    params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                            seed=body.seed, stop=body.stops())  # fmt: skip
    # Caps: the request's own, else its reseller's defaults, else (price) the gateway's.
    defaults = key.defaults
    caps = (body.max_price_per_1k, defaults.max_price_per_1k, gw.max_price_per_1k)
    cap = next((c for c in caps if c is not None), None)
    latency = body.max_latency_ms if body.max_latency_ms is not None else defaults.max_latency_ms
    quote = _quote(gw, runner, cap, latency)
    # Free: meter at the quoted route price. Paid: the request may cost up to the cap (fail-over may move a span
    # to a dearer node), else up to the quote, which then caps the route; it is metered by its receipts.
    price = (cap if cap is not None else quote or 0) if gw.paid is not None else (quote or 0)
    limits = RouteLimits(price if gw.paid is not None else cap, latency)
    buyer = None
    if gw.paid is not None:
        if not await _chain_call(gw.paid.authorized, key.reseller):
            raise OpenAIError(403, f"The reseller has not authorised this gateway's key {gw.paid.signer_address} to "
                              "countersign receipts on the escrow (setSignerAuthorization).", "permission_denied",
                              "gateway_key_not_authorized")  # fmt: skip
        buyer = gw.paid.buyer(key.reseller, price)
    worst = len(prompt) + max_tokens
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    try:
        run = anyio.to_thread.run_sync if gw.paid is None else _chain_call  # paid: reserving reads the escrow
        reservation = await run(gw.meter.reserve, rid, key.id, runner.model_id, worst, _cost(worst, price))
    except QuotaExceeded as e:
        headers = {"retry-after": str(math.ceil(e.retry_after_s))} if e.retry_after_s else None
        kind = "rate_limit_exceeded" if e.kind == "rate" else "insufficient_quota"
        raise OpenAIError(429, e.message, kind, kind if e.kind == "rate" else "quota_exceeded",
                          headers=headers) from None  # fmt: skip
    except InsufficientBalance as e:
        raise OpenAIError(402, f"The reseller's escrow balance cannot pay for this request: {e}",
                          "insufficient_quota", "insufficient_balance") from None  # fmt: skip
    try:
        gen = await anyio.to_thread.run_sync(runner.start, prompt, params, limits, buyer)
    except NoRouteError as e:
        await anyio.to_thread.run_sync(gw.meter.release, reservation, f"no route: {e}")
        raise no_route(str(e)) from None
    except BaseException as e:
        await anyio.to_thread.run_sync(gw.meter.release, reservation, f"{type(e).__name__}: {e}")
        raise
    reply = _Reply(rid, body.model, chat, int(time.time()))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(gw, gen, reservation, price, reply, include_usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    try:
        text = await anyio.to_thread.run_sync(_collect, gen)
    except Exception as e:
        await _finish(gw, gen, reservation, price, f"{type(e).__name__}: {e}")
        raise OpenAIError(503, f"The route failed mid-generation: {e}", "server_error", "route_failed") from None
    await _finish(gw, gen, reservation, price, None)
    assert gen.completion is not None
    return JSONResponse(reply.full(text, gen, price))


async def _chain_call(fn: Callable[..., T], *args: Any) -> T:
    """Runs `fn` (which may ask the chain) in a worker thread; a chain that cannot be reached is a 503."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except (OpenAIError, QuotaExceeded, InsufficientBalance):
        raise
    except Exception as e:  # RPC errors of every kind (this room does not import web3)
        raise OpenAIError(503, f"The chain cannot be reached to check the reseller's escrow: {e}", "server_error",
                          "chain_unavailable") from None  # fmt: skip


def _collect(gen: Generation) -> str:
    return "".join(c.text for c in gen.chunks())


def _usage(gen: Generation) -> dict[str, int]:
    p, c = len(gen.prompt_ids), gen.generated
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _finish(gw: Gateway, gen: Generation, reservation: Reservation, price: int, error: str | None) -> None:
    """Close the sessions (nodes sign receipts) and settle the reservation; shielded from a client's hang-up."""
    with anyio.CancelScope(shield=True):
        try:
            await anyio.to_thread.run_sync(gen.close)
        except Exception as e:
            error = error or f"close failed: {type(e).__name__}: {e}"
        receipts = gen.receipts
        # tokens that reached the nodes are owed even when the request failed part-way
        prompt_tokens = len(gen.prompt_ids) if (gen.generated or gen.completion or receipts) else 0
        tokens = prompt_tokens + gen.generated
        spend = _cost(tokens, price) if gw.paid is None else sum(r.receipt.amount_owed for r in receipts)
        await anyio.to_thread.run_sync(
            gw.meter.settle, reservation, prompt_tokens, gen.generated, spend, price, gen.route, receipts, error,
        )  # fmt: skip


class _Reply:
    def __init__(self, rid: str, model: str, chat: bool, created: int) -> None:
        self.id, self.model, self.chat, self.created = rid, model, chat, created

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None}  # fmt: skip

    def full(self, text: str, gen: Generation, price: int) -> dict[str, Any]:
        assert gen.completion is not None
        finish = gen.completion.finish_reason
        if self.chat:
            out = self._envelope("chat.completion")
            out["choices"] = [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                               "logprobs": None, "finish_reason": finish}]  # fmt: skip
        else:
            out = self._envelope("text_completion")
            out["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
        out["usage"] = _usage(gen)
        out["inferchain"] = {"route": gen.route, "price_per_1k": price, "receipts": len(gen.receipts)}
        return out

    def chunk(self, delta: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            out = self._envelope("chat.completion.chunk")
            d: dict[str, Any] = {}
            if role:
                d = {"role": "assistant", "content": "", "refusal": None}
            elif delta is not None:
                d = {"content": delta}
            out["choices"] = [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]
        else:
            out = self._envelope("text_completion")
            out["choices"] = [{"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}]
        return out


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


_END = object()


def _next(it: Iterator[Chunk]) -> Any:
    return next(it, _END)


async def _stream(
    gw: Gateway, gen: Generation, reservation: Reservation, price: int, reply: _Reply, include_usage: bool
) -> AsyncIterator[bytes]:
    error: str | None = None
    try:
        if reply.chat:
            yield _sse(reply.chunk(None, role=True) | ({"usage": None} if include_usage else {}))
        it = gen.chunks()
        while True:
            try:
                chunk = await anyio.to_thread.run_sync(_next, it)
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                err = OpenAIError(503, f"The route failed mid-generation: {e}", "server_error", "route_failed")
                yield _sse(err.body())
                return
            if chunk is _END:
                break
            if chunk.text:
                yield _sse(reply.chunk(chunk.text) | ({"usage": None} if include_usage else {}))
        assert gen.completion is not None
        yield _sse(reply.chunk(None, finish=gen.completion.finish_reason)
                   | ({"usage": None} if include_usage else {}))  # fmt: skip
        if include_usage:
            usage = reply._envelope("chat.completion.chunk" if reply.chat else "text_completion")
            usage |= {"choices": [], "usage": _usage(gen)}
            yield _sse(usage)
        yield _sse("[DONE]")
    finally:
        await _finish(gw, gen, reservation, price, error or (None if gen.completion else "client went away"))
