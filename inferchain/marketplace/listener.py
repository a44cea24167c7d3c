"""The market's ear on the peer network: subscribes to the offer topic of every known model, verifies each
announcement, keeps the book (planner + database) current, and expires offers nobody renews.

The libp2p host runs on its own trio thread (`HostThread`); FastAPI's asyncio loop never touches it. Database
writes leave the trio thread (`trio.to_thread`), so a slow database cannot stall gossip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from inferchain.marketplace.book import OfferBook
from inferchain.marketplace.verify import OfferVerifier, Verified
from inferchain.p2p.gossip import offer_topic
from inferchain.p2p.host import ensure_connected, load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread

log = logging.getLogger(__name__)

DIAL_TIMEOUT_S = 10.0


class OfferListener:
    """Start with `start()`, stop with `close()` (or use as a context manager)."""

    def __init__(
        self,
        book: OfferBook,
        verifier: OfferVerifier,
        *,
        key_pair: KeyPair | None = None,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Sequence[str] = (),
        expire_every_s: float = 1.0,
        redial_every_s: float = 5.0,
    ) -> None:
        self.book, self.verifier = book, verifier
        self.key_pair = key_pair or load_or_create_identity(None)
        self.listen_host, self.port = listen_host, port
        self.bootstrap = [parse_peer_addr(a) for a in bootstrap]
        self.expire_every_s, self.redial_every_s = expire_every_s, redial_every_s
        self.thread: HostThread | None = None
        self._stop: trio.Event | None = None
        self._done: Future[Any] | None = None
        self._ready = threading.Event()
        self.received = 0

    @property
    def peer_id(self) -> str | None:
        return str(self.thread.host.get_id()) if self.thread is not None else None

    @property
    def addrs(self) -> list[str]:
        if self.thread is None:
            return []
        pid = self.peer_id
        return [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{pid}" for a in self.thread.host.get_addrs()]

    def peer_count(self) -> int:
        return len(self.thread.host.get_connected_peers()) if self.thread is not None else 0

    def start(self) -> OfferListener:
        self.thread = HostThread(self.key_pair, self.listen_host, self.port, with_pubsub=True)
        self._done = self.thread.portal.start_task_soon(self._run)
        if not self._ready.wait(30):
            raise RuntimeError("the offer listener did not subscribe within 30 s")
        return self

    async def _run(self) -> None:
        assert self.thread is not None and self.thread.pubsub is not None
        pubsub = self.thread.pubsub
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for model_id in self.book.known:
                subscription = await pubsub.subscribe(offer_topic(model_id))
                nursery.start_soon(self._consume, subscription, model_id)
            nursery.start_soon(self._expire_loop)
            nursery.start_soon(self._bootstrap_loop)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _consume(self, subscription: Any, model_id: str) -> None:
        while True:
            message = await subscription.get()
            self.received += 1
            try:
                sender = str(ID(message.from_id))
            except Exception:  # a message without a readable sender cannot be attributed
                continue
            result = self.verifier.verify_announcement(message.data, sender, model_id)
            if isinstance(result, Verified):
                try:
                    await trio.to_thread.run_sync(self.book.upsert, result)
                except Exception as e:  # a database hiccup must not stop the subscriber
                    log.warning("could not store the offer of %s: %s", sender, e)
            else:
                log.debug("dropped announcement from %s: %s (%s)", sender, result.reason, result.detail)

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(self.expire_every_s)
            try:
                await trio.to_thread.run_sync(self.book.expire)
            except Exception as e:
                log.warning("could not expire offers: %s", e)

    async def _bootstrap_loop(self) -> None:
        """Dial the bootstrap peers, and again whenever the market has lost every connection."""
        assert self.thread is not None
        host = self.thread.host
        while True:
            if not host.get_connected_peers():
                for peer in self.bootstrap:
                    try:
                        await ensure_connected(host, peer, DIAL_TIMEOUT_S)
                    except Exception as e:  # unreachable for now: retried next round
                        log.warning("bootstrap peer %s unreachable: %s", peer.peer_id, e)
            await trio.sleep(self.redial_every_s)

    def close(self) -> None:
        if self.thread is None:
            return
        if self._stop is not None:
            self.thread.portal.call(self._set_stop)
        if self._done is not None:
            try:
                self._done.result(timeout=10)
            except Exception as e:
                log.debug("listener task ended with %s", e)
        self.thread.close()
        self.thread = None

    async def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def __enter__(self) -> OfferListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
