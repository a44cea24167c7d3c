"""Run a libp2p host on its own trio thread and call into it from synchronous code or another event loop
(asyncio/FastAPI), never by an ad-hoc trio.run per request.

An anyio blocking portal starts and stops the thread. Calls go through `trio.from_thread.run` with the thread's
trio token: one wake-up of the trio thread per call, where the portal's `call` first round-trips to spawn a task
(a decode step makes one call per token; in a probe, after the trio thread idled 13 ms, as it does during the
client's LM head: 0.92-0.95 ms to reach the trio thread by the portal, 0.67-0.70 ms this way)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack, suppress
from typing import Any, TypeVar

import trio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.pubsub.pubsub import Pubsub

from inferchain.p2p.gossip import running_pubsub
from inferchain.p2p.host import listen_addr, make_host

T = TypeVar("T")


class HostThread:
    """A started libp2p host living on a trio thread. Use `call` to run a coroutine function there."""

    def __init__(
        self, key_pair: KeyPair, listen_host: str = "127.0.0.1", port: int = 0, with_pubsub: bool = False
    ) -> None:
        self._stack = ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal(backend="trio"))
        self.host: IHost = make_host(key_pair)
        self.pubsub: Pubsub | None = None
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._task, _ = self.portal.start_task(self._run, listen_host, port, with_pubsub)

    async def _run(
        self, listen_host: str, port: int, with_pubsub: bool, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.host.run(listen_addrs=[listen_addr(listen_host, port)]))
            if with_pubsub:
                self.pubsub = await stack.enter_async_context(running_pubsub(self.host))
            task_status.started()
            await self._stop.wait()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the host's trio thread and return its result (or raise its exception). A call still
        running when the host closes is cancelled: it raises RuntimeError."""
        token = self._token
        if token is None:
            raise RuntimeError("the host thread is closed")
        try:
            return trio.from_thread.run(fn, *args, trio_token=token)
        except (trio.Cancelled, trio.RunFinishedError):
            raise RuntimeError("the host thread closed during the call") from None

    def close(self) -> None:
        self._token = None
        if self._stop is not None:
            self.portal.call(self._set_stop)
            self._stop = None
            self._task.result(timeout=10)
        # Calls still in flight cannot finish without the host: cancel them rather than wait forever (a RuntimeError
        # means the portal has stopped already).
        with suppress(RuntimeError):
            self.portal.call(self.portal.stop, True)
        self._stack.close()

    async def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def __enter__(self) -> HostThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
