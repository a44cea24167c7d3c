"""A libp2p host that only speaks Noise (security) and Yamux (multiplexing): no plaintext, no Mplex."""

from __future__ import annotations

import os
from pathlib import Path

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from inferchain.p2p import hotpath, yamux

__all__ = [
    "ID",
    "PeerInfo",
    "ensure_connected",
    "load_or_create_identity",
    "make_host",
    "parse_peer_addr",
    "listen_addr",
]

yamux.install()  # window credit per half window, not per read (see p2p/yamux.py)
hotpath.install()  # free locks taken without a trip through the scheduler, TCP read-ahead (p2p/hotpath.py)


class PeerAddressError(ValueError):
    """A peer address is not a /ip4/.../tcp/.../p2p/<peer id> multiaddr."""


def load_or_create_identity(path: Path | None) -> KeyPair:
    """An Ed25519 peer identity, kept in `path` (mode 0600) so the peer id survives restarts."""
    if path is None:
        return create_new_key_pair()
    if path.exists():
        secret = path.read_bytes()
        private = Ed25519PrivateKey.from_bytes(secret)
        return KeyPair(private, private.get_public_key())
    pair = create_new_key_pair()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair.private_key.to_bytes())
    return pair


def make_host(key_pair: KeyPair) -> IHost:
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )


def listen_addr(host: str = "127.0.0.1", port: int = 0) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")


def parse_peer_addr(text: str) -> PeerInfo:
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as e:  # multiaddr raises several exception types for malformed input
        raise PeerAddressError(
            f"{text!r} is not a peer address like /ip4/127.0.0.1/tcp/4001/p2p/<peer id>: {e}"
        ) from None


async def ensure_connected(host: IHost, peer: PeerInfo, timeout_s: float) -> None:
    """Dial `peer` unless a connection to it is already open."""
    if host.get_network().connections.get(peer.peer_id):
        return
    host.get_peerstore().add_addrs(peer.peer_id, peer.addrs, 3600)
    with trio.fail_after(timeout_s):
        await host.connect(peer)
