"""Batching: decode steps of concurrent sessions run as one forward pass and equal the unbatched results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trio

from inferchain.client.remote import RemoteSpan, Timeouts, request_once
from inferchain.models.batched import decode_batch, supports_batching
from inferchain.models.span import ModelHead, SpanModel
from inferchain.node.launch import local_swarm
from inferchain.node.scheduler import StepRequest, StepScheduler
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread
from inferchain.wire import messages as m

H = 576


def test_batched_decode_equals_one_session_at_a_time(smollm2):
    span = SpanModel(smollm2, 0, 10)
    gen = torch.Generator().manual_seed(0)
    lengths = [3, 9, 17, 5]  # ragged: each session at its own position
    solo = [span.new_cache() for _ in lengths]
    batched = [span.new_cache() for _ in lengths]
    for n, a, b in zip(lengths, solo, batched, strict=True):
        prompt = torch.randn(1, n, H, generator=gen)
        span.forward(prompt, 0, a)
        span.forward(prompt, 0, b)
    positions = list(lengths)
    for _ in range(5):
        steps = [torch.randn(1, 1, H, generator=gen) for _ in lengths]
        expected = [span.forward(h, p, c) for h, p, c in zip(steps, positions, solo, strict=True)]
        got = decode_batch(span, steps, positions, batched, 0, 10)
        for e, g in zip(expected, got, strict=True):
            assert ((e - g).norm() / e.norm()).item() < 1e-5
        positions = [p + 1 for p in positions]
    assert [c.get_seq_length(0) for c in batched] == [n + 5 for n in lengths]


def test_sliding_window_layers_are_not_batched(tmp_path):
    from tests.test_models import tiny_folder

    folder, _ = tiny_folder(tmp_path, "mistral")
    span = SpanModel(folder, 0, 6)
    assert not supports_batching(span, 0, 6)


@pytest.mark.integration
def test_node_batches_concurrent_sessions_and_answers_each_correctly(smollm2, tmp_path):
    head = ModelHead(smollm2)
    local = SpanModel(smollm2, 0, 10)
    sessions = 6
    with local_swarm([(0, 10)], tmp_path, smollm2) as nodes, HostThread(load_or_create_identity(None)) as host:
        peer = parse_peer_addr(nodes[0].addr)
        remotes = [RemoteSpan(host.host, peer, 0, 10, "f32", Timeouts()) for _ in range(sessions)]
        caches = [local.new_cache() for _ in range(sessions)]
        rng = np.random.default_rng(0)
        for i, r in enumerate(remotes):
            host.call(r.open, f"s{i}", head.info.model_id, H, 64)
        positions = [0] * sessions
        max_err = 0.0

        async def step_all(inputs: list[np.ndarray]) -> list[np.ndarray]:
            outs: list[np.ndarray] = [np.empty(0)] * sessions

            async def one(i: int) -> None:
                outs[i] = await remotes[i].forward(inputs[i], positions[i])

            async with trio.open_nursery() as nursery:
                for i in range(sessions):
                    nursery.start_soon(one, i)
            return outs

        for step in range(6):
            # step 0: ragged prompts of 4..9 tokens; then one decode token per session, all sent at once, except at
            # step 3, where every other session sends a 3-token chunk that queues between the decode steps
            def tokens(i: int, step: int = step) -> int:
                return 4 + i if step == 0 else 3 if step == 3 and i % 2 == 0 else 1

            inputs = [rng.standard_normal((1, tokens(i), H)).astype(np.float32) for i in range(sessions)]
            outs = host.call(step_all, inputs)
            for i in range(sessions):
                expected = local.forward(torch.from_numpy(inputs[i]), positions[i], caches[i]).numpy()
                max_err = max(max_err, float(np.abs(outs[i] - expected).max() / np.abs(expected).max()))
                positions[i] += inputs[i].shape[1]
        info = host.call(request_once, host.host, peer, m.InfoRequest(), Timeouts())
        for r in remotes:
            host.call(r.close)
    assert max_err < 1e-5
    assert isinstance(info, m.NodeInfo) and info.largest_batch > 1


def _decode_rounds(span: SpanModel, pauses_s: list[float | None], rounds: int) -> StepScheduler:
    """Sessions decoding through a StepScheduler in this process; session i waits pauses_s[i] after each reply
    before it sends its next step (None: it sends one step, then stays open and silent). Returns the scheduler."""
    scheduler = StepScheduler(span, max_batch=16)
    caches = [span.new_cache() for _ in pauses_s]
    gen = torch.Generator().manual_seed(0)

    async def session(i: int, pause: float | None) -> None:
        for position in range(1 if pause is None else rounds):
            x = torch.randn(1, 1, H, generator=gen)
            await scheduler.submit(StepRequest(x, position, caches[i], span.start, span.end))
            await trio.sleep(pause or 0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scheduler.run)
            with trio.fail_after(120):
                async with trio.open_nursery() as sessions:
                    for i, pause in enumerate(pauses_s):
                        sessions.start_soon(session, i, pause)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return scheduler


def test_scheduler_waits_for_staggered_sessions_instead_of_splitting_the_batch(smollm2):
    # Replies go out one after another and clients answer at their own pace, so the next steps of a batch's
    # sessions arrive spread out; here over 9 ms, well within one step of a 20-layer span (~25 ms). Running the
    # early ones at once would pay the span's weights twice per round; the scheduler waits for the others instead.
    span = SpanModel(smollm2, 0, 20)
    rounds = 16
    stats = _decode_rounds(span, [0.0, 0.003, 0.006, 0.009], rounds).stats
    assert stats.batched_steps == 4 * rounds
    # One batch per round once each session's pause is known (16 here in 4 of 4 runs); without the wait the rounds
    # split (33-35 batches in 4 of 4 runs). The margin absorbs a loaded machine's late wake-ups, which can make the
    # scheduler give up on a session for a round or two (4 extra batches in 12 rounds once on a 2-core CI runner).
    assert stats.batches <= rounds * 3 // 2


def test_scheduler_stops_waiting_for_a_session_that_went_quiet(smollm2):
    span = SpanModel(smollm2, 0, 10)
    rounds = 12
    stats = _decode_rounds(span, [0.0, None], rounds).stats  # the second sends one step, then nothing
    assert stats.batched_steps == rounds + 1
    assert stats.late_waits <= 1  # waited for it once at most, then no more


def test_a_lone_session_skips_the_queue_and_a_crowd_still_batches(smollm2):
    # A decode step that finds the scheduler idle, with no other session due, runs in its own task (no hand-off to
    # the worker loop and back); as soon as other sessions are active their steps are gathered into batches again.
    span = SpanModel(smollm2, 0, 10)
    rounds = 8
    alone = _decode_rounds(span, [0.0], rounds).stats
    assert alone.direct >= rounds - 1 and alone.batched_steps == rounds  # (the first may come before the loop runs)
    crowd = _decode_rounds(span, [0.0] * 4, rounds).stats
    assert crowd.batched_steps == 4 * rounds
    # The very first step, before any session has a rhythm, may run alone; so may one step after each wait that went
    # in vain (a loaded machine's late wake-up marks the sessions it waited for as missed until they come: seen once
    # on a 2-core CI runner, direct=2 with late_waits=1). Without the check for other sessions due, nearly every step
    # runs alone (32, 32 and 28 of 32 in three runs, with `_others_due` patched to say no).
    assert crowd.direct <= 1 + crowd.late_waits
    assert crowd.batches <= rounds * 3 // 2
