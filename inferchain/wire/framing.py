"""Length-prefixed frames: 4 bytes big-endian payload length, then the payload. The limit is enforced before
reading the payload, so an oversized frame costs the receiver nothing."""

from __future__ import annotations

import struct

from inferchain.wire.errors import ErrorCode, WireError

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def payload_length(header: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> int:
    if len(header) != HEADER_SIZE:
        raise WireError(ErrorCode.BAD_FRAME, f"frame header must be {HEADER_SIZE} bytes, got {len(header)}")
    (n,) = HEADER.unpack(header)
    if n > max_frame:
        raise WireError(ErrorCode.TOO_LARGE, f"frame of {n} bytes exceeds the limit of {max_frame} bytes")
    return int(n)
