"""A chain of real node processes on 127.0.0.1: distributed output equals the monolithic model."""

from __future__ import annotations

import threading

import pytest
import torch

from inferchain.client.generation import SamplingParams, chat_prompt, generate, stream_tokens
from inferchain.client.session import InferenceSession
from inferchain.p2p.host import load_or_create_identity
from inferchain.p2p.thread import HostThread

pytestmark = pytest.mark.integration


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def main_route(swarm) -> list[str]:
    return [n.addr for n in swarm[:3]]


def test_greedy_tokens_equal_monolithic_generate(swarm, smollm2, tokenizer, reference_model):
    ids = chat_prompt(tokenizer, [{"role": "user", "content": "Name three colours of the rainbow."}])
    with InferenceSession(smollm2, main_route(swarm), max_length=len(ids) + 40) as session:
        assert [(a, b) for _, a, b in session.route] == [(0, 10), (10, 20), (20, 30)]
        done = generate(session, tokenizer, ids, SamplingParams(max_tokens=32))
    expected = reference_greedy(reference_model, ids, 32)
    eos = tokenizer.eos_token_id
    assert done.token_ids == [t for t in expected if t != eos][: len(done.token_ids)]
    assert len(done.token_ids) >= 5
    assert done.text == tokenizer.decode(done.token_ids, skip_special_tokens=True)
    assert done.finish_reason in ("stop", "length")


def test_nodes_relay_to_each_other_and_the_star_route_agrees(swarm, smollm2, tokenizer, reference_model):
    ids = chat_prompt(tokenizer, [{"role": "user", "content": "What do bees make?"}])
    runs = {}
    for relay in (True, False):
        with InferenceSession(smollm2, main_route(swarm), max_length=len(ids) + 20, relay=relay) as session:
            done = generate(session, tokenizer, ids, SamplingParams(max_tokens=12, ignore_eos=True))
            steps = len(session.chain.hops[0].inputs)  # forward steps of this generation (prompt, then tokens)
            relayed = [h.remote.relayed_steps for h in session.chain.hops]
            assert not session.failovers
        runs[relay] = (done.token_ids, steps, relayed)
    expected = reference_greedy(reference_model, ids, 12)
    assert runs[True][0] == runs[False][0] == expected
    # Relayed: every step reached 10:20 and 20:30 from the node before (their inputs' digests checked), none
    # from the client; star: the client sent every hop's input itself.
    assert runs[True][1] >= 11 and runs[True][2] == [0, runs[True][1], runs[True][1]]
    assert runs[False][2] == [0, 0, 0]


def test_fp32_logits_within_1e_4_of_the_whole_model(swarm, smollm2, reference_model):
    ids = [1, 504, 3458, 282, 4649, 314, 253, 1345, 28]
    with InferenceSession(smollm2, main_route(swarm), max_length=64, wire_dtype="f32") as session:
        logits = [session.step(ids)]
        for _ in range(6):
            ids = ids + [int(logits[-1].argmax())]
            logits.append(session.step([ids[-1]]))
    with torch.inference_mode():
        full = reference_model(torch.tensor([ids])).logits[0]
    got = torch.stack(logits)
    expected = full[len(ids) - 7 :]
    assert (got - expected).abs().max().item() < 1e-4


def test_fp16_wire_keeps_greedy_tokens(swarm, smollm2, reference_model):
    ids = [1, 504, 3458, 282, 4649, 314, 253, 1345, 28]
    with InferenceSession(smollm2, main_route(swarm), max_length=64, wire_dtype="f16") as session:
        logits = session.step(ids)
        out = []
        for _ in range(16):
            out.append(int(logits.argmax()))
            logits = session.step([out[-1]])
    assert out == reference_greedy(reference_model, ids, 16)


def test_sampling_is_reproducible_with_a_seed_and_respects_stop(swarm, smollm2, tokenizer):
    ids = chat_prompt(tokenizer, [{"role": "user", "content": "Write a short poem about the sea."}])
    params = SamplingParams(max_tokens=20, temperature=0.8, top_p=0.9, top_k=40, seed=1234)
    texts = []
    for _ in range(2):
        with InferenceSession(smollm2, main_route(swarm), max_length=len(ids) + 24) as session:
            texts.append(generate(session, tokenizer, ids, params).text)
    assert texts[0] == texts[1] and texts[0]
    stop_at = texts[0].split()[2]
    with InferenceSession(smollm2, main_route(swarm), max_length=len(ids) + 24) as session:
        pieces = [
            c.text
            for c in stream_tokens(
                session,
                tokenizer,
                ids,
                SamplingParams(max_tokens=20, temperature=0.8, top_p=0.9, top_k=40, seed=1234, stop=(stop_at,)),
            )
        ]
    streamed = "".join(pieces)
    assert stop_at not in streamed
    assert texts[0].startswith(streamed)
    assert len(pieces) > 1  # streamed token by token, not in one piece


def test_a_stream_left_early_leaves_the_session_consistent(swarm, smollm2, tokenizer, reference_model):
    # on a shared host (as a gateway's), leaving a stream early: the chain has seen exactly the tokens read
    ids = [1, 504, 3458, 282, 4649, 314, 253, 1345, 28]
    expected = reference_greedy(reference_model, ids, 12)
    with HostThread(load_or_create_identity(None)) as host:
        with InferenceSession(smollm2, main_route(swarm), max_length=64, host=host) as session:
            got = []
            for chunk in stream_tokens(session, tokenizer, ids, SamplingParams(max_tokens=12, ignore_eos=True)):
                got.append(chunk.token_id)
                if len(got) == 3:
                    break
            assert got == expected[:3]
            assert session.position == len(ids) + 2  # the third token was read, not yet sent
            logits = session.step([expected[2]])
            assert int(logits.argmax()) == expected[3]
        short = InferenceSession(smollm2, main_route(swarm), max_length=4, host=host)
        with short, pytest.raises(ValueError, match="max_length"):
            list(stream_tokens(short, tokenizer, ids, SamplingParams(max_tokens=2)))


def test_concurrent_sessions_on_the_same_nodes(swarm, smollm2, reference_model):
    prompts = [[1, 504, 3458, 282], [1, 4649, 314, 253, 1345], [1, 28, 253, 1690, 314, 30]]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with InferenceSession(smollm2, main_route(swarm), max_length=40) as session:
                logits = session.step(prompts[i])
                out = []
                for _ in range(12):
                    out.append(int(logits.argmax()))
                    logits = session.step([out[-1]])
                results[i] = out
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i, p in enumerate(prompts):
        assert results[i] == reference_greedy(reference_model, p, 12)
