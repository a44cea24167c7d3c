"""Decentralised discovery: nodes announce on their model's gossipsub topic; a client that knows only one
bootstrap peer finds every node, routes through them, and gets the monolithic model's greedy tokens."""

from __future__ import annotations

import pytest
import torch

from inferchain.client.session import InferenceSession
from inferchain.node.launch import start_node

pytestmark = pytest.mark.integration


def test_client_discovers_nodes_through_one_bootstrap_peer(smollm2, reference_model, tmp_path):
    fast = ["--announce-every", "0.5"]
    seed = start_node((0, 10), tmp_path / "seed", smollm2, fast)
    others = []
    try:
        seed.wait_ready(120)
        others = [
            start_node(span, tmp_path / f"n{span[0]}", smollm2, [*fast, "--bootstrap", seed.addr])
            for span in ((10, 20), (20, 30))
        ]
        for node in others:
            node.wait_ready(120)
        ids = [1, 504, 3458, 282, 4649, 314, 253, 1345, 28]
        with InferenceSession(smollm2, [], bootstrap=[seed.addr], max_length=40, discover_s=30) as session:
            assert [(a, b) for _, a, b in session.route] == [(0, 10), (10, 20), (20, 30)]
            assert {p for p, _, _ in session.route} == {seed.peer_id, *(n.peer_id for n in others)}
            logits = session.step(ids)
            out = []
            for _ in range(8):
                out.append(int(logits.argmax()))
                logits = session.step([out[-1]])
            assert set(session.chain.dropped_announcements) <= {"expired"}, session.chain.dropped_announcements
        with torch.inference_mode():
            expected = reference_model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
        assert out == expected[0, len(ids) :].tolist()
    finally:
        for node in [seed, *others]:
            node.kill()


def test_discovery_without_a_full_cover_is_a_clear_error(smollm2, tmp_path):
    from inferchain.client.chain import NoRouteError

    seed = start_node((0, 10), tmp_path / "seed", smollm2, ["--announce-every", "0.5"])
    try:
        seed.wait_ready(120)
        with pytest.raises(NoRouteError, match="layers 10-29"):
            InferenceSession(smollm2, [], bootstrap=[seed.addr], max_length=40, discover_s=3)
    finally:
        seed.kill()
