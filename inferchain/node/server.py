"""The span server: answers the span protocol on libp2p streams, one inference session per stream.

Every step goes through the StepScheduler, which batches concurrent sessions' decode steps, chunks prefills, and
computes inline on the node's event-loop thread (one torch thread pool; see node/scheduler.py for why).
Validation happens before compute, so bad input never reaches a KV cache.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import trio
from libp2p.abc import INetStream

from inferchain.models.span import SpanModel
from inferchain.node.profile import StepProfile, StepStamps
from inferchain.node.receipts import PaidSession, SessionBilling
from inferchain.node.scheduler import StepRequest, StepScheduler
from inferchain.node.sessions import Session, SessionLimits, SessionTable
from inferchain.p2p.streams import FramedStream, StreamClosed
from inferchain.trust.adversary import Adversary
from inferchain.wallet.buyer import receipt_to_wire
from inferchain.wallet.receipts import InvalidReceipt
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.framing import DEFAULT_MAX_FRAME
from inferchain.wire.tensors import decode_tensor, encode_tensor

log = logging.getLogger(__name__)
COUNTERSIGN_TIMEOUT_S = 30.0  # how long a closed paid session waits for the buyer's countersignature


@dataclass(frozen=True)
class ServerLimits:
    max_tokens_per_forward: int = 2048
    max_frame: int = DEFAULT_MAX_FRAME
    # Session flooding: one peer (one libp2p identity) may hold at most this many sessions at once
    # (None: three quarters of the node's session slots, so one peer never takes them all).
    max_sessions_per_peer: int | None = None


@dataclass
class NodeStats:
    started: float
    tokens: int = 0
    sessions_opened: int = 0
    errors: int = 0
    receipts: int = 0  # paid sessions closed with a stored receipt


class SpanServer:
    def __init__(
        self,
        span: SpanModel,
        session_limits: SessionLimits | None = None,
        limits: ServerLimits | None = None,
        billing: SessionBilling | None = None,
    ) -> None:
        """`billing`: serve paid sessions only, signing and storing a receipt at each close (None: free node)."""
        self.span = span
        self.billing = billing
        self.limits = limits or ServerLimits()
        self.sessions = SessionTable(session_limits or SessionLimits(), span.cache_bytes_per_token(1))
        self.stats = NodeStats(started=time.monotonic())
        self.profile = StepProfile()  # where one-token steps spend their time
        self.scheduler = StepScheduler(span, max_batch=max(1, self.sessions.limits.max_sessions))
        self._peer_sessions: Counter[str] = Counter()  # sessions each peer holds (its streams with a session)
        self.adversary = Adversary.from_env()
        self._adversary_rng = np.random.default_rng(0)
        if self.adversary is not None:
            log.warning("ADVERSARIAL TEST NODE: %s", self.adversary)
            self.adversary.swap_weights(span)  # model:PATH: another model's weights behind this model's id

    def info(self) -> m.NodeInfo:
        return m.NodeInfo(
            model_id=self.span.info.model_id,
            start=self.span.start,
            end=self.span.end,
            hidden_size=self.span.info.hidden_size,
            sessions=len(self.sessions),
            max_sessions=self.sessions.limits.max_sessions,
            free_cache_tokens=self.sessions.free_cache_tokens(),
            max_tokens_per_forward=self.limits.max_tokens_per_forward,
            ms_per_layer=round(self.scheduler.stats.ms_per_layer, 4),
            largest_batch=self.scheduler.stats.largest_batch,
            precision=self.span.precision,
            step_ms=self.profile.snapshot(),
            price_per_1k=str(self.billing.signer.price_per_1k) if self.billing is not None else "0",
        )

    async def handle_stream(self, stream: INetStream) -> None:
        framed = FramedStream(stream, self.limits.max_frame)
        peer = str(stream.muxed_conn.peer_id) if hasattr(stream, "muxed_conn") else "?"
        handle: int | None = None
        session: Session | None = None
        paid: PaidSession | None = None
        try:
            while True:
                stamps: StepStamps | None = None  # a forward step's timeline, for the step profile
                try:
                    payload = await framed.recv()
                    received = time.perf_counter()
                except StreamClosed:
                    return
                except WireError as e:  # framing lost: answer once, then drop the stream
                    self.stats.errors += 1
                    await framed.send(m.error_reply(e))
                    return
                try:
                    message = m.decode(payload)
                    if isinstance(message, m.Open):
                        if session is not None:
                            raise WireError(ErrorCode.BAD_MESSAGE, "this stream already has an open session")
                        if self.billing is not None:
                            paid = self.billing.begin(
                                message.session_id, message.buyer, message.max_price_per_1k, message.start, message.end
                            )
                        handle, session = self._open(message, peer)
                        self._peer_sessions[peer] += 1
                        reply: bytes = m.encode(
                            m.Opened(
                                session_id=session.session_id,
                                max_length=session.max_length,
                                idle_timeout_s=self.sessions.limits.idle_timeout_s,
                            )
                        )
                    elif isinstance(message, m.Forward):
                        stamps = StepStamps(received)
                        reply, out = await self._forward(session, message, stamps)
                        if paid is not None and session is not None:
                            paid.observe(session.tokens)
                            paid.record_activations(message.pos, message.x, out)
                    elif isinstance(message, m.Close):
                        tokens = session.tokens if session is not None else 0
                        if paid is not None and self.billing is not None and tokens > 0:
                            await self._close_paid(framed, paid, tokens)
                            return
                        await framed.send(m.encode(m.Closed(tokens=tokens)))
                        return
                    elif isinstance(message, m.InfoRequest):
                        reply = m.encode(self.info())
                    elif isinstance(message, m.Ping):
                        reply = m.encode(m.Pong(n=message.n))
                    else:
                        raise WireError(ErrorCode.BAD_MESSAGE, f"a node does not accept {message.t!r} messages")
                except WireError as e:
                    self.stats.errors += 1
                    reply = m.error_reply(e)
                except Exception:  # a bug, not bad input: report it without killing the node
                    log.exception("internal error while serving %s", peer)
                    self.stats.errors += 1
                    if session is not None and handle is not None:  # its cache may be half-updated
                        session.closed_reason = ErrorCode.INTERNAL
                        self.sessions.release(handle)
                    reply = m.error_reply(WireError(ErrorCode.INTERNAL, "internal error on the node"))
                await framed.send(reply)
                if stamps is not None and stamps.encoded:
                    self.profile.add(stamps)
        except StreamClosed:
            return
        finally:
            if session is not None:
                self.scheduler.forget(session.cache)
            if handle is not None:
                self.sessions.release(handle)
                self._peer_sessions[peer] -= 1
                if self._peer_sessions[peer] <= 0:
                    del self._peer_sessions[peer]
            if paid is not None and self.billing is not None:
                self.billing.end(paid)
            await framed.close()

    async def _close_paid(self, framed: FramedStream, paid: PaidSession, tokens: int) -> None:
        """Sign and durably store the receipt, send it, then take the buyer's countersignature (bounded wait)."""
        assert self.billing is not None
        stored = self.billing.close(paid, tokens)  # committed to disk before anything is acknowledged
        self.stats.receipts += 1
        # The activation sketch travels with the receipt (its keccak is the receipt's activationCommitment); the
        # buyer takes it out before countersigning and keeps it with the session's inputs for validators.
        wire_receipt = receipt_to_wire(stored.receipt) | {"activation_sketch": paid.sketch()}
        await framed.send(m.encode(m.Closed(tokens=tokens, receipt=wire_receipt, node_sig=stored.node_signature)))
        with trio.move_on_after(COUNTERSIGN_TIMEOUT_S):
            try:
                answer = m.decode(await framed.recv())
                if not isinstance(answer, m.Countersign):
                    raise WireError(ErrorCode.BAD_MESSAGE, f"expected countersign, got {answer.t}")
                self.billing.signer.countersigned(stored.key, answer.buyer_sig)
            except InvalidReceipt as e:
                await framed.send(m.error_reply(WireError(ErrorCode.UNAUTHORIZED, str(e))))
                return
            except WireError as e:
                await framed.send(m.error_reply(e))
                return
            await framed.send(m.encode(m.Countersigned(key=stored.key)))

    def _open(self, message: m.Open, peer: str) -> tuple[int, Session]:
        model_id = self.span.info.model_id
        if message.model_id != model_id:
            raise WireError(ErrorCode.WRONG_MODEL, f"this node serves {model_id}, not {message.model_id}")
        if not (self.span.start <= message.start < message.end <= self.span.end):
            raise WireError(
                ErrorCode.BAD_SPAN,
                f"this node serves layers {self.span.start}:{self.span.end}, not {message.start}:{message.end}",
            )
        if len(self.sessions) < self.sessions.limits.max_sessions:  # (a full node answers "node full" below)
            self._check_peer_share(peer)
        opened = self.sessions.open(
            message.session_id,
            peer,
            (message.start, message.end),
            message.dtype,
            message.max_length,
            self.span.new_cache,
        )
        self.stats.sessions_opened += 1
        return opened

    def _check_peer_share(self, peer: str) -> None:
        """Session flooding: a peer may hold only its share of the node's slots (other peers keep the rest)."""
        limit = self.limits.max_sessions_per_peer
        if limit is None:
            limit = max(1, (3 * self.sessions.limits.max_sessions + 3) // 4)
        mine = self._peer_sessions[peer]
        if mine >= limit:
            raise WireError(
                ErrorCode.NODE_FULL, f"this peer already holds {mine} sessions, the most one peer may hold here"
            )

    async def _forward(
        self, session: Session | None, message: m.Forward, stamps: StepStamps
    ) -> tuple[bytes, np.ndarray]:
        if session is None:
            raise WireError(ErrorCode.NO_SESSION, "send `open` before `fwd`")
        session.check_usable()
        array = decode_tensor(message.x, self.span.info.hidden_size, self.limits.max_tokens_per_forward)
        if message.pos != session.position:
            raise WireError(
                ErrorCode.POSITION_MISMATCH,
                f"expected tokens from position {session.position}, got position {message.pos}",
            )
        n = array.shape[1]
        if session.position + n > session.max_length:
            raise WireError(
                ErrorCode.TOO_LONG, f"{session.position + n} tokens exceed the session's {session.max_length}"
            )
        hidden = torch.from_numpy(array.astype(np.float32))  # a writable copy
        stamps.decoded = time.perf_counter()
        session.last_active = time.monotonic()
        start, end = session.start, session.end
        if self.adversary is not None:  # test-only cheating (inferchain.trust.adversary)
            start, end = self.adversary.layers(start, end)
        request = StepRequest(hidden, session.position, session.cache, start, end)
        out = await self.scheduler.submit(request)
        stamps.resumed = time.perf_counter()
        stamps.compute_start, stamps.compute_end = request.compute_start, request.compute_end
        if self.adversary is not None:
            out = self.adversary.perturb(out, self._adversary_rng)
        session.position += n
        session.tokens += n
        session.last_active = time.monotonic()
        self.stats.tokens += n
        array_out = out.numpy()
        reply = m.encode(m.Output(x=encode_tensor(array_out, session.dtype)))
        if n == 1:  # the profile is of decode steps; prefills are reported by their throughput
            stamps.encoded = time.perf_counter()
        return reply, array_out
