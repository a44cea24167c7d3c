"""Monolithic generate vs a 3-node chain on loopback: same model, prompt and machine, one run.

Fair comparison: every node process and the monolithic model run with the same torch thread count (--threads,
default 1). The chain computes the same 30 layers, one node at a time, so the ratio measures what the chain adds
per token (three hops, serialisation, scheduling) and not whether one process used more cores than another.

Two monolithic baselines: stock `model.generate` (transformers' model as shipped, fp32 linears on torch's default
BLAS), and the nodes' and client's own code in one process (all 30 layers as one SpanModel: the lean decode step of
models/decode.py, each linear on the kernel timed faster here by models/kernels.py; ModelHead's embeddings and LM
head; greedy). The ratio to the second is what distribution itself costs.

The chain runs twice per repeat, interleaved: relayed (the default: each node pushes its output to the next node,
4 links per token) and star (`relay=False`: the client drives every hop, 6 links per token).

Also prints where one decode step's time goes (client, and per hop: serialisation, the libp2p transport, the
node's queue and thread hand-offs, compute), from the client's and the nodes' own step profiles of the star run
(in a relayed run the client's waits overlap the nodes' work, so they do not split that way). For the relayed
chain, a timeline instead: the nodes run with INFERCHAIN_STEP_TRACE (node/profile.py) and one more relayed
generation lines their stamps up with the client's, segment by segment along a token's path; the monolithic run's
own split (layers, LM head) is beside it.

Prints tables and appends a JSON line to bench/results/chain.jsonl.
    python bench/chain.py [--tokens 64] [--repeats 3] [--wire-dtype f16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)
from transformers import AutoModelForCausalLM, AutoTokenizer

from inferchain.client.generation import SamplingParams, chat_prompt, stream_tokens
from inferchain.client.remote import request_once
from inferchain.client.session import InferenceSession
from inferchain.models.kernels import kernel_for
from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.models.span import ModelHead, SpanModel
from inferchain.node.launch import local_swarm
from inferchain.node.profile import TRACE_ENV
from inferchain.wire import messages as m
from inferchain.wire.framing import HEADER_SIZE
from inferchain.wire.tensors import encode_tensor

PROMPT = "Explain in a few sentences why the sky is blue."


def monolithic(model, ids: list[int], tokens: int) -> tuple[float, float, list[int]]:
    """(prefill s, decode ms/token, generated ids) with model.generate, greedy."""
    x = torch.tensor([ids])
    with torch.inference_mode():
        model.generate(x, max_new_tokens=2, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, do_sample=False, min_new_tokens=1)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(x, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        total = time.perf_counter() - t0
    return prefill, (total - prefill) / (tokens - 1) * 1000, out[0, len(ids) :].tolist()


Forward = Callable[[torch.Tensor, int], tuple[torch.Tensor, float]]  # (hidden, position) -> (hidden, compute s)


def greedy(head: ModelHead, forward: Forward, ids: list[int], tokens: int) -> tuple[float, float, float, list[int]]:
    """(prefill s, decode ms/token, the layers' compute ms/token, generated ids): the client's loop (ModelHead's
    embeddings and LM head, greedy) around `forward`, which runs all the layers."""
    t0 = time.perf_counter()
    hidden, position, out, compute = head.embed(ids), 0, [], 0.0
    for _ in range(tokens):
        last, seconds = forward(hidden, position)
        position += hidden.shape[1]
        out.append(int(head.logits(last).argmax()))
        if len(out) == 1:
            first = time.perf_counter()
        else:
            compute += seconds
        hidden = head.embed([out[-1]])
    per_token = (time.perf_counter() - first) / (tokens - 1) * 1000
    return first - t0, per_token, compute / (tokens - 1) * 1000, out


def in_process(span: SpanModel) -> Forward:
    """`forward` for `greedy` through `span` in this process, on a new cache."""
    cache = span.new_cache()

    def forward(hidden: torch.Tensor, position: int) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        out = span.forward(hidden, position, cache)
        return out, time.perf_counter() - t0

    return forward


def same_code(span: SpanModel, head: ModelHead, ids: list[int], tokens: int) -> tuple[float, float, list[int], float]:
    """(prefill s, decode ms/token, generated ids, the layers' ms/token): the product's own model code without the
    network, greedy."""
    greedy(head, in_process(span), ids, 2)  # warm-up
    prefill, decode, layers, out = greedy(head, in_process(span), ids, tokens)
    return prefill, decode, out, layers


def node_profiles(s: InferenceSession) -> list[dict[str, float]]:
    """Each hop's node step profile (totals since the node started), asked on a stream of its own."""
    out = []
    for hop in s.chain.hops:
        remote = hop.remote
        info = s.host.call(request_once, remote.host, remote.peer, m.InfoRequest(), remote.timeouts)
        assert isinstance(info, m.NodeInfo)
        out.append(dict(info.step_ms))
    return out


def breakdown(
    decode_ms: float, clients: list[dict[str, float]], before: list[dict[str, float]], after: list[dict[str, float]]
) -> dict[str, float]:
    """ms per token: where one decode step of the whole chain goes."""
    row = dict.fromkeys(("compute", "queue+resume", "serialise", "libp2p+transport", "client"), 0.0)
    for client, b, a in zip(clients, before, after, strict=True):
        steps = client["steps"]
        node = {k: (a[k] - b.get(k, 0.0)) / max(1.0, a["steps"] - b.get("steps", 0.0)) for k in a if k != "steps"}
        row["compute"] += node["compute"]
        row["queue+resume"] += node["queue"] + node["resume"]
        client_codec = (client["serialise"] + client["deserialise"]) / steps
        row["serialise"] += node["deserialise"] + node["serialise"] + client_codec
        node_total = sum(node.values())
        row["libp2p+transport"] += client["exchange"] / steps - node_total + node["send"]
    row["client"] = decode_ms - sum(row.values())  # embeddings, LM head, argmax, thread hand-off to the host
    return {k: round(v, 3) for k, v in row.items()}


def chained(head: ModelHead, tokenizer, peers: list[str], ids: list[int], tokens: int, dtype: str, relay: bool):
    """The product's own path: `stream_tokens`, greedy, `tokens` tokens (past EOS, as the monolithic run)."""
    params = SamplingParams(max_tokens=tokens, ignore_eos=True)
    max_length = len(ids) + tokens + 1
    with InferenceSession(head, peers, max_length=max_length, wire_dtype=dtype, relay=relay) as s:  # type: ignore[arg-type]
        before = node_profiles(s)
        out, stamps = [], []
        t0 = time.perf_counter()
        for chunk in stream_tokens(s, tokenizer, ids, params):
            if chunk.token_id >= 0:
                out.append(chunk.token_id)
                stamps.append(time.perf_counter())
        prefill = stamps[0] - t0
        decode = (stamps[-1] - stamps[0]) / (tokens - 1) * 1000
        after = node_profiles(s)
        per_hop = [(h.remote.step_bytes[0] / (tokens - 1), h.remote.step_bytes[1] / (tokens - 1)) for h in s.chain.hops]
        where = breakdown(decode, [dict(h.remote.step_ms) for h in s.chain.hops], before, after)
        relayed = sum(h.remote.relayed_steps for h in s.chain.hops)
        if relay and relayed < (len(s.chain.hops) - 1) * tokens:
            raise SystemExit(f"relay asked for but only {relayed} steps came by relay")
    return prefill, decode, out, per_hop, where, node_phases(before, after)


def node_phases(before: list[dict[str, float]], after: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per node, ms per one-token step in each phase of its step profile (what the nodes' own stamps say, so it
    holds for relayed and star runs alike; in a relayed run `serialise` includes the push to the next node)."""
    out = []
    for b, a in zip(before, after, strict=True):
        steps = max(1.0, a["steps"] - b.get("steps", 0.0))
        out.append({k: (a[k] - b.get(k, 0.0)) / steps for k in a if k != "steps"})
    return out


def timeline(head: ModelHead, peers: list[str], ids: list[int], tokens: int, dtype: str, trace: Path) -> dict:
    """ms per token along a relayed decode step's path (medians): the client's stamps around each `step` and the
    nodes' trace lines (INFERCHAIN_STEP_TRACE, same clock on one machine) of this session. A node stamps a push
    when its send returns, which on a loaded host can be after the next node read it: a push and its link then
    split their time differently (the link's median may even go below zero), while their sum and the total hold."""
    session_id = "timeline-" + secrets.token_hex(8)
    stamps = []
    wire: Any = dtype
    with InferenceSession(head, peers, max_length=len(ids) + tokens + 1, wire_dtype=wire, session_id=session_id) as s:
        token = int(s.step(ids).argmax())
        for _ in range(tokens - 1):
            position, t0 = s.position, time.perf_counter()
            token = int(s.step([token]).argmax())
            stamps.append((position, t0, time.perf_counter()))
        spans = [(h.start, h.end) for h in s.chain.hops]
    steps: dict[tuple[int, int], list[float]] = {}
    for line in trace.read_text().splitlines():
        fields = line.split()
        if fields[0] == session_id:
            steps[(int(fields[1]), int(fields[3]))] = [float(v) for v in fields[4:]]
    segments: dict[str, list[float]] = {}
    for position, t0, t1 in stamps[2:]:  # the first steps warm the session's caches
        nodes = [steps.get((start, position)) for start, _ in spans]
        if any(n is None or (n[4] == 0.0 and i < len(nodes) - 1) for i, n in enumerate(nodes)):
            continue  # a node's line is missing, or this step was not relayed
        # Stamps in path order; each names the segment that starts there.
        points = [("client: embed, hand-off, encode, send, transfer", t0)]
        for i, ((start, end), n) in enumerate(zip(spans, nodes, strict=True)):
            assert n is not None
            received, _decoded, compute_start, compute_end, pushed, sent = n
            name = f"{start}:{end}"
            points += [(f"{name} decode, checks, queue", received), (f"{name} compute", compute_start)]
            if i < len(spans) - 1:
                onward = f"{spans[i + 1][0]}:{spans[i + 1][1]}"
                points += [(f"{name} encode, push", compute_end), (f"link {name} -> {onward}: transfer", pushed)]
            else:
                points += [(f"{name} encode, answer", compute_end), ("client: transfer, decode, LM head", sent)]
        for (name, begin), end_t in zip(points, [t for _, t in points[1:]] + [t1], strict=True):
            segments.setdefault(name, []).append((end_t - begin) * 1000)
    if not segments:
        raise SystemExit("no node trace lines matched the timeline session (INFERCHAIN_STEP_TRACE not honoured?)")
    out = {name: round(statistics.median(v), 2) for name, v in segments.items()}
    out["total"] = round(statistics.median((t1 - t0) * 1000 for _, t0, t1 in stamps[2:]), 2)
    return out


def push_bytes(hidden_size: int, dtype: str) -> int:
    """Framed bytes of one relayed one-token step (node to node), as the nodes encode it."""
    wire = encode_tensor(np.zeros((1, 1, hidden_size), np.float32), dtype)  # type: ignore[arg-type]
    return HEADER_SIZE + len(m.encode(m.Push(key=bytes(32), pos=100, x=wire)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wire-dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every node and of the monolithic run")
    ap.add_argument("--node-env", action="append", default=[], help="KEY=VALUE for the node processes")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "chain.jsonl"))
    args = ap.parse_args()

    node_env = dict(kv.split("=", 1) for kv in args.node_env)
    torch.set_num_threads(args.threads)
    folder = default_model_dir()
    prepare_default_model(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = chat_prompt(tok, [{"role": "user", "content": PROMPT}])
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    head = ModelHead(folder)
    whole = SpanModel(folder, 0, head.info.num_layers)  # all layers, as the nodes run theirs
    lean = whole._decode[0] if whole._decode else None
    fused = {"qkv": lean.qkv, "gate_up": lean.gate_up} if lean is not None else {}
    shapes = {name: mod for name, mod in whole.layers[0].named_modules() if hasattr(mod, "in_features")} | fused
    kernels = {name: kernel_for(mod.weight) for name, mod in shapes.items() if mod is not None}
    kernels["lm_head"] = kernel_for(head.head_weight, rows=(1,))
    print("linear kernels here (each node times its own):", kernels)
    mono, mono_same, chain, star, timelines = [], [], [], [], []
    tmp = tempfile.TemporaryDirectory()
    trace = Path(tmp.name) / "steps.txt"
    with (
        tmp,
        local_swarm(
            [(0, 10), (10, 20), (20, 30)],
            Path(tmp.name),
            folder,
            ["--threads", str(args.threads)],
            node_env | {TRACE_ENV: str(trace)},
        ) as nodes,
    ):
        peers = [n.addr for n in nodes]
        for relay in (True, False):  # warm-up: connections (client-node and node-node), allocator
            chained(head, tok, peers, ids, 4, args.wire_dtype, relay)
        for _ in range(args.repeats):  # interleave, so that machine noise hits all alike
            mono.append(monolithic(model, ids, args.tokens))
            mono_same.append(same_code(whole, head, ids, args.tokens))
            chain.append(chained(head, tok, peers, ids, args.tokens, args.wire_dtype, True))
            star.append(chained(head, tok, peers, ids, args.tokens, args.wire_dtype, False))
            timelines.append(timeline(head, peers, ids, args.tokens, args.wire_dtype, trace))
    m_prefill = statistics.median(r[0] for r in mono)
    m_decode = statistics.median(r[1] for r in mono)
    s_decode = statistics.median(r[1] for r in mono_same)
    s_layers = statistics.median(r[3] for r in mono_same)
    path = {k: round(statistics.median(t[k] for t in timelines if k in t), 2) for k in timelines[0]}
    c_prefill = statistics.median(r[0] for r in chain)
    c_decode = statistics.median(r[1] for r in chain)
    star_decode = statistics.median(r[1] for r in star)
    same = all(c[2] == mono[0][2] for c in chain + star + mono_same)
    per_hop = star[-1][3]  # the star run sends every hop's input from the client: all 3 links measured
    where = {k: round(statistics.median(c[4][k] for c in star), 2) for k in star[0][4]}
    sent = max(h[0] for h in per_hop)
    received = max(max(h[1] for h in c[3]) for c in (chain[-1], star[-1]))
    pushed = push_bytes(head.info.hidden_size, args.wire_dtype)
    phases = {
        name: [
            {k: round(statistics.median(c[5][i][k] for c in runs), 2) for k in runs[0][5][i]}
            for i in range(len(runs[0][5]))
        ]
        for name, runs in (("relay", chain), ("star", star))
    }
    result = {
        "bench": "chain",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "torch_threads": torch.get_num_threads(),
        "prompt_tokens": len(ids),
        "tokens": args.tokens,
        "wire_dtype": args.wire_dtype,
        "node_env": node_env,
        "linear_kernels": kernels,
        "mono_prefill_ms": round(m_prefill * 1000, 1),
        "chain_prefill_ms": round(c_prefill * 1000, 1),
        "mono_decode_ms_per_token": round(m_decode, 2),
        "chain_decode_ms_per_token": round(c_decode, 2),
        "mono_tokens_per_s": round(1000 / m_decode, 2),
        "chain_tokens_per_s": round(1000 / c_decode, 2),
        "chain_vs_mono": round(m_decode / c_decode, 3),
        "mono_same_code_decode_ms_per_token": round(s_decode, 2),
        "chain_vs_mono_same_code": round(s_decode / c_decode, 3),
        "star_decode_ms_per_token": round(star_decode, 2),
        "star_vs_mono": round(m_decode / star_decode, 3),
        "star_vs_mono_same_code": round(s_decode / star_decode, 3),
        "relay_vs_star": round(star_decode / c_decode, 3),
        "bytes_per_token_per_hop_sent": round(sent, 1),
        "bytes_per_token_relayed": pushed,
        "bytes_per_token_per_hop_received": round(received, 1),
        "greedy_tokens_equal": same,
        "decode_ms_per_token_breakdown": where,
        "node_step_ms": phases,  # per node (0:10, 10:20, 20:30), median over repeats
        "relayed_path_ms": path,  # one relayed decode step along its path, segment by segment (median per segment)
        "mono_same_code_layers_ms": round(s_layers, 2),
        "mono_same_code_head_ms": round(s_decode - s_layers, 2),  # embeddings, LM head, argmax
    }
    print(f"{'':28}{'monolithic':>12}{'3-node chain':>14}")
    print(f"{'prefill ms':28}{result['mono_prefill_ms']:>12}{result['chain_prefill_ms']:>14}")
    print(f"{'decode ms/token':28}{result['mono_decode_ms_per_token']:>12}{result['chain_decode_ms_per_token']:>14}")
    print(f"{'tokens/s':28}{result['mono_tokens_per_s']:>12}{result['chain_tokens_per_s']:>14}")
    print(f"chain / monolithic tokens/s: {result['chain_vs_mono']}x   greedy tokens equal: {same}")
    print(
        f"monolithic with the nodes' own code (one process): {s_decode:.2f} ms/token; chain / that: "
        f"{result['chain_vs_mono_same_code']}x (what distribution itself costs)"
    )
    print(
        f"star chain (the client drives every hop): {star_decode:.2f} ms/token, {result['star_vs_mono']}x of stock, "
        f"{result['star_vs_mono_same_code']}x like for like; relay / star tokens/s: {result['relay_vs_star']}x"
    )
    print(f"bytes per token per hop: {sent:.0f} sent, {received:.0f} received, {pushed} relayed (framed messages)")
    print(f"\nwhere one star-chain decode step goes (ms per token, 3 hops, median of {args.repeats} runs):")
    for k, v in where.items():
        print(f"  {k:22}{v:>8.2f}")
    print(f"  {'monolithic compute':22}{m_decode:>8.2f}")
    print("\neach node's one-token step (ms, its own stamps), relayed vs star:")
    for i, (r, st) in enumerate(zip(phases["relay"], phases["star"], strict=True)):
        print(f"  node {i}: " + ", ".join(f"{k} {r[k]:.2f}/{st[k]:.2f}" for k in r))
    print(f"\none relayed decode step along its path (ms, median of {args.repeats} runs, each segment's median):")
    for k, v in path.items():
        print(f"  {k:56}{v:>8.2f}")
    compute = sum(v for k, v in path.items() if k.endswith(" compute"))
    print(
        f"  the chain's layers {compute:.2f} ms, the monolithic run's own {s_layers:.2f}; the monolithic run's "
        f"embeddings + LM head + argmax {s_decode - s_layers:.2f}"
    )
    write_result(args.out, result)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
