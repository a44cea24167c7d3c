"""Abuse bounds on a real node process: one peer cannot take all session slots (session flooding)."""

from __future__ import annotations

import pytest

from inferchain.client.remote import RemoteError, RemoteSpan, Timeouts
from inferchain.models.span import ModelHead
from inferchain.node.launch import local_swarm
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread
from inferchain.wire.errors import ErrorCode

H = 576


@pytest.mark.integration
def test_one_peer_cannot_fill_the_node(smollm2, tmp_path):
    model_id = ModelHead(smollm2).info.model_id
    args = ["--max-sessions", "4", "--max-length", "32"]
    with (
        local_swarm([(0, 2)], tmp_path, smollm2, extra_args=args) as nodes,
        HostThread(load_or_create_identity(None)) as flooder,
        HostThread(load_or_create_identity(None)) as other,
    ):
        peer = parse_peer_addr(nodes[0].addr)
        spans = [RemoteSpan(flooder.host, peer, 0, 2, "f16", Timeouts()) for _ in range(4)]
        for i in range(3):  # 3 of 4 slots: a peer's share
            flooder.call(spans[i].open, f"f{i}", model_id, H, 32)
        with pytest.raises(RemoteError) as e:
            flooder.call(spans[3].open, "f3", model_id, H, 32)
        assert e.value.code == ErrorCode.NODE_FULL and "this peer" in e.value.message
        fair = RemoteSpan(other.host, peer, 0, 2, "f16", Timeouts())
        other.call(fair.open, "o", model_id, H, 32)  # another peer still gets the last slot
        other.call(fair.close)
        flooder.call(spans[0].close)
        flooder.call(spans[3].open, "f3", model_id, H, 32)  # a closed session frees the peer's share
        for s in spans[1:]:
            flooder.call(s.close)
