"""One inference session on one remote node (trio side): open, forward hidden states, close."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from inferchain.p2p.host import ensure_connected
from inferchain.p2p.streams import FramedStream, StreamClosed
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.framing import HEADER_SIZE
from inferchain.wire.tensors import WireDType, decode_tensor, encode_tensor, tensor_digest

if TYPE_CHECKING:
    from inferchain.trust.validator import SessionEvidence
    from inferchain.wallet.buyer import Buyer
    from inferchain.wallet.receipts import SignedReceipt


class RemoteError(Exception):
    """A node answered with a typed error, or could not be reached, or stalled."""

    def __init__(self, peer: str, code: ErrorCode | str, message: str) -> None:
        super().__init__(f"node {peer[-8:]}: {code}: {message}")
        self.peer = peer
        self.code = code
        self.message = message


# Errors after which another node (or a fresh session) may succeed; others are the caller's bug.
RETRYABLE = {
    ErrorCode.NODE_FULL,
    ErrorCode.SESSION_EXPIRED,
    ErrorCode.NO_SESSION,
    ErrorCode.INTERNAL,
    "unreachable",
    "stalled",
    "closed",
    "relay_mismatch",  # a relayed input did not hash to what the previous node answered (see Chain.forward)
}


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    step_s: float = 10.0  # one forward step, plus per_token_s for each token in it
    per_token_s: float = 0.05


async def _exchange(framed: FramedStream, request: m._Message) -> m.Message:
    await framed.send(m.encode(request))
    reply = m.decode(await framed.recv())
    if isinstance(reply, m.ErrorReply):
        raise reply.to_exception()
    return reply


async def request_once(host: IHost, peer: PeerInfo, request: m._Message, timeouts: Timeouts) -> m.Message:
    """Open a stream, send one request (info, ping), read one reply, close."""
    name = str(peer.peer_id)
    try:
        await ensure_connected(host, peer, timeouts.connect_s)
        with trio.fail_after(timeouts.step_s):
            stream = await host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
            framed = FramedStream(stream)
            try:
                return await _exchange(framed, request)
            finally:
                await framed.close()
    except WireError as e:
        raise RemoteError(name, e.code, e.message) from None
    except trio.TooSlowError:
        raise RemoteError(name, "stalled", "no answer in time") from None
    except StreamClosed as e:
        raise RemoteError(name, "closed", str(e)) from None
    except Exception as e:  # dial errors come in many libp2p types
        raise RemoteError(name, "unreachable", f"{type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class _Step:
    position: int
    tokens: int
    wire: dict  # the input as the node got it (sent by us, or pushed by the previous node)
    relayed: bool
    started: float  # perf_counter(): encoding began / the relay was known
    sent: float


class RemoteSpan:
    """An open session on one node for layers [start, end)."""

    def __init__(self, host: IHost, peer: PeerInfo, start: int, end: int, dtype: WireDType, timeouts: Timeouts):
        self.host, self.peer, self.start, self.end = host, peer, start, end
        self.dtype, self.timeouts = dtype, timeouts
        self.hidden_size = 0
        self.position = 0
        self._framed: FramedStream | None = None
        self.session_id = ""
        # Paid sessions: who countersigns, what was sent, and the receipt both signed (or why there is none).
        self.buyer: Buyer | None = None
        self.tokens_sent = 0
        self.receipt: SignedReceipt | None = None
        self.receipt_error: str | None = None
        # Paid sessions keep what validators need (see docs/trust.md): the exact wire inputs sent and the outputs
        # received (to check the node's activation sketch at close), then the evidence, kept until the caller
        # drops this object; bounded by the session's max_length, which the node enforces.
        self._sent: list[tuple[int, dict]] = []
        self._received: list[np.ndarray] = []
        self.evidence: SessionEvidence | None = None
        # One-token steps: how many, and total ms encoding, waiting for the reply (network and node), decoding.
        self.step_ms = {"steps": 0.0, "serialise": 0.0, "exchange": 0.0, "deserialise": 0.0}
        self.step_bytes = [0, 0]  # framed bytes of those steps: sent, received
        self.relaying = False  # the node pushes outputs to the next hop when a step asks it to
        self.relayed_steps = 0  # steps whose input the previous node pushed here (digest checked)
        self._pending: _Step | None = None  # the step whose output is awaited

    @property
    def name(self) -> str:
        return str(self.peer.peer_id)

    def _error(self, e: BaseException) -> RemoteError:
        if isinstance(e, WireError):
            return RemoteError(self.name, e.code, e.message)
        if isinstance(e, trio.TooSlowError):
            return RemoteError(self.name, "stalled", "no answer in time")
        if isinstance(e, StreamClosed):
            return RemoteError(self.name, "closed", str(e))
        return RemoteError(self.name, "unreachable", f"{type(e).__name__}: {e}")

    async def open(
        self,
        session_id: str,
        model_id: str,
        hidden_size: int,
        max_length: int,
        relay_key: bytes | None = None,
        relay_to: tuple[str, bytes] | None = None,
    ) -> None:
        """`relay_key`: accept pushes carrying it; `relay_to`: (peer address, key) of the next node to push to."""
        self.hidden_size = hidden_size
        self.session_id = session_id
        try:
            await ensure_connected(self.host, self.peer, self.timeouts.connect_s)
            with trio.fail_after(self.timeouts.step_s):
                stream = await self.host.new_stream(self.peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
                self._framed = FramedStream(stream)
                request = m.Open(
                    session_id=session_id,
                    model_id=model_id,
                    start=self.start,
                    end=self.end,
                    max_length=max_length,
                    dtype=self.dtype,
                    buyer=self.buyer.address if self.buyer else None,
                    max_price_per_1k=str(self.buyer.max_price_per_1k) if self.buyer else None,
                    relay_key=relay_key,
                    relay_to=relay_to[0] if relay_to else None,
                    relay_to_key=relay_to[1] if relay_to else None,
                )
                opened = await _exchange(self._framed, request)
                self.relaying = isinstance(opened, m.Opened) and opened.relay
        except Exception as e:
            await self.abort()
            raise self._error(e) from None

    async def forward(self, hidden: np.ndarray, position: int) -> np.ndarray:
        """Send hidden states [1, tokens, hidden] at `position`; return the span's output."""
        await self.send(hidden, position)
        out, _ = await self.receive()
        return out

    async def send(self, hidden: np.ndarray, position: int, relay: bool = False) -> None:
        """Send one step's input; `relay`: ask the node to push its output on to the next hop as well."""
        if self._framed is None:
            raise RemoteError(self.name, ErrorCode.NO_SESSION, "session is not open")
        t0 = time.perf_counter()
        try:
            wire = encode_tensor(hidden, self.dtype)
            payload = m.encode(m.Forward(pos=position, x=wire, relay=relay))
            t1 = time.perf_counter()
            with trio.fail_after(self.timeouts.step_s):
                await self._framed.send(payload)
        except Exception as e:
            await self.abort()
            raise self._error(e) from None
        if hidden.shape[1] == 1:
            self.step_bytes[0] += HEADER_SIZE + len(payload)
        self._pending = _Step(position, hidden.shape[1], wire, False, t0, t1)

    def expect_relayed(self, position: int, wire: dict) -> None:
        """The previous node pushed `wire` (the output it answered us) here as the input of the step at `position`."""
        now = time.perf_counter()
        self._pending = _Step(position, int(wire["s"][1]), wire, True, now, now)

    async def receive(self) -> tuple[np.ndarray, m.Output]:
        """The output of the step sent (or relayed here) last, checked: shape, and for a relayed input its digest."""
        if self._framed is None or self._pending is None:
            raise RemoteError(self.name, ErrorCode.NO_SESSION, "no step is outstanding on this session")
        step, self._pending = self._pending, None
        position, n, wire, relayed = step.position, step.tokens, step.wire, step.relayed
        try:
            with trio.fail_after(self.timeouts.step_s + n * self.timeouts.per_token_s):
                answer = await self._framed.recv()
            t2 = time.perf_counter()
            reply = m.decode(answer)
            if isinstance(reply, m.ErrorReply):
                raise reply.to_exception()
            if not isinstance(reply, m.Output):
                raise WireError(ErrorCode.BAD_MESSAGE, f"expected out, got {reply.t}")
            if relayed and reply.in_digest != tensor_digest(wire):
                raise RemoteError(self.name, "relay_mismatch", "the relayed input is not what the previous node sent")
            out = decode_tensor(reply.x, self.hidden_size, n)
            if out.shape[1] != n:
                raise WireError(ErrorCode.BAD_TENSOR, f"sent {n} tokens, got {out.shape[1]} back")
        except RemoteError:
            await self.abort()
            raise
        except Exception as e:
            await self.abort()
            raise self._error(e) from None
        if n == 1:
            t3 = time.perf_counter()
            phases = (("serialise", step.sent - step.started), ("exchange", t2 - step.sent), ("deserialise", t3 - t2))
            for phase, ms in phases:
                self.step_ms[phase] += ms * 1000
            self.step_ms["steps"] += 1
            self.step_bytes[1] += HEADER_SIZE + len(answer)
        self.relayed_steps += relayed
        self.position = position + n
        self.tokens_sent += n
        if self.buyer is not None:
            self._sent.append((position, wire))
            self._received.append(out.reshape(n, -1))
        return out, reply

    async def close(self) -> int:
        """Close politely; returns the tokens the node counted (0 if it is gone)."""
        if self._framed is None:
            return 0
        framed, self._framed = self._framed, None
        try:
            with trio.move_on_after(self.timeouts.step_s):
                reply = await _exchange(framed, m.Close())
                if isinstance(reply, m.Closed):
                    if reply.receipt is not None and self.buyer is not None:
                        await self._countersign(framed, reply)
                    return reply.tokens
        except Exception:  # the node may already be gone; nothing to release on our side
            pass
        finally:
            await framed.close()
        return 0

    async def _countersign(self, framed: FramedStream, closed: m.Closed) -> None:
        """Check the node's receipt against what this session sent; countersign it and wait for the node's ack."""
        from inferchain.trust.validator import SessionEvidence  # at run time too (the top import is for typing)
        from inferchain.wallet.receipts import InvalidReceipt

        assert self.buyer is not None and closed.receipt is not None
        receipt_data = dict(closed.receipt)
        sketch = receipt_data.pop("activation_sketch", None)
        problem = self._check_sketch(sketch, receipt_data)
        if problem is not None:
            self.receipt_error = "refusing to countersign: " + problem
            return
        try:
            signed = self.buyer.countersign(
                receipt_data,
                closed.node_sig or b"",
                session_id=self.session_id,
                span=(self.start, self.end),
                tokens=self.tokens_sent,
            )
        except (InvalidReceipt, ValueError) as e:
            self.receipt_error = str(e)
            return
        reply = await _exchange(framed, m.Countersign(buyer_sig=signed.buyer_signature))
        if isinstance(reply, m.Countersigned):
            self.receipt = signed
            assert isinstance(sketch, bytes)
            self.evidence = SessionEvidence(signed.receipt, signed.node_signature, sketch, self._sent)

    def _check_sketch(self, sketch: object, receipt_data: dict) -> str | None:
        """The node's activation sketch must describe the outputs this buyer received (a node cannot commit to
        one thing and send another); validators then check the sketch against a re-run. i8 wire outputs are too
        coarse for the tolerance and are not checked here (docs/trust.md)."""
        from eth_utils import keccak

        from inferchain.trust.commitment import CommitmentError, Sketch, compare
        from inferchain.wallet.buyer import receipt_from_wire
        from inferchain.wallet.receipts import InvalidReceipt

        if not isinstance(sketch, bytes):
            return "the node sent no activation sketch"
        try:
            parsed = Sketch.from_bytes(sketch)
        except CommitmentError as e:
            return f"bad activation sketch: {e}"
        try:
            commitment = receipt_from_wire(receipt_data).activation_commitment
        except (InvalidReceipt, ValueError) as e:
            return f"malformed receipt: {e}"
        if commitment != bytes(keccak(sketch)):
            return "the activation sketch does not hash to the receipt's commitment"
        if self.dtype != "i8" and self._received:
            result = compare(parsed, np.concatenate(self._received))
            if result.mismatch:
                return f"the activation sketch does not match the outputs received ({result.failed_tokens} tokens)"
        return None

    async def abort(self) -> None:
        if self._framed is not None:
            framed, self._framed = self._framed, None
            await framed.reset()
