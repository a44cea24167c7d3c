"""The span server: answers the span protocol on libp2p streams, one inference session per stream.

Every step goes through the StepScheduler, which batches concurrent sessions' decode steps, chunks prefills, and
computes inline on the node's event-loop thread (one torch thread pool; see node/scheduler.py for why).
Validation happens before compute, so bad input never reaches a KV cache.

Relay: a session opened with `relay_to` dials the next node once and, for each step whose input asked for it,
pushes its output there (RELAY_PROTOCOL_ID) before answering the client; `handle_relay` takes such pushes into
the session whose `relay_key` they carry and answers their outputs on that session's client stream. One step at
a time per session, whichever stream its input came by.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from inferchain.models.span import SpanModel
from inferchain.node.profile import StepProfile, StepStamps
from inferchain.node.receipts import PaidSession, SessionBilling
from inferchain.node.scheduler import StepRequest, StepScheduler
from inferchain.node.sessions import Session, SessionLimits, SessionTable
from inferchain.p2p.host import ensure_connected, parse_peer_addr
from inferchain.p2p.streams import FramedStream, StreamClosed
from inferchain.trust.adversary import Adversary
from inferchain.wallet.buyer import receipt_to_wire
from inferchain.wallet.receipts import InvalidReceipt
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.framing import DEFAULT_MAX_FRAME
from inferchain.wire.tensors import decode_tensor, encode_tensor, tensor_digest

log = logging.getLogger(__name__)
COUNTERSIGN_TIMEOUT_S = 30.0  # how long a closed paid session waits for the buyer's countersignature
RELAY_DIAL_S = 5.0  # how long opening a relayed session may spend reaching the next node
RELAY_RETRY_S = 300.0  # a successor this node could not reach is not dialled again for this long


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


@dataclass
class _Served:
    """An open session as its steps need it, whichever stream their input comes by."""

    handle: int
    session: Session
    framed: FramedStream  # the client's stream: every step's output (or error) is answered here
    paid: PaidSession | None
    lock: trio.Lock = field(default_factory=trio.Lock)
    push: FramedStream | None = None  # relay: the stream to the next node, and the key presented there
    push_key: bytes = b""


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
        self.host: IHost | None = None  # set by node.run.serve; relayed sessions dial the next node with it
        self._relay_in: dict[bytes, _Served] = {}  # relay_key -> the session that takes pushes carrying it
        self._unreachable: dict[str, float] = {}  # successor address -> when dialling it last failed
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
        served: _Served | None = None
        relay_key: bytes | None = None
        try:
            while True:
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
                    if isinstance(message, m.Forward):
                        if served is None:
                            raise WireError(ErrorCode.NO_SESSION, "send `open` before `fwd`")
                        await self._serve_step(served, message.pos, message.x, message.relay, None, received)
                        continue
                    if isinstance(message, m.Open):
                        if served is not None:
                            raise WireError(ErrorCode.BAD_MESSAGE, "this stream already has an open session")
                        if message.relay_key is not None and message.relay_key in self._relay_in:
                            raise WireError(ErrorCode.BAD_MESSAGE, "another session here holds this relay_key")
                        paid = None
                        if self.billing is not None:
                            paid = self.billing.begin(
                                message.session_id, message.buyer, message.max_price_per_1k, message.start, message.end
                            )
                        try:
                            handle, session = self._open(message, peer)
                        except BaseException:
                            if paid is not None and self.billing is not None:
                                self.billing.end(paid)
                            raise
                        served = _Served(handle, session, framed, paid)
                        self._peer_sessions[peer] += 1
                        if message.relay_key is not None:
                            relay_key = message.relay_key
                            self._relay_in[relay_key] = served
                        relaying = await self._link(served, message.relay_to, message.relay_to_key)
                        reply: bytes = m.encode(
                            m.Opened(
                                session_id=session.session_id,
                                max_length=session.max_length,
                                idle_timeout_s=self.sessions.limits.idle_timeout_s,
                                relay=relaying,
                            )
                        )
                    elif isinstance(message, m.Close):
                        tokens = served.session.tokens if served is not None else 0
                        if served is not None and served.paid is not None and self.billing is not None and tokens > 0:
                            async with served.lock:  # a relayed step still running finishes first
                                await self._close_paid(framed, served.paid, served.session.tokens)
                            return
                        await framed.send(m.encode(m.Closed(tokens=tokens)))
                        return
                    elif isinstance(message, m.InfoRequest):
                        reply = m.encode(self.info())
                    elif isinstance(message, m.Ping):
                        reply = m.encode(m.Pong(n=message.n))
                    else:
                        raise WireError(ErrorCode.BAD_MESSAGE, f"a node does not accept {message.t!r} messages")
                except StreamClosed:  # the client went away while a step was answered (or a paid close ran)
                    return
                except WireError as e:
                    self.stats.errors += 1
                    reply = m.error_reply(e)
                except Exception:  # a bug, not bad input: report it without killing the node
                    log.exception("internal error while serving %s", peer)
                    self.stats.errors += 1
                    reply = m.error_reply(WireError(ErrorCode.INTERNAL, "internal error on the node"))
                await framed.send(reply)
        except StreamClosed:
            return
        finally:
            if relay_key is not None:
                del self._relay_in[relay_key]
            if served is not None:
                self.scheduler.forget(served.session.cache)
                self.sessions.release(served.handle)
                self._peer_sessions[peer] -= 1
                if self._peer_sessions[peer] <= 0:
                    del self._peer_sessions[peer]
                if served.paid is not None and self.billing is not None:
                    self.billing.end(served.paid)
                if served.push is not None:
                    await served.push.close()
            await framed.close()

    async def _link(self, served: _Served, relay_to: str | None, key: bytes | None) -> bool:
        """Relay: open the session's stream to the next node (`relay_to`); False (the client forwards instead) if
        there is nothing to link, no host, or the next node cannot be reached in RELAY_DIAL_S."""
        if relay_to is None or key is None or self.host is None:
            return False
        failed_at = self._unreachable.get(relay_to)
        if failed_at is not None and time.monotonic() - failed_at < RELAY_RETRY_S:
            return False  # (behind NAT, say: do not make every open wait RELAY_DIAL_S again)
        try:
            peer = parse_peer_addr(relay_to)
            with trio.fail_after(RELAY_DIAL_S):
                await ensure_connected(self.host, peer, RELAY_DIAL_S)
                stream = await self.host.new_stream(peer.peer_id, [TProtocol(m.RELAY_PROTOCOL_ID)])
        except Exception as e:  # unreachable, refused, bad address: the session works unrelayed
            log.info("relay to %s not linked: %s", relay_to[-12:], e)
            if len(self._unreachable) >= 1024:  # bounded: any client may name any address
                self._unreachable.clear()
            self._unreachable[relay_to] = time.monotonic()
            return False
        self._unreachable.pop(relay_to, None)
        served.push, served.push_key = FramedStream(stream, self.limits.max_frame), key
        return True

    async def handle_relay(self, stream: INetStream) -> None:
        """Pushes from the previous node of relayed sessions: each runs as its session's next step. A push that
        names no session here, or breaks the protocol, ends the stream (the client then sees that session stall
        or its previous hop report the push as not relayed, and recovers)."""
        framed = FramedStream(stream, self.limits.max_frame)
        try:
            while True:
                payload = await framed.recv()
                received = time.perf_counter()
                push = m.decode(payload)
                if not isinstance(push, m.Push):
                    raise WireError(ErrorCode.BAD_MESSAGE, f"a relay stream carries push messages, not {push.t!r}")
                served = self._relay_session(push.key)
                await self._serve_step(served, push.pos, push.x, True, tensor_digest(push.x), received)
        except (StreamClosed, WireError) as e:
            log.debug("relay stream ended: %s", e)
        finally:
            await framed.close()

    def _relay_session(self, key: bytes) -> _Served:
        served = self._relay_in.get(key)  # a random 32-byte secret only the client and the two nodes know
        if served is None:
            raise WireError(ErrorCode.NO_SESSION, "no session here takes pushes with this key")
        return served

    async def _serve_step(
        self, served: _Served, pos: int, x: dict, relay: bool, in_digest: bytes | None, received: float
    ) -> None:
        """Run one forward step of a session and answer it on the session's client stream (output or typed error),
        pushing the output to the next node first when `relay` asks and the session is linked."""
        stamps = StepStamps(received)
        async with served.lock:
            try:
                reply = await self._forward(served, pos, x, relay, in_digest, stamps)
            except WireError as e:
                self.stats.errors += 1
                reply = m.error_reply(e)
            except Exception:  # a bug, not bad input: report it without killing the node
                log.exception("internal error in a step of session %s", served.session.session_id)
                self.stats.errors += 1
                served.session.closed_reason = ErrorCode.INTERNAL  # its cache may be half-updated
                self.sessions.release(served.handle)
                reply = m.error_reply(WireError(ErrorCode.INTERNAL, "internal error on the node"))
            await served.framed.send(reply)
        if stamps.encoded:
            session = served.session
            self.profile.add(stamps, session.session_id, (session.start, session.end), pos)

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
        self, served: _Served, pos: int, x: dict, relay: bool, in_digest: bytes | None, stamps: StepStamps
    ) -> bytes:
        session = served.session
        session.check_usable()
        array = decode_tensor(x, self.span.info.hidden_size, self.limits.max_tokens_per_forward)
        if pos != session.position:
            raise WireError(
                ErrorCode.POSITION_MISMATCH,
                f"expected tokens from position {session.position}, got position {pos}",
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
        wire = encode_tensor(array_out, session.dtype)
        relayed = relay and served.push is not None and await self._push(served, pos, wire)  # first: it is on the path
        stamps.pushed = time.perf_counter() if relayed else 0.0
        if served.paid is not None:
            served.paid.observe(session.tokens)
            served.paid.record_activations(pos, x, array_out)
        reply = m.encode(m.Output(x=wire, relayed=relayed, in_digest=in_digest))
        if n == 1:  # the profile is of decode steps; prefills are reported by their throughput
            stamps.encoded = time.perf_counter()
        return reply

    async def _push(self, served: _Served, pos: int, wire: dict) -> bool:
        """Relay one output to the next node; False (and the link is dropped) if that stream is gone."""
        assert served.push is not None
        if self.adversary is not None:
            wire = self.adversary.relayed(wire)
        try:
            await served.push.send(m.encode(m.Push(key=served.push_key, pos=pos, x=wire)))
            return True
        except StreamClosed as e:
            log.info("relay link of session %s lost: %s", served.session.session_id, e)
            served.push = None
            return False
