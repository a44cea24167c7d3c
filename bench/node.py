"""One node, a 10-layer SmolLM2 span, 1 / 4 / 16 concurrent sessions: aggregate tokens/s and per-session
ms/token, fp32 vs int8 weights, f16 vs i8 wire; plus the quality cost of int8 weights and i8 wire (top-1
agreement with fp32 over a fixed text, teacher-forced). Prints a table; appends JSON lines to
bench/results/node.jsonl.
    python bench/node.py [--steps 24] [--sessions 1 4 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import trio
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)
from transformers import AutoTokenizer

from inferchain.client.remote import RemoteSpan, Timeouts, request_once
from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.models.span import ModelHead, SpanModel
from inferchain.node.launch import local_swarm, threads_per_node
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread
from inferchain.wire import messages as m
from inferchain.wire.tensors import decode_tensor, encode_tensor

# A fixed text for the quality measurements (teacher-forced top-1 agreement with fp32). It is long (251 tokens)
# because a short one measures coarsely: over its first paragraph alone (78 tokens) one token is 1.3 points and
# two positions are near-ties (top-2 logits within 0.011), which any rounding may flip.
TEXT = (
    "The sun is the star at the centre of the Solar System. It is a massive, nearly perfect sphere of hot plasma, "
    "heated to incandescence by nuclear fusion reactions in its core, radiating the energy from its surface "
    "mainly as visible light and infrared radiation. The sun is by far the most important source of energy for "
    "life on Earth, and its gravity holds the planets in their orbits. Water covers about seventy-one percent of "
    "the planet's surface, mostly in oceans, while the rest is land made of continents and islands. The "
    "atmosphere consists mainly of nitrogen and oxygen, and it protects living things from harmful radiation. "
    "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen, a process called "
    "photosynthesis. Animals depend on plants for food, either directly or by eating other animals. In the "
    "history of science, Isaac Newton described the laws of motion and universal gravitation, and later Albert "
    "Einstein showed that space and time are linked. Computers store numbers as bits, and a program is a list of "
    "instructions that tells the machine what to do with them. To bake bread, mix flour, water, salt and yeast, "
    "let the dough rise for an hour, shape it, and bake it in a hot oven until the crust is golden brown."
)
H = 576


def concurrent_decode(host: HostThread, addr: str, model_id: str, sessions: int, steps: int, dtype: str):
    peer = parse_peer_addr(addr)
    remotes = [RemoteSpan(host.host, peer, 0, 10, dtype, Timeouts(step_s=60)) for _ in range(sessions)]  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for i, r in enumerate(remotes):
        host.call(r.open, f"b{i}", model_id, H, 32 + steps + 1)
        host.call(r.forward, rng.standard_normal((1, 32, H)).astype(np.float32), 0)
    step_ms: list[list[float]] = [[] for _ in range(sessions)]

    async def run_all() -> float:
        async def one(i: int) -> None:
            x = rng.standard_normal((1, 1, H)).astype(np.float32)
            for s in range(steps):
                t0 = time.perf_counter()
                x = await remotes[i].forward(x, 32 + s)
                step_ms[i].append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(one, i)
        return time.perf_counter() - t0

    elapsed = host.call(run_all)
    for r in remotes:
        host.call(r.close)
    return sessions * steps / elapsed, float(np.median([np.median(s) for s in step_ms]))


def node_compute(host: HostThread, addr: str) -> tuple[float, float]:
    """(one-token steps, ms of compute in them) the node has served since it started: its own step profile."""
    info = host.call(request_once, host.host, parse_peer_addr(addr), m.InfoRequest(), Timeouts())
    assert isinstance(info, m.NodeInfo)
    return info.step_ms["steps"], info.step_ms["compute"]


def quality(folder: Path) -> dict[str, float]:
    """Top-1 agreement with fp32 (weights and wire) over TEXT: int8 weights; i8 wire between three spans."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(TEXT)["input_ids"]
    head = ModelHead(folder)

    def top1(precision: str, wire: str | None) -> torch.Tensor:
        h = head.embed(ids)
        for a, b in ((0, 10), (10, 20), (20, 30)):
            span = SpanModel(folder, a, b, precision=precision)  # type: ignore[arg-type]
            if wire is not None:
                h = torch.from_numpy(decode_tensor(encode_tensor(h.numpy(), wire), H, 4096).astype(np.float32))  # type: ignore[arg-type]
            h = span.forward(h, 0, span.new_cache())
        return torch.nn.functional.linear(head.norm(h), head.head_weight)[0].argmax(-1)

    ref = top1("fp32", None)
    return {
        "tokens": len(ids),
        "int8_weights_top1_agreement": round((top1("int8", None) == ref).float().mean().item(), 4),
        "f16_wire_top1_agreement": round((top1("fp32", "f16") == ref).float().mean().item(), 4),
        "i8_wire_top1_agreement": round((top1("fp32", "i8") == ref).float().mean().item(), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument(
        "--node-threads",
        type=int,
        default=0,
        help="torch threads of the node (0: its share of the cores beside this load-generating client)",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "node.jsonl"))
    args = ap.parse_args()
    folder = default_model_dir()
    prepare_default_model(folder)
    model_id = ModelHead(folder).info.model_id
    rows = []
    # One client peer drives every session, and a peer may hold 3/4 of a node's slots (session flooding guard):
    # give the node enough slots that the largest run fits in that share.
    slots = str((4 * max(args.sessions) + 2) // 3)
    # This process drives every session (serialising, libp2p) on the same machine: the node gets the cores it
    # leaves, as the local launcher shares cores among co-located processes (two OpenMP threads on two cores
    # beside a busy client stall on each other's barriers).
    node_threads = args.node_threads or threads_per_node(2)
    with tempfile.TemporaryDirectory() as tmp, HostThread(load_or_create_identity(None)) as host:
        for precision in ("fp32", "int8"):
            node_args = ["--precision", precision, "--max-sessions", slots, "--threads", str(node_threads)]
            with local_swarm([(0, 10)], Path(tmp) / precision, folder, node_args) as nodes:
                concurrent_decode(host, nodes[0].addr, model_id, 1, 4, "f16")  # warm-up
                for wire in ("f16", "i8"):
                    for n in args.sessions:
                        before = node_compute(host, nodes[0].addr)
                        tps, ms = concurrent_decode(host, nodes[0].addr, model_id, n, args.steps, wire)
                        after = node_compute(host, nodes[0].addr)
                        rows.append(
                            {
                                "precision": precision,
                                "wire": wire,
                                "sessions": n,
                                "aggregate_tokens_per_s": round(tps, 1),
                                "ms_per_token": round(ms, 2),
                            }
                        )
                        if n == 1:  # the node's own compute per token (its step profile), network excluded
                            steps = after[0] - before[0]
                            rows[-1]["node_compute_ms_per_token"] = round((after[1] - before[1]) / steps, 2)
                        print(
                            f"{precision:>5} {wire:>4} {n:>3} sessions: {tps:8.1f} tok/s aggregate, "
                            f"{ms:7.2f} ms/token per session",
                            flush=True,
                        )
    base = {(r["precision"], r["wire"]): r for r in rows if r["sessions"] == min(args.sessions)}
    for r in rows:
        r["vs_one_session"] = round(
            r["aggregate_tokens_per_s"] / base[(r["precision"], r["wire"])]["aggregate_tokens_per_s"], 2
        )
    q = quality(folder)
    one = {r["precision"]: r["ms_per_token"] for r in rows if r["sessions"] == 1 and r["wire"] == "f16"}
    compute = {
        r["precision"]: r["node_compute_ms_per_token"] for r in rows if r["sessions"] == 1 and r["wire"] == "f16"
    }
    summary = {
        "bench": "node",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "span_layers": 10,
        "steps": args.steps,
        "node_threads": node_threads,
        "rows": rows,
        "int8_speedup_per_token": round(one["fp32"] / one["int8"], 2) if "fp32" in one and "int8" in one else None,
        "int8_compute_speedup_per_token": (
            round(compute["fp32"] / compute["int8"], 2) if "fp32" in compute and "int8" in compute else None
        ),
        **q,
    }
    print(f"\n{'precision':>9} {'wire':>4} {'sessions':>8} {'agg tok/s':>10} {'ms/token':>9} {'x 1 session':>11}")
    for r in rows:
        print(
            f"{r['precision']:>9} {r['wire']:>4} {r['sessions']:>8} {r['aggregate_tokens_per_s']:>10} "
            f"{r['ms_per_token']:>9} {r['vs_one_session']:>11}"
        )
    print(
        f"int8 weights: {summary['int8_speedup_per_token']}x per token (the node's compute alone: "
        f"{summary['int8_compute_speedup_per_token']}x); top-1 agreement "
        f"{q['int8_weights_top1_agreement']:.1%}; i8 wire agreement {q['i8_wire_top1_agreement']:.1%}; "
        f"f16 wire agreement {q['f16_wire_top1_agreement']:.1%} (over {q['tokens']} tokens)"
    )
    write_result(args.out, summary, echo=False)


if __name__ == "__main__":
    main()
