"""Run a span node process: load the span, start a secure libp2p host, serve until stopped."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol

from inferchain.node.server import SpanServer
from inferchain.p2p.host import listen_addr, load_or_create_identity, make_host
from inferchain.wire.messages import PROTOCOL_ID


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
) -> None:
    """Serve forever (until cancelled). `on_ready` gets the node's addresses once it listens."""
    p2p = make_host(load_or_create_identity(identity))
    p2p.set_stream_handler(TProtocol(PROTOCOL_ID), server.handle_stream)
    async with p2p.run(listen_addrs=[listen_addr(host, port)]):
        peer_id = str(p2p.get_id())
        addrs = [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{peer_id}" for a in p2p.get_addrs()]
        if on_ready is not None:
            on_ready(NodeAddress(peer_id, addrs))
        while True:
            await trio.sleep(sweep_every_s)
            server.sessions.expire_idle()
            if on_tick is not None:
                on_tick(server)


def write_ready_file(path: Path) -> Callable[[NodeAddress], None]:
    """A ready callback that atomically writes the node's addresses (and PID) as JSON to `path`."""

    def write(address: NodeAddress) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(address.to_json())
        tmp.rename(path)

    return write
