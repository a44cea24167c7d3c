"""Activation commitments and the validator's check: honest variations pass, cheating fails (in process).

Honest variations: f32 vs f16 wire inputs, 1 vs 2 torch threads, batched decode vs one step at a time, and a
validator re-running from f16-rounded inputs when the node computed from f32. Cheats: noise on the outputs,
skipped layers (first or last), other weights (layers of another part of the model), a truncated sketch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eth_account import Account
from eth_utils import keccak

from inferchain.models.batched import decode_batch
from inferchain.models.span import ModelHead, SpanModel
from inferchain.trust.commitment import (
    BYTES_PER_TOKEN,
    HEADER_SIZE,
    CommitmentBuilder,
    CommitmentError,
    Sketch,
    compare,
)
from inferchain.trust.validator import SessionEvidence, Validator, check_session
from inferchain.wallet.receipts import Receipt
from inferchain.wallet.typed_data import Domain
from inferchain.wire.tensors import decode_tensor, encode_tensor

H = 576
RECEIPT_DOMAIN = Domain(31337, "0x" + "11" * 20)
VERDICT_DOMAIN = Domain(31337, "0x" + "22" * 20)


@pytest.fixture(scope="module")
def parts(smollm2):
    return ModelHead(smollm2), SpanModel(smollm2, 0, 10), SpanModel(smollm2, 10, 20), SpanModel(smollm2, 20, 30)


def session_inputs(parts, seed: int, prompt: int = 12, decode: int = 8) -> list[tuple[int, np.ndarray]]:
    """Realistic span inputs for layers 10:20: a random prompt and decode tokens run through layers 0:10."""
    head, first, _, _ = parts
    ids = np.random.default_rng(seed).integers(0, 49152, size=prompt + decode).tolist()
    cache = first.new_cache()
    steps = [(0, first.forward(head.embed(ids[:prompt]), 0, cache).numpy())]
    for i, t in enumerate(ids[prompt:]):
        steps.append((prompt + i, first.forward(head.embed([t]), prompt + i, cache).numpy()))
    return steps


def serve(span, steps, wire="f16", threads=1, noise=0.0, layers=None, batched=False, claim=None):
    """What a node does: run each forward, build the sketch from its fp32 outputs. Returns (sketch, wire inputs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        builder, cache, sent = CommitmentBuilder(H, claim or span.precision), span.new_cache(), []
        start, end = layers or (span.start, span.end)
        rng = np.random.default_rng(7)
        for pos, x in steps:
            w = encode_tensor(x, wire)
            xi = torch.from_numpy(decode_tensor(w, H, 4096).astype(np.float32))
            if batched and xi.shape[1] == 1:
                out = decode_batch(span, [xi], [pos], [cache], start, end)[0].numpy()
            else:
                out = span.forward(xi, pos, cache, start, end).numpy()
            if noise:
                out = out + noise * out.std(axis=-1, keepdims=True) * rng.standard_normal(out.shape).astype("f4")
            builder.observe(pos, w, out)
            sent.append((pos, w))
        return builder.sketch(), sent
    finally:
        torch.set_num_threads(before)


def evidence_for(sketch: Sketch, sent, node=None, span=(10, 20)) -> SessionEvidence:
    node = node or Account.create()
    data = sketch.to_bytes()
    tokens = sum(w["s"][1] for _, w in sent)
    receipt = Receipt(
        session_id=bytes(keccak(b"session")),
        buyer=Account.create().address,
        node=node.address,
        model_id=bytes(32),
        span_start=span[0],
        span_end=span[1],
        tokens_in=sent[0][1]["s"][1],
        tokens_out=tokens - sent[0][1]["s"][1],
        price_per_1k=1,
        activation_commitment=bytes(keccak(data)),
        expiry=2**40,
    )
    return SessionEvidence(receipt, receipt.sign(node, RECEIPT_DOMAIN), data, sent)


def test_int8_nodes_are_validated_at_int8(parts, smollm2, tmp_path, int8_kernel_env):
    """The sketch commits to the node's precision: an honest int8 node passes an int8 re-run (and a validator holding
    only fp32 layers calls it unverifiable, never guilty); int8 outputs sold as fp32 fail the fp32 re-run."""
    fp32, int8 = parts[2], SpanModel(smollm2, 10, 20, precision="int8")
    steps = session_inputs(parts, 3)
    sketch, sent = serve(int8, steps)
    assert Sketch.from_bytes(sketch.to_bytes()).precision == "int8"
    evidence = evidence_for(sketch, sent)
    honest = check_session(int8, evidence, RECEIPT_DOMAIN)
    assert honest.outcome == "honest", honest
    assert check_session(fp32, evidence, RECEIPT_DOMAIN).outcome == "unverifiable"
    mislabelled, sent = serve(int8, steps, claim="fp32")  # int8 arithmetic, an fp32 claim (and fp32 prices)
    assert check_session(fp32, evidence_for(mislabelled, sent), RECEIPT_DOMAIN).outcome == "guilty"
    with pytest.raises(CommitmentError, match="precision"):
        CommitmentBuilder(H, "int4")

    # a validator started with fp32 layers loads them at int8 too when a node's sketch says int8
    import json

    from inferchain.trust.evidence import EvidenceStore
    from inferchain.trust.worker import ValidatorWorker

    folder = tmp_path / "evidence"
    folder.mkdir()
    (folder / "int8.json").write_text(json.dumps(evidence.to_json()))
    validator = Validator(Account.create(), VERDICT_DOMAIN, RECEIPT_DOMAIN, sample_rate=1.0)
    worker = ValidatorWorker(validator, fp32, EvidenceStore(tmp_path / "store"), folder, tmp_path / "verdicts")
    report = worker.scan()
    assert report.sampled == 1 and report.outcomes["honest"] == 1, report

    # a validator whose machine lacks the native one-row int8 kernel (models/int8.py) re-runs the node's one-row
    # steps on torch's kernel (bf16 activations): other rounding, still honest
    from inferchain.models.int8 import native_kernel

    int8_kernel_env.setenv("INFERCHAIN_INT8_KERNEL", "torch")
    native_kernel.cache_clear()
    assert native_kernel() is None
    other_kernel = check_session(int8, evidence, RECEIPT_DOMAIN)
    assert other_kernel.outcome == "honest", other_kernel


def test_sketch_size_and_round_trip(parts):
    steps = session_inputs(parts, 0, prompt=32, decode=0)
    sketch, _ = serve(parts[2], steps)
    data = sketch.to_bytes()
    assert len(data) - HEADER_SIZE == 32 * BYTES_PER_TOKEN == 512  # 512 bytes per 32 tokens per span
    again = Sketch.from_bytes(data)
    assert again.to_bytes() == data and again.digest == sketch.digest and len(sketch.digest) == 32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_honest_variations_pass(parts, seed):
    span = parts[2]
    steps = session_inputs(parts, seed)
    for wire in ("f32", "f16"):
        node_sketch, sent = serve(span, steps, wire, threads=2, batched=True)
        ev = evidence_for(node_sketch, sent)
        check = check_session(span, ev, RECEIPT_DOMAIN)  # the validator re-runs one step at a time, 1 thread
        assert check.outcome == "honest", (wire, check)
    # stricter than needed: the node computed from f32 inputs, the validator from f16-rounded ones
    node_sketch, _ = serve(span, steps, "f32", threads=2)
    _, sent16 = serve(span, steps, "f16", threads=1)
    outs = []
    cache = span.new_cache()
    for pos, w in sent16:
        outs.append(span.forward(torch.from_numpy(decode_tensor(w, H, 4096).astype("f4")), pos, cache).numpy())
    assert not compare(node_sketch, np.concatenate(outs, axis=1).reshape(-1, H)).mismatch


@pytest.mark.parametrize(
    "cheat",
    [
        {"noise": 0.01},
        {"noise": 0.05},
        {"noise": 0.2},
        {"layers": (10, 19)},
        {"layers": (11, 20)},
        {"layers": (10, 15)},
        "other",
    ],
)
def test_cheating_fails(parts, cheat):
    steps = session_inputs(parts, 5)
    if cheat == "other":  # another model's weights: layers 20:30 standing in for 10:20
        sketch, sent = serve(parts[3], steps)
    else:
        sketch, sent = serve(parts[2], steps, **cheat)
    check = check_session(parts[2], evidence_for(sketch, sent), RECEIPT_DOMAIN)
    assert check.outcome == "guilty", check


def test_buyer_cannot_frame_a_node_and_guilty_verdicts_are_signed(parts):
    span = parts[2]
    steps = session_inputs(parts, 3)
    sketch, sent = serve(span, steps)
    ev = evidence_for(sketch, sent)
    forged = [(p, w | {"b": bytes(len(w["b"]))}) for p, w in sent]  # inputs the node never received
    framed = SessionEvidence(ev.receipt, ev.node_signature, ev.sketch, forged)
    assert check_session(span, framed, RECEIPT_DOMAIN).outcome == "unverifiable"
    other_sketch = SessionEvidence(ev.receipt, ev.node_signature, serve(span, steps, noise=0.5)[0].to_bytes(), sent)
    assert check_session(span, other_sketch, RECEIPT_DOMAIN).outcome == "unverifiable"  # not what the node signed
    assert SessionEvidence.from_json(ev.to_json()) == ev

    validator = Validator(Account.create(), VERDICT_DOMAIN, RECEIPT_DOMAIN, sample_rate=1.0)
    check, verdict, signature = validator.judge(span, ev)
    assert check.outcome == "honest" and verdict is None
    bad_sketch, bad_sent = serve(span, steps, layers=(10, 18))
    check, verdict, signature = validator.judge(span, evidence_for(bad_sketch, bad_sent))
    assert check.outcome == "guilty" and verdict is not None and signature is not None
    assert verdict.recover(signature, VERDICT_DOMAIN) == validator.address
