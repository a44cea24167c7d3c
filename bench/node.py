"""One node, a 10-layer SmolLM2 span, 1 / 4 / 16 concurrent sessions: aggregate tokens/s and per-session
ms/token, fp32 vs int8 weights, f16 vs i8 wire; plus the quality cost of int8 weights and i8 wire (top-1
agreement with fp32 over a fixed text, teacher-forced; int8 both as one prompt and token by token, as decode
steps compute it). Both nodes run at once and every configuration is measured once per round; the table gives
medians over the rounds, each ratio taken within a round. Prints a table (and each round's ratios); appends JSON
lines to bench/results/node.jsonl.
    python bench/node.py [--steps 48] [--sessions 1 4 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import trio
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)
from transformers import AutoTokenizer

from inferchain.client.remote import RemoteSpan, Timeouts, request_once
from inferchain.models.int8 import native_kernel
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
    """Top-1 agreement with fp32 (weights and wire) over TEXT: int8 weights, the text as one prompt (several rows
    per matmul: torch's int8 kernel) and fed one token at a time (decode steps, one row: the native kernel, see
    models/int8.py); i8 wire between three spans."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(TEXT)["input_ids"]
    head = ModelHead(folder)
    bounds = ((0, 10), (10, 20), (20, 30))

    def top1(h: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(head.norm(h), head.head_weight)[0].argmax(-1)

    def prompt(precision: str, wire: str | None) -> torch.Tensor:
        h = head.embed(ids)
        for a, b in bounds:
            span = SpanModel(folder, a, b, precision=precision)  # type: ignore[arg-type]
            if wire is not None:
                h = torch.from_numpy(decode_tensor(encode_tensor(h.numpy(), wire), H, 4096).astype(np.float32))  # type: ignore[arg-type]
            h = span.forward(h, 0, span.new_cache())
        return top1(h)

    def decode(precision: str) -> torch.Tensor:
        spans = [SpanModel(folder, a, b, precision=precision) for a, b in bounds]  # type: ignore[arg-type]
        caches = [span.new_cache(len(ids)) for span in spans]
        embedded, out = head.embed(ids), []
        for pos in range(len(ids)):
            h = embedded[:, pos : pos + 1]
            for span, cache in zip(spans, caches, strict=True):
                h = span.forward(h, pos, cache)
            out.append(h)
        return top1(torch.cat(out, dim=1))

    ref = prompt("fp32", None)

    def agreement(top: torch.Tensor) -> float:
        return round((top == ref).float().mean().item(), 4)

    return {
        "tokens": len(ids),
        "int8_weights_top1_agreement": agreement(prompt("int8", None)),
        "int8_weights_top1_agreement_decode": agreement(decode("int8")),
        "fp32_decode_top1_agreement": agreement(decode("fp32")),
        "f16_wire_top1_agreement": agreement(prompt("fp32", "f16")),
        "i8_wire_top1_agreement": agreement(prompt("fp32", "i8")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=48, help="decode steps per session per configuration and round")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=3, help="every configuration once per round; medians reported")
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
    # One client peer drives every session, and a peer may hold 3/4 of a node's slots (session flooding guard):
    # give the node enough slots that the largest run fits in that share.
    slots = str((4 * max(args.sessions) + 2) // 3)
    # This process drives every session (serialising, libp2p) on the same machine: the node gets the cores it
    # leaves, as the local launcher shares cores among co-located processes (two OpenMP threads on two cores
    # beside a busy client stall on each other's barriers).
    node_threads = args.node_threads or threads_per_node(2)
    # Both nodes (fp32, int8) run at once, one of them busy at a time, and every configuration is measured once
    # per round, the rounds one after another: a noisy host then drifts across all configurations alike, and each
    # ratio (16 vs 1 sessions, int8 vs fp32) is taken within a round, then its median over the rounds reported.
    configs = [(p, w, n) for w in ("f16", "i8") for n in args.sessions for p in ("fp32", "int8")]
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {c: [] for c in configs}
    one = min(args.sessions)
    with tempfile.TemporaryDirectory() as tmp, HostThread(load_or_create_identity(None)) as host, ExitStack() as stack:
        addr = {}
        for precision in ("fp32", "int8"):
            node_args = ["--precision", precision, "--max-sessions", slots, "--threads", str(node_threads)]
            nodes = stack.enter_context(local_swarm([(0, 10)], Path(tmp) / precision, folder, node_args))
            addr[precision] = nodes[0].addr
            concurrent_decode(host, addr[precision], model_id, 1, 4, "f16")  # warm-up
        for r in range(args.rounds):
            for precision, wire, n in configs:
                before = node_compute(host, addr[precision])
                tps, ms = concurrent_decode(host, addr[precision], model_id, n, args.steps, wire)
                after = node_compute(host, addr[precision])
                run = {"tokens_per_s": tps, "ms_per_token": ms}
                if n == one:  # the node's own compute per token (its step profile), network excluded
                    run["compute_ms"] = (after[1] - before[1]) / (after[0] - before[0])
                runs[(precision, wire, n)].append(run)
                print(
                    f"round {r + 1}: {precision:>5} {wire:>4} {n:>3} sessions: {tps:8.1f} tok/s aggregate, "
                    f"{ms:7.2f} ms/token per session",
                    flush=True,
                )

    def per_round(a: tuple[str, str, int], b: tuple[str, str, int], key: str) -> list[float]:
        """a's figure / b's in each round (the two measured a few seconds apart)."""
        return [round(x[key] / y[key], 2) for x, y in zip(runs[a], runs[b], strict=True)]

    def ratio(a: tuple[str, str, int], b: tuple[str, str, int], key: str) -> float:
        """The median over the rounds of per_round."""
        return round(float(np.median(per_round(a, b, key))), 2)

    rows = []
    for precision, wire, n in configs:
        got = runs[(precision, wire, n)]
        row: dict[str, object] = {
            "precision": precision,
            "wire": wire,
            "sessions": n,
            "aggregate_tokens_per_s": round(float(np.median([g["tokens_per_s"] for g in got])), 1),
            "ms_per_token": round(float(np.median([g["ms_per_token"] for g in got])), 2),
            "vs_one_session": ratio((precision, wire, n), (precision, wire, one), "tokens_per_s"),
            "vs_one_session_rounds": per_round((precision, wire, n), (precision, wire, one), "tokens_per_s"),
        }
        if n == one:
            row["node_compute_ms_per_token"] = round(float(np.median([g["compute_ms"] for g in got])), 2)
        rows.append(row)
    q = quality(folder)
    summary = {
        "bench": "node",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "span_layers": 10,
        "steps": args.steps,
        "node_threads": node_threads,
        "rows": rows,
        "rounds": args.rounds,
        # per round: fp32's ms per token / int8's, one session, f16 wire; the median of the rounds
        "int8_speedup_per_token": ratio(("fp32", "f16", one), ("int8", "f16", one), "ms_per_token"),
        "int8_speedup_per_token_rounds": per_round(("fp32", "f16", one), ("int8", "f16", one), "ms_per_token"),
        "int8_compute_speedup_per_token": ratio(("fp32", "f16", one), ("int8", "f16", one), "compute_ms"),
        "int8_one_row_kernel": "native" if native_kernel() is not None else "torch",  # models/int8.py
        **q,
    }
    print(f"\n{'precision':>9} {'wire':>4} {'sessions':>8} {'agg tok/s':>10} {'ms/token':>9} {'x 1 session':>11}")
    for r in rows:
        print(
            f"{r['precision']:>9} {r['wire']:>4} {r['sessions']:>8} {r['aggregate_tokens_per_s']:>10} "
            f"{r['ms_per_token']:>9} {r['vs_one_session']:>11}"
        )
    print(
        "x 1 session per round: "
        + "; ".join(
            f"{r['precision']} {r['wire']} {r['sessions']}: {r['vs_one_session_rounds']}"
            for r in rows
            if r["sessions"] != one
        )
    )
    print(
        f"int8 weights: {summary['int8_speedup_per_token']}x per token "
        f"(rounds: {summary['int8_speedup_per_token_rounds']}; the node's compute alone: "
        f"{summary['int8_compute_speedup_per_token']}x); top-1 agreement "
        f"{q['int8_weights_top1_agreement']:.1%} as a prompt, {q['int8_weights_top1_agreement_decode']:.1%} token by "
        f"token (fp32 token by token: {q['fp32_decode_top1_agreement']:.1%}); "
        f"i8 wire agreement {q['i8_wire_top1_agreement']:.1%}; "
        f"f16 wire agreement {q['f16_wire_top1_agreement']:.1%} (over {q['tokens']} tokens)"
    )
    write_result(args.out, summary, echo=False)


if __name__ == "__main__":
    main()
