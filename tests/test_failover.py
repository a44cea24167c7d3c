"""Fail-over across real node processes: a node killed or stalled mid-answer, and the same text comes out."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from inferchain.client.generation import SamplingParams, chat_prompt, stream_tokens
from inferchain.client.remote import Timeouts
from inferchain.client.session import InferenceSession
from inferchain.node.launch import local_swarm

pytestmark = pytest.mark.integration


def reference_text(model, tokenizer, ids: list[int], n: int) -> str:
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def run_with_fault(session: InferenceSession, tokenizer, ids, fault) -> str:
    pieces = []
    for i, chunk in enumerate(stream_tokens(session, tokenizer, ids, SamplingParams(max_tokens=24))):
        pieces.append(chunk.text)
        if i == 5:
            fault()
    return "".join(pieces)


def test_killed_node_is_replaced_and_its_span_replayed(smollm2, tokenizer, reference_model, tmp_path):
    # A serves 0:10, B serves 10:30; C and D can stand in for B together. C and D are stopped while the session
    # opens (their info requests time out), so the route is A -> B whatever the pings say; the fail-over's
    # refresh finds them running again.
    with local_swarm([(0, 10), (10, 30), (10, 20), (20, 30)], tmp_path, smollm2) as nodes:
        a, b, c, d = nodes
        ids = chat_prompt(tokenizer, [{"role": "user", "content": "What is the tallest mountain on Earth?"}])
        for stopped in (c, d):
            os.kill(stopped.process.pid, signal.SIGSTOP)
        try:
            session = InferenceSession(
                smollm2, [n.addr for n in nodes], max_length=len(ids) + 30, timeouts=Timeouts(connect_s=5, step_s=5)
            )
        finally:
            for stopped in (c, d):
                os.kill(stopped.process.pid, signal.SIGCONT)
        with session:
            assert session.route == [(a.peer_id, 0, 10), (b.peer_id, 10, 30)]
            text = run_with_fault(session, tokenizer, ids, b.kill)
            assert len(session.failovers) == 1
            event = session.failovers[0]
            assert event.failed_peer == b.peer_id and event.layers == (10, 30)
            assert [(x, y) for _, x, y in event.replacement] == [(10, 20), (20, 30)]
            assert event.replayed_tokens == len(ids) + 6
        assert text == reference_text(reference_model, tokenizer, ids, 24)


def test_stalled_node_times_out_and_is_replaced(smollm2, tokenizer, reference_model, tmp_path):
    with local_swarm([(0, 10), (10, 20), (20, 30), (0, 10)], tmp_path, smollm2) as nodes:
        ids = chat_prompt(tokenizer, [{"role": "user", "content": "Say hello in French."}])
        first = nodes[0]
        peers = [nodes[0].addr, nodes[1].addr, nodes[2].addr, nodes[3].addr]
        with InferenceSession(
            smollm2, peers, max_length=len(ids) + 30, timeouts=Timeouts(connect_s=5, step_s=3, per_token_s=0.05)
        ) as session:
            stalled = next(n for n in nodes if n.peer_id == session.route[0][0])
            try:
                text = run_with_fault(session, tokenizer, ids, lambda: os.kill(stalled.process.pid, signal.SIGSTOP))
            finally:
                os.kill(stalled.process.pid, signal.SIGCONT)
            assert [f.reason.split(":")[0] for f in session.failovers] == ["stalled"]
            assert session.route[0][0] != stalled.peer_id
        assert first.process.poll() is None  # stalled, not dead: it was resumed above
        assert text == reference_text(reference_model, tokenizer, ids, 24)


def test_no_replacement_is_a_clear_error(smollm2, tokenizer, tmp_path):
    from inferchain.client.chain import NoRouteError

    with (
        local_swarm([(0, 15), (15, 30)], tmp_path, smollm2) as nodes,
        InferenceSession(smollm2, [n.addr for n in nodes], max_length=64) as session,
    ):
        session.step([1, 2, 3])
        nodes[1].kill()
        with pytest.raises(NoRouteError, match="layers 15-29 are served by no routable node"):
            session.step([4])
