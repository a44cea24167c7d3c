"""What a pause costs the next forward pass, in one process: a decode step of SmolLM2 layers 0:10 (the kernels a
node picks, one torch thread) run right after another step, and after the process paused 40 ms, asleep or
spinning. In a 3-node chain every node pauses about two thirds of each token while the others and the client
compute; a monolithic model runs its layers back to back. The gap between the columns is the part of the chain's
extra compute that no change to the messaging can take away.

Prints the medians and appends a JSON line to bench/results/pause.jsonl.
    python bench/pause.py [--rounds 60] [--pause-ms 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)

from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.models.span import SpanModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--pause-ms", type=float, default=40.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pause.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = default_model_dir()
    prepare_default_model(folder)
    span = SpanModel(folder, 0, 10)
    cache = span.new_cache()
    gen = torch.Generator().manual_seed(0)
    span.forward(torch.randn(1, 8, span.info.hidden_size, generator=gen), 0, cache)
    position = 8

    def step() -> float:
        nonlocal position
        hidden = torch.randn(1, 1, span.info.hidden_size, generator=gen)
        started = time.perf_counter()
        span.forward(hidden, position, cache)
        position += 1
        return (time.perf_counter() - started) * 1000

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    pause = args.pause_ms / 1000
    kinds = {
        "back to back": lambda: None,
        "after a sleep": lambda: time.sleep(pause),
        "after a spin": lambda: spin(pause),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):  # interleaved, each measured step right after an unmeasured one
        for kind, wait in kinds.items():
            step()
            wait()
            times[kind].append(step())
    medians = {k: round(statistics.median(v), 3) for k, v in times.items()}
    base = medians["back to back"]
    print(f"10-layer decode step, median of {args.rounds} (pause {args.pause_ms:g} ms):")
    for kind, ms in medians.items():
        print(f"  {kind:14} {ms:8.2f} ms   {ms / base:5.3f}x")
    write_result(
        args.out,
        {
            "bench": "pause",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "layers": 10,
            "pause_ms": args.pause_ms,
            "rounds": args.rounds,
            "step_ms": medians,
            "after_sleep_vs_back_to_back": round(medians["after a sleep"] / base, 3),
            "after_spin_vs_back_to_back": round(medians["after a spin"] / base, 3),
        },
    )


if __name__ == "__main__":
    main()
