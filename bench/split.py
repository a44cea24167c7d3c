"""What splitting the model costs without the network: the chain's three spans (0:10, 10:20, 20:30) in three bare OS
processes that hand the hidden state over multiprocessing pipes, against the same code in one process. Same
client loop for both (bench/chain.py's `greedy`: ModelHead's embeddings and LM head), one torch thread per
process, runs interleaved.

bench/chain.py measures the real chain (libp2p, Noise + Yamux, the node's server and scheduler); the gap between
the two ratios is what the libp2p processes add over the split itself: their messaging and what it does to the
compute of processes that wait most of each token.

Prints a table and appends a JSON line to bench/results/split.jsonl.
    python bench/split.py [--tokens 48] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import torch
from chain import PROMPT, greedy, in_process  # bench/chain.py: the same prompt and client loop
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)
from transformers import AutoTokenizer

from inferchain.client.generation import chat_prompt
from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.models.span import ModelHead, SpanModel

SPANS = ((0, 10), (10, 20), (20, 30))


def serve(conn: Connection, folder: str, start: int, end: int) -> None:
    """One span's process: `None` starts a new cache; (hidden, position) is answered by (hidden, compute s)."""
    torch.set_num_threads(1)
    span = SpanModel(Path(folder), start, end)
    cache = span.new_cache()
    conn.send("ready")
    while (request := conn.recv()) != "stop":
        if request is None:
            cache = span.new_cache()
            continue
        hidden, position = request
        t0 = time.perf_counter()
        out = span.forward(torch.from_numpy(hidden), position, cache)
        conn.send((out.numpy(), time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "split.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = default_model_dir()
    prepare_default_model(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = chat_prompt(tokenizer, [{"role": "user", "content": PROMPT}])
    head, whole = ModelHead(folder), SpanModel(folder, 0, 30)
    ctx = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    for start, end in SPANS:
        mine, theirs = ctx.Pipe()
        worker = ctx.Process(target=serve, args=(theirs, str(folder), start, end), daemon=True)
        worker.start()
        pipes.append(mine)
        workers.append(worker)
    try:
        for pipe in pipes:
            if not pipe.poll(300):
                raise SystemExit("a span process did not start in 300 s")
            pipe.recv()

        def split(hidden: torch.Tensor, position: int) -> tuple[torch.Tensor, float]:
            x, total = hidden.numpy(), 0.0
            for pipe in pipes:
                pipe.send((x, position))
                x, seconds = pipe.recv()
                total += seconds
            return torch.from_numpy(x), total

        runs: dict[str, list[tuple[float, float, list[int]]]] = {"one process": [], "three processes": []}
        for i in range(args.repeats + 1):  # the first round warms up
            for pipe in pipes:
                pipe.send(None)
            rows = {
                "three processes": greedy(head, split, ids, args.tokens)[1:],
                "one process": greedy(head, in_process(whole), ids, args.tokens)[1:],
            }
            if i:
                for name, row in rows.items():
                    runs[name].append(row)
    finally:
        for pipe, worker in zip(pipes, workers, strict=True):
            if worker.is_alive():
                pipe.send("stop")
            worker.join(10)
    med = {n: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for n, v in runs.items()}
    equal = all(a[2] == b[2] for a, b in zip(runs["one process"], runs["three processes"], strict=True))
    print(f"{'ms per token (median of ' + str(args.repeats) + ')':32}{'decode':>10}{'layers':>10}")
    for name, (decode, compute) in med.items():
        print(f"{name:32}{decode:>10.2f}{compute:>10.2f}")
    ratio = med["one process"][0] / med["three processes"][0]
    compute_ratio = med["three processes"][1] / med["one process"][1]
    print(
        f"three processes / one, tokens/s: {ratio:.3f}x   layers' compute {compute_ratio:.3f}x   greedy equal: {equal}"
    )
    write_result(
        args.out,
        {
            "bench": "split",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "tokens": args.tokens,
            "repeats": args.repeats,
            "one_process_ms_per_token": round(med["one process"][0], 2),
            "three_processes_ms_per_token": round(med["three processes"][0], 2),
            "one_process_layers_ms": round(med["one process"][1], 2),
            "three_processes_layers_ms": round(med["three processes"][1], 2),
            "split_vs_one_process": round(ratio, 3),
            "layers_compute_ratio": round(compute_ratio, 3),
            "greedy_tokens_equal": equal,
        },
    )


if __name__ == "__main__":
    main()
