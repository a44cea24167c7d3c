"""The span protocol's messages. One libp2p stream carries one inference session: `open`, then any number of
`fwd` (each answered by `out`), then `close`. `info` and `ping` may be sent on a stream of their own.

Relay (`RELAY_PROTOCOL_ID`): a session opened with `relay_to` pushes its outputs straight to the next node of the
route as `push` messages (when the step's input asked for it), and still answers every `out` to the client, which
keeps each hop's inputs for fail-over and checks each relayed input's digest (README, "Relay").

Every message is a msgpack map with a type tag `t`; tensors are maps decoded by `wire.tensors`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgpack
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictBytes,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.tensors import WireDType

PROTOCOL_ID = "/inferchain/span/1.0.0"
RELAY_PROTOCOL_ID = "/inferchain/relay/1.0.0"  # one stream per relayed session: `push` messages, never answered
PROTOCOL_VERSION = 1


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Open(_Message):
    t: Literal["open"] = "open"
    v: StrictInt = PROTOCOL_VERSION
    session_id: StrictStr = Field(min_length=1, max_length=80)
    model_id: StrictStr = Field(max_length=100)
    start: StrictInt = Field(ge=0)
    end: StrictInt = Field(ge=1)
    max_length: StrictInt = Field(ge=1)
    dtype: WireDType = "f16"
    # Paid sessions: the buyer's address (0x...) and the most it pays, token wei per 1k tokens per layer.
    buyer: StrictStr | None = Field(default=None, max_length=42)
    max_price_per_1k: StrictStr | None = Field(default=None, max_length=80)
    # Relay: `push` messages into this session must carry `relay_key`; `relay_to` (a peer address
    # /ip4/.../tcp/.../p2p/<id>) is where this session pushes its outputs, presenting `relay_to_key` there.
    relay_key: StrictBytes | None = Field(default=None, min_length=16, max_length=64)
    relay_to: StrictStr | None = Field(default=None, max_length=300)
    relay_to_key: StrictBytes | None = Field(default=None, min_length=16, max_length=64)


class Opened(_Message):
    t: Literal["opened"] = "opened"
    session_id: StrictStr
    max_length: StrictInt
    idle_timeout_s: float
    relay: StrictBool = False  # the node reached `relay_to` and pushes there when a step asks it to


class Forward(_Message):
    t: Literal["fwd"] = "fwd"
    pos: StrictInt = Field(ge=0)
    x: dict[str, Any]
    relay: StrictBool = False  # push the output on to the next node too (if this session relays)


class Output(_Message):
    t: Literal["out"] = "out"
    x: dict[str, Any]
    relayed: StrictBool = False  # the output was pushed to the next node as well
    in_digest: StrictBytes | None = Field(default=None, max_length=32)  # input came by relay: its tensor_digest


class Push(_Message):
    """An output relayed from one node to the next (RELAY_PROTOCOL_ID); its step runs as a `fwd` with relay on."""

    t: Literal["push"] = "push"
    key: StrictBytes = Field(min_length=16, max_length=64)
    pos: StrictInt = Field(ge=0)
    x: dict[str, Any]


class Close(_Message):
    t: Literal["close"] = "close"


class Closed(_Message):
    t: Literal["closed"] = "closed"
    tokens: StrictInt
    # Paid sessions: the receipt the node signed and stored (see wallet.buyer.receipt_to_wire) and its signature.
    # The buyer answers `countersign`; the node checks and stores it, then answers `countersigned`.
    receipt: dict[str, Any] | None = None
    node_sig: StrictBytes | None = Field(default=None, max_length=65)


class Countersign(_Message):
    t: Literal["countersign"] = "countersign"
    buyer_sig: StrictBytes = Field(min_length=65, max_length=65)


class Countersigned(_Message):
    t: Literal["countersigned"] = "countersigned"
    key: StrictStr


class InfoRequest(_Message):
    t: Literal["info"] = "info"
    v: StrictInt = PROTOCOL_VERSION


class NodeInfo(_Message):
    t: Literal["node"] = "node"
    v: StrictInt = PROTOCOL_VERSION
    model_id: StrictStr
    start: StrictInt
    end: StrictInt
    hidden_size: StrictInt
    sessions: StrictInt
    max_sessions: StrictInt
    free_cache_tokens: StrictInt
    max_tokens_per_forward: StrictInt
    ms_per_layer: float = 0.0  # measured compute per layer per decoded token (0: not measured yet)
    largest_batch: StrictInt = 0  # most decode steps this node has run as one batch
    precision: Literal["fp32", "int8"] = "fp32"  # the weights this node computes with
    price_per_1k: StrictStr = "0"  # token wei per 1k tokens per layer (decimal text: uint256), "0" on a free node
    # Where this node's one-token steps spent their time since it started: "steps" and total ms per phase
    # (deserialise, queue, compute, resume, serialise, send; see node/profile.py).
    step_ms: dict[StrictStr, float] = Field(default_factory=dict, max_length=16)


class Announce(_Message):
    """A node's announcement on its model's offer topic: where it listens, what it serves, until when.
    In a paid network `signed_offer` carries the wallet-signed offer that buyers verify against the chain."""

    t: Literal["announce"] = "announce"
    v: StrictInt = PROTOCOL_VERSION
    peer_id: StrictStr = Field(max_length=100)
    addrs: list[StrictStr] = Field(min_length=1, max_length=8)
    info: NodeInfo
    expires_at: float
    signed_offer: dict[str, Any] | None = None


class Ping(_Message):
    t: Literal["ping"] = "ping"
    n: StrictInt = 0


class Pong(_Message):
    t: Literal["pong"] = "pong"
    n: StrictInt = 0


class ErrorReply(_Message):
    t: Literal["err"] = "err"
    code: ErrorCode
    msg: StrictStr

    def to_exception(self) -> WireError:
        return WireError(self.code, self.msg)


Message = Annotated[
    Open
    | Opened
    | Forward
    | Output
    | Push
    | Close
    | Closed
    | Countersign
    | Countersigned
    | InfoRequest
    | NodeInfo
    | Announce
    | Ping
    | Pong
    | ErrorReply,
    Field(discriminator="t"),
]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def encode(message: _Message) -> bytes:
    return msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)


def decode(payload: bytes) -> Message:
    """Parse a payload into a message, or raise WireError(BAD_MESSAGE / UNSUPPORTED_VERSION)."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=len(payload))
    except Exception as e:  # msgpack raises several unrelated exception types for bad input
        raise WireError(ErrorCode.BAD_MESSAGE, f"payload is not valid msgpack ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise WireError(ErrorCode.BAD_MESSAGE, "message must be a map")
    version = raw.get("v", PROTOCOL_VERSION)
    if isinstance(version, int) and version != PROTOCOL_VERSION:
        raise WireError(ErrorCode.UNSUPPORTED_VERSION, f"protocol version {version} is not supported (this peer: 1)")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise WireError(ErrorCode.BAD_MESSAGE, f"invalid message: {where}: {first.get('msg')}") from None


def error_reply(error: WireError) -> bytes:
    return encode(ErrorReply(code=error.code, msg=error.message[:500]))
