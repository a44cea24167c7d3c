"""Typed protocol errors: every refusal a peer sends names one of these codes."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"  # not a length-prefixed frame, or truncated
    TOO_LARGE = "too_large"  # frame over the size limit
    BAD_MESSAGE = "bad_message"  # not msgpack, unknown type, missing or mistyped fields
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_TENSOR = "bad_tensor"  # wrong dtype, shape, or byte length
    WRONG_MODEL = "wrong_model"  # the node serves another model id
    BAD_SPAN = "bad_span"  # the node does not serve the requested layers
    NODE_FULL = "node_full"  # no session slot or cache memory left
    NO_SESSION = "no_session"  # forward before open, or after close/expiry
    SESSION_EXPIRED = "session_expired"  # idle timeout passed
    POSITION_MISMATCH = "position_mismatch"  # tokens sent out of order
    TOO_LONG = "too_long"  # session would exceed its maximum length
    UNAUTHORIZED = "unauthorized"
    INTERNAL = "internal"


class WireError(Exception):
    """A protocol error with a code; sent to the peer as an error reply, raised again on the other side."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
