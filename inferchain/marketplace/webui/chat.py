"""Browser chat: one generation through the client library, streamed to the page as NDJSON events, with each
node's receipt countersigned in the buyer's wallet (`WalletSigner`).

Events, one JSON object a line: `chat` (id), `route` (the hops that serve it), `token` (text delta), `sign` (EIP-712
typed data the wallet must sign; the page posts the signature to `/app/api/chats/{id}/signatures`), `receipt` (a
countersigned receipt), `done` (usage, cost, receipt problems) or `error`.

Each chat runs on its own thread with its own libp2p host: the wallet's countersignature is awaited inside the
client's close, which blocks that host's trio thread, so no other chat may share it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from eth_account.signers.local import LocalAccount

from inferchain.client.chain import RouteLimits
from inferchain.client.generation import Completion, SamplingParams, stream_tokens
from inferchain.client.remote import Timeouts
from inferchain.client.session import InferenceSession
from inferchain.marketplace.webui.db import ChatRow, receipt_json, save_chat
from inferchain.marketplace.webui.wallet_signer import SIGN_TIMEOUT_S, WalletSigner
from inferchain.p2p.host import load_or_create_identity
from inferchain.p2p.thread import HostThread
from inferchain.wallet.buyer import Buyer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from inferchain.marketplace.gateway.runner import ModelRunner
    from inferchain.wallet.typed_data import Domain

Event = dict[str, Any]
MAX_LIVE_CHATS = 16  # chats streaming at once; each holds a thread and a libp2p host
# Opening, each forward step and each close (which includes waiting for the wallet) get this long.
STEP_TIMEOUT_S = SIGN_TIMEOUT_S + 5.0


class TooManyChats(RuntimeError):
    pass


@dataclass
class ChatRequest:
    buyer: str | None  # None: a free swarm, no receipts
    messages: list[dict[str, str]]
    max_tokens: int
    limits: RouteLimits
    max_price_per_1k: int  # per layer, what the wallet countersigns at most


@dataclass
class LiveChat:
    id: str
    signer: WalletSigner | None
    cancelled: threading.Event = field(default_factory=threading.Event)


class ChatRegistry:
    """Chats currently streaming, so the page's signatures reach the right one. Bounded by MAX_LIVE_CHATS."""

    def __init__(self) -> None:
        self._live: dict[str, LiveChat] = {}
        self._lock = threading.Lock()

    def add(self, chat: LiveChat) -> None:
        with self._lock:
            if len(self._live) >= MAX_LIVE_CHATS:
                raise TooManyChats(f"{MAX_LIVE_CHATS} browser chats are already running; try again shortly")
            self._live[chat.id] = chat

    def remove(self, chat_id: str) -> None:
        with self._lock:
            self._live.pop(chat_id, None)

    def get(self, chat_id: str) -> LiveChat | None:
        with self._lock:
            return self._live.get(chat_id)


JS_SAFE_INT = 2**53 - 1  # larger integers lose digits in JavaScript numbers; wallets take uint256 as decimal text


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JS_SAFE_INT:
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def start_chat(
    registry: ChatRegistry,
    runner: ModelRunner,
    domain: Domain | None,
    store: sessionmaker[Session],
    req: ChatRequest,
    emit: Callable[[Event], None],
) -> LiveChat:
    """Register a chat and run it on its own thread; every event goes to `emit` (thread-safe), the last one being
    `done` or `error`."""
    chat_id = secrets.token_hex(16)
    live = LiveChat(chat_id, None)

    def ask(request_id: str, typed_data: dict[str, Any]) -> None:
        if live.cancelled.is_set():
            raise ValueError("the page went away before countersigning")
        emit({"type": "sign", "request_id": request_id, "typed_data": _jsonable(typed_data)})

    if req.buyer is not None:
        live.signer = WalletSigner(req.buyer, ask)
    registry.add(live)
    emit({"type": "chat", "id": chat_id})

    def run() -> None:
        try:
            emit(_generate(live, runner, domain, store, req, emit))
        except Exception as e:  # every failure ends the stream with a typed, readable event
            emit({"type": "error", "kind": type(e).__name__, "message": str(e)})
        finally:
            registry.remove(live.id)

    threading.Thread(target=run, name=f"chat-{chat_id[:8]}", daemon=True).start()
    return live


def _generate(
    live: LiveChat,
    runner: ModelRunner,
    domain: Domain | None,
    store: sessionmaker[Session],
    req: ChatRequest,
    emit: Callable[[Event], None],
) -> Event:
    prompt_ids = runner.encode_chat(req.messages)
    if len(prompt_ids) + req.max_tokens > runner.max_length:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_tokens beyond the context of {runner.max_length}")
    buyer = None
    if live.signer is not None and domain is not None:
        buyer = Buyer(cast(LocalAccount, live.signer), domain, req.max_price_per_1k)
    host = HostThread(load_or_create_identity(None))
    pieces: list[str] = []
    result: list[Completion] = []
    hops: list[Any] = []
    try:
        session = InferenceSession(
            runner.head,
            list(runner.peers(runner.model_id)),
            host=host,
            max_length=len(prompt_ids) + req.max_tokens,
            buyer=buyer,
            limits=req.limits,
            timeouts=Timeouts(step_s=STEP_TIMEOUT_S),
        )
        try:
            route = [{"node": n, "start": a, "end": b} for n, a, b in session.route]
            emit({"type": "route", "hops": route})
            params = SamplingParams(max_tokens=req.max_tokens)
            for chunk in stream_tokens(session, runner.tokenizer, prompt_ids, params, result):
                if live.cancelled.is_set():
                    break
                if chunk.text:
                    pieces.append(chunk.text)
                    emit({"type": "token", "text": chunk.text})
            route = [{"node": n, "start": a, "end": b} for n, a, b in session.route]  # after any fail-over
        finally:
            hops = list(session.chain.hops)  # close drops them; their receipt errors are read below
            session.close()  # the nodes' receipts arrive here and are countersigned in the wallet
    finally:
        host.close()
    receipts = list(session.receipts)
    for signed in receipts:
        emit({"type": "receipt", **receipt_json(signed)})
    errors = [h.remote.receipt_error for h in hops if h.remote.receipt_error]
    completion = result[0] if result else None
    cost = sum(r.receipt.amount_owed for r in receipts)
    chat = ChatRow(
        id=live.id,
        buyer=req.buyer or "",
        model_id=runner.model_id,
        prompt=req.messages[-1]["content"] if req.messages else "",
        answer="".join(pieces),
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(completion.token_ids) if completion else 0,
        route=route,
        cost=str(cost),
        receipt_errors=errors,
        created_at=time.time(),
    )
    save_chat(store, chat, receipts)
    return {
        "type": "done",
        "id": live.id,
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": chat.completion_tokens,
        "finish_reason": completion.finish_reason if completion else "cancelled",
        "cost": str(cost),
        "receipts": len(receipts),
        "receipt_errors": errors,
        "route": route,
    }
