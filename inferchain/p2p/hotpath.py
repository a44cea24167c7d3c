"""A lean path for a message through py-libp2p's TCP + Noise + Yamux stack: fewer trips through trio's scheduler.

In py-libp2p 0.8.1 one 1.2 KB round trip took ~16 trio task steps in the client process (and as many in the
peer's), each a pass through the scheduler with an epoll call. Nine of them were uncontended lock acquisitions:
`trio.Lock.acquire()` always yields, even when the lock is free, and a message passes seven locks on its way out
(the stream's state lock, Yamux's stream write lock, window lock and connection write lock, the TCP stream's write
lock) and more on its way in. Three patches, each keeping the library's behaviour:

- `NoYieldWhenFree` wraps those locks (and the Yamux read/write lock's semaphore): a free lock is taken at once,
  a held one is waited for as before (trio's locks are fair: a released lock passes straight to its first
  waiter, so a newcomer never jumps the queue). Every message still reaches a real schedule point: trio's socket
  send and receive always checkpoint, so no task can starve the others.
- The TCP stream reads ahead: a Noise message is a 2-byte length and a body, read by the library in two socket
  reads; one read of up to 64 KiB now serves both (and the next message, if it is already there). The bytes are
  handed out in order, whoever reads them.
- Yamux's frame writer decodes every header for a debug line even when debug logging is off, then yields once
  more after the write; it now writes the frame under the same lock and returns (the stock writer still runs
  when debug logging is on).

Measured with bench/hop.py's 1.2 KB echo between two processes on 2 cores, both ends patched or neither,
interleaved: task steps per round trip 16.4 -> 3.2, round trip back to back 1.18-1.19 -> 0.68-0.71 ms, after 10 ms
idle 2.58-2.71 -> 2.22-2.27 ms.

`install()` patches the classes once; p2p.host calls it before any host exists. tests/test_p2p.py counts the task
steps of a round trip and runs concurrent streams on one connection, so a library upgrade that changes this
path fails a test.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.net_stream import NetStream
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

READ_AHEAD = 65536  # bytes one socket read may take beyond what was asked (a Noise message is at most 65,535)


class NoYieldWhenFree:
    """A trio Lock or Semaphore whose acquisition does not pass through the scheduler when it is free."""

    __slots__ = ("inner",)

    def __init__(self, inner: trio.Lock | trio.Semaphore) -> None:
        self.inner = inner

    async def acquire(self) -> None:
        try:
            self.inner.acquire_nowait()
        except trio.WouldBlock:
            await self.inner.acquire()

    def acquire_nowait(self) -> None:
        self.inner.acquire_nowait()

    def release(self) -> None:
        self.inner.release()

    def locked(self) -> bool:
        inner = self.inner
        return inner.locked() if isinstance(inner, trio.Lock) else inner.value == 0

    def statistics(self) -> Any:
        return self.inner.statistics()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _wrap_locks(cls: type, names: tuple[str, ...], with_rw_lock: bool = False) -> None:
    stock_init = cls.__init__  # type: ignore[misc]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        stock_init(self, *args, **kwargs)
        for name in names:
            setattr(self, name, NoYieldWhenFree(getattr(self, name)))
        if with_rw_lock:
            self.rw_lock._readers_lock = NoYieldWhenFree(self.rw_lock._readers_lock)
            self.rw_lock._writer_lock = NoYieldWhenFree(self.rw_lock._writer_lock)

    cls.__init__ = __init__  # type: ignore[misc]


_stock_read = TrioTCPStream.read


def _take(buffer: bytearray, n: int | None) -> bytes:
    if n is None or n >= len(buffer):
        data = bytes(buffer)
        buffer.clear()
    else:
        data = bytes(buffer[:n])
        del buffer[:n]
    return data


async def _read_ahead(self: TrioTCPStream, n: int | None = None) -> bytes:
    if n == 0:
        return b""
    ahead: bytearray = self.__dict__.setdefault("_inferchain_ahead", bytearray())
    if ahead:
        return _take(ahead, n)
    data = await _stock_read(self, READ_AHEAD if n is not None else None)  # the library's lock and error mapping
    if ahead:  # another reader took more while this one waited for the lock: its bytes come first
        ahead += data
        return _take(ahead, n)
    if n is not None and len(data) > n:
        ahead += data[n:]
        return data[:n]
    return data


_stock_write_frame = Yamux._write_frame
_yamux_log = logging.getLogger(yamux_module.__name__)


async def _write_frame(self: Yamux, data: bytes) -> None:
    if _yamux_log.isEnabledFor(logging.DEBUG):
        await _stock_write_frame(self, data)
        return
    async with self._write_lock:
        await self.secured_conn.write(data)


def install() -> None:
    """Patch the stack in this process (idempotent)."""
    if installed():
        return
    _wrap_locks(NetStream, ("_state_lock",))
    _wrap_locks(YamuxStream, ("window_lock", "close_lock"), with_rw_lock=True)
    _wrap_locks(Yamux, ("streams_lock", "_write_lock"))
    _wrap_locks(TrioTCPStream, ("read_lock", "write_lock"))
    TrioTCPStream.read = _read_ahead  # type: ignore[method-assign]
    Yamux._write_frame = _write_frame  # type: ignore[method-assign]


def installed() -> bool:
    return TrioTCPStream.read is _read_ahead
