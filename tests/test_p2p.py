"""The libp2p host: Noise + Yamux only. A peer that offers only plaintext cannot talk to a node."""

from __future__ import annotations

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from inferchain.p2p.host import PeerAddressError, load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread
from inferchain.wire import messages as m

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(smollm2, tmp_path_factory):
    from inferchain.node.launch import local_swarm

    with local_swarm([(0, 1)], tmp_path_factory.mktemp("p2p"), smollm2) as nodes:
        yield nodes[0]


def test_plaintext_only_peer_is_refused(node):
    pair = create_new_key_pair()
    insecure = new_host(key_pair=pair, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(pair)})
    peer = parse_peer_addr(node.addr)

    async def dial() -> str:
        from inferchain.p2p.host import listen_addr

        async with insecure.run(listen_addrs=[listen_addr()]):
            try:
                with trio.fail_after(15):
                    await insecure.connect(peer)
                    await insecure.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
            except Exception as e:  # the failure type depends on where negotiation stops
                return type(e).__name__
            return "connected"

    assert trio.run(dial) != "connected"


def test_noise_peer_gets_answers(node):
    from inferchain.client.remote import Timeouts, request_once

    with HostThread(load_or_create_identity(None)) as host:
        reply = host.call(request_once, host.host, parse_peer_addr(node.addr), m.Ping(n=3), Timeouts())
    assert isinstance(reply, m.Pong) and reply.n == 3


def test_identity_persists_and_is_private(tmp_path):
    path = tmp_path / "id.key"
    first = load_or_create_identity(path)
    again = load_or_create_identity(path)
    assert first.public_key.to_bytes() == again.public_key.to_bytes()
    assert path.stat().st_mode & 0o777 == 0o600


def test_bad_peer_address_is_a_clear_error():
    with pytest.raises(PeerAddressError, match="/p2p/"):
        parse_peer_addr("/ip4/127.0.0.1/tcp/4001")
