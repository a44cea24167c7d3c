"""Framed messages over a libp2p stream: read exactly one frame, write one frame."""

from __future__ import annotations

import contextlib

from libp2p.abc import INetStream

from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.framing import DEFAULT_MAX_FRAME, HEADER_SIZE, frame, payload_length


class StreamClosed(Exception):
    """The peer closed or reset the stream."""


class FramedStream:
    def __init__(self, stream: INetStream, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self._buffer = bytearray()

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            try:
                chunk = await self.stream.read(max(n - len(self._buffer), 65536))
            except Exception as e:  # yamux raises its own reset/EOF types
                raise StreamClosed(f"stream closed by peer ({type(e).__name__})") from None
            if not chunk:
                raise StreamClosed("stream closed by peer")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def recv(self) -> bytes:
        header = await self._read_exactly(HEADER_SIZE)
        n = payload_length(header, self.max_frame)
        if n == 0:
            raise WireError(ErrorCode.BAD_FRAME, "empty frame")
        return await self._read_exactly(n)

    async def send(self, payload: bytes) -> None:
        data = frame(payload)
        try:
            await self.stream.write(data)
        except Exception as e:
            raise StreamClosed(f"stream closed while writing ({type(e).__name__})") from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # already reset: nothing left to close
            await self.stream.close()

    async def reset(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            await self.stream.reset()
