"""Monolithic generate vs a 3-node chain on loopback: same model, prompt and machine, one run.

Prints a table and appends a JSON line to bench/results/chain.jsonl.
    python bench/chain.py [--tokens 64] [--repeats 3] [--wire-dtype f16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inferchain.client.generation import chat_prompt
from inferchain.client.session import InferenceSession
from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.models.span import ModelHead
from inferchain.node.launch import local_swarm

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


def chained(head: ModelHead, peers: list[str], ids: list[int], tokens: int, dtype: str):
    with InferenceSession(head, peers, max_length=len(ids) + tokens + 1, wire_dtype=dtype) as s:  # type: ignore[arg-type]
        t0 = time.perf_counter()
        logits = s.step(ids)
        prefill = time.perf_counter() - t0
        out = [int(logits.argmax())]
        sent0 = [h.remote.wire_bytes() for h in s.chain.hops]
        t0 = time.perf_counter()
        for _ in range(tokens - 1):
            out.append(int(s.step([out[-1]]).argmax()))
        decode = (time.perf_counter() - t0) / (tokens - 1) * 1000
        sent1 = [h.remote.wire_bytes() for h in s.chain.hops]
        per_hop = [
            ((b[0] - a[0]) / (tokens - 1), (b[1] - a[1]) / (tokens - 1)) for a, b in zip(sent0, sent1, strict=True)
        ]
    return prefill, decode, out, per_hop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wire-dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--node-env", action="append", default=[], help="KEY=VALUE for the node processes")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "chain.jsonl"))
    args = ap.parse_args()

    node_env = dict(kv.split("=", 1) for kv in args.node_env)
    folder = default_model_dir()
    prepare_default_model(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = chat_prompt(tok, [{"role": "user", "content": PROMPT}])
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    head = ModelHead(folder)
    mono, chain = [], []
    with tempfile.TemporaryDirectory() as tmp, local_swarm([(0, 10), (10, 20), (20, 30)], Path(tmp), folder) as nodes:
        peers = [n.addr for n in nodes]
        chained(head, peers, ids, 4, args.wire_dtype)  # warm-up: connections, allocator
        for _ in range(args.repeats):  # interleave, so that machine noise hits both alike
            mono.append(monolithic(model, ids, args.tokens))
            chain.append(chained(head, peers, ids, args.tokens, args.wire_dtype))
    m_prefill = statistics.median(r[0] for r in mono)
    m_decode = statistics.median(r[1] for r in mono)
    c_prefill = statistics.median(r[0] for r in chain)
    c_decode = statistics.median(r[1] for r in chain)
    same = all(c[2] == mono[0][2] for c in chain)
    per_hop = chain[-1][3]
    sent = max(h[0] for h in per_hop)
    received = max(h[1] for h in per_hop)
    result = {
        "bench": "chain",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "torch_threads": torch.get_num_threads(),
        "prompt_tokens": len(ids),
        "tokens": args.tokens,
        "wire_dtype": args.wire_dtype,
        "node_env": node_env,
        "mono_prefill_ms": round(m_prefill * 1000, 1),
        "chain_prefill_ms": round(c_prefill * 1000, 1),
        "mono_decode_ms_per_token": round(m_decode, 2),
        "chain_decode_ms_per_token": round(c_decode, 2),
        "mono_tokens_per_s": round(1000 / m_decode, 2),
        "chain_tokens_per_s": round(1000 / c_decode, 2),
        "chain_vs_mono": round(m_decode / c_decode, 3),
        "bytes_per_token_per_hop_sent": round(sent, 1),
        "bytes_per_token_per_hop_received": round(received, 1),
        "greedy_tokens_equal": same,
    }
    print(f"{'':28}{'monolithic':>12}{'3-node chain':>14}")
    print(f"{'prefill ms':28}{result['mono_prefill_ms']:>12}{result['chain_prefill_ms']:>14}")
    print(f"{'decode ms/token':28}{result['mono_decode_ms_per_token']:>12}{result['chain_decode_ms_per_token']:>14}")
    print(f"{'tokens/s':28}{result['mono_tokens_per_s']:>12}{result['chain_tokens_per_s']:>14}")
    print(f"chain / monolithic tokens/s: {result['chain_vs_mono']}x   greedy tokens equal: {same}")
    print(f"bytes per token per hop: {sent:.0f} sent, {received:.0f} received (framed messages)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
