"""Run a span node process: load the span, start a secure libp2p host, serve until stopped."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.pubsub.pubsub import Pubsub

from inferchain.node.server import SpanServer
from inferchain.p2p.gossip import offer_topic, running_pubsub
from inferchain.p2p.host import listen_addr, load_or_create_identity, make_host, parse_peer_addr
from inferchain.wire import messages as m
from inferchain.wire.messages import PROTOCOL_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeAddress:
    peer_id: str
    addrs: list[str]

    def to_json(self) -> str:
        return json.dumps({"peer_id": self.peer_id, "addrs": self.addrs, "pid": os.getpid()})


async def serve(
    server: SpanServer,
    identity: Path | None,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[NodeAddress], None] | None = None,
    on_tick: Callable[[SpanServer], None] | None = None,
    sweep_every_s: float = 1.0,
    bootstrap: Sequence[str] = (),
    announce_every_s: float = 5.0,
    signed_offer: Callable[[], dict[str, Any] | None] | None = None,
) -> None:
    """Serve forever (until cancelled). `on_ready` gets the node's addresses once it listens.

    The node joins its model's offer topic, dials the bootstrap peers, and announces itself every
    `announce_every_s` seconds (each announcement expires after three periods, so a node that stops announcing
    drops out of everyone's book)."""
    p2p = make_host(load_or_create_identity(identity))
    p2p.set_stream_handler(TProtocol(PROTOCOL_ID), server.handle_stream)
    p2p.set_stream_handler(TProtocol(m.RELAY_PROTOCOL_ID), server.handle_relay)
    server.host = p2p
    async with p2p.run(listen_addrs=[listen_addr(host, port)]), running_pubsub(p2p) as pubsub:
        topic = offer_topic(server.span.info.model_id)
        subscription = await pubsub.subscribe(topic)  # subscribed peers relay the topic to one another
        await _dial_bootstrap(p2p, bootstrap)
        peer_id = str(p2p.get_id())
        addrs = [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{peer_id}" for a in p2p.get_addrs()]
        if on_ready is not None:
            on_ready(NodeAddress(peer_id, addrs))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.scheduler.run)
            nursery.start_soon(_drain, subscription)
            nursery.start_soon(_announce, pubsub, topic, server, peer_id, addrs, announce_every_s, signed_offer)
            while True:
                await trio.sleep(sweep_every_s)
                server.sessions.expire_idle()
                if on_tick is not None:
                    on_tick(server)


async def _dial_bootstrap(p2p: IHost, bootstrap: Sequence[str]) -> None:
    for addr in bootstrap:
        peer = parse_peer_addr(addr)
        try:
            with trio.fail_after(10):
                await p2p.connect(peer)
        except Exception as e:  # a missing bootstrap peer must not stop the node; it still serves direct dials
            log.warning("bootstrap peer %s unreachable: %s", addr, e)


async def _drain(subscription: Any) -> None:
    """Nodes relay announcements but do not need them: read and drop, so the queue never fills."""
    while True:
        await subscription.get()


async def _announce(
    pubsub: Pubsub,
    topic: str,
    server: SpanServer,
    peer_id: str,
    addrs: list[str],
    every_s: float,
    signed_offer: Callable[[], dict[str, Any] | None] | None,
) -> None:
    while True:
        announcement = m.Announce(
            peer_id=peer_id,
            addrs=addrs[:8],
            info=server.info(),
            expires_at=time.time() + 3 * every_s,
            signed_offer=signed_offer() if signed_offer is not None else None,
        )
        try:
            await pubsub.publish(topic, m.encode(announcement))
        except Exception as e:  # no peers yet, or a transient send error: try again next period
            log.debug("announce failed: %s", e)
        await trio.sleep(every_s)


def write_ready_file(path: Path) -> Callable[[NodeAddress], None]:
    """A ready callback that atomically writes the node's addresses (and PID) as JSON to `path`."""

    def write(address: NodeAddress) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(address.to_json())
        tmp.rename(path)

    return write
