"""Validator detection: detection rate and false-positive rate over N sessions at a sampling rate, the detection
limit for small noise, and the expected detection delay (sessions served before the first sampled, detected
cheat) as a function of the sampling rate.

Sessions run in process through one span of the default model (each a random prompt + decode steps). Node kinds:

- honest, with the variation honest hardware brings: f32 or f16 wire, 1 or 2 torch threads, batched or single
  decode steps (cycled per session); the validator re-runs one step at a time;
- noise of S x the output std (S = 0.005, 0.01, 0.02, 0.05), one skipped layer, other weights (the next span's
  layers standing in for this one's).

Each of `--sessions` sessions per kind is sampled with probability `--rate`; sampled ones are judged by
`check_session`. Per kind the line holds the sampled count, how many were judged guilty, and the median token
error's range (what the tolerance separates). Detection delay at rate r is 1 / (r x p), p the kind's detection
rate per sampled session.

    PYTHONPATH=. python bench/trust.py --sessions 200 --rate 0.1
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account

from inferchain.models.prepare import default_model_dir
from inferchain.models.span import ModelHead, SpanModel
from inferchain.trust.validator import check_session

RESULTS = Path(__file__).parent / "results" / "trust.jsonl"
RATES = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200, help="sessions per node kind")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--layers", default="10:20")
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--decode", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only, do not append to bench/results")
    args = ap.parse_args()
    import tests.test_trust_commitment as t  # the same node simulation the tests use

    path = default_model_dir()
    start, end = (int(x) for x in args.layers.split(":"))
    width = end - start
    head, first = ModelHead(path), SpanModel(path, 0, start)
    span = SpanModel(path, start, end)
    other = SpanModel(path, end, min(end + width, head.info.num_layers))
    if other.end - other.start != width:
        raise SystemExit(f"--layers {args.layers}: no following span of the same width for the other-weights node")
    parts = (head, first, span, other)
    honest_variants = [
        {"wire": "f32", "threads": 1, "batched": False},
        {"wire": "f16", "threads": 2, "batched": True},
        {"wire": "f16", "threads": 1, "batched": False},
        {"wire": "f32", "threads": 2, "batched": True},
    ]
    kinds: dict[str, Callable[[Any, int], Any]] = {
        "honest": lambda steps, i: t.serve(span, steps, **honest_variants[i % len(honest_variants)]),
        **{
            f"noise_{s}": partial(lambda steps, i, s: t.serve(span, steps, noise=s), s=s)
            for s in (0.005, 0.01, 0.02, 0.05)
        },
        "skip_1": lambda steps, i: t.serve(span, steps, layers=(start, end - 1)),
        "other_weights": lambda steps, i: t.serve(other, steps),
    }
    rng = np.random.default_rng(args.seed)
    node = Account.create()
    results: dict[str, dict[str, Any]] = {}
    began = time.time()
    for kind, run in kinds.items():
        sampled = guilty = 0
        medians: list[float] = []
        for _ in range(args.sessions):
            if rng.random() >= args.rate:
                continue
            steps = t.session_inputs(parts, int(rng.integers(1 << 30)), prompt=args.prompt, decode=args.decode)
            sketch, sent = run(steps, sampled)
            sampled += 1
            ev = t.evidence_for(sketch, sent, node, span=(start, end))
            check = check_session(span, ev, t.RECEIPT_DOMAIN)
            guilty += check.outcome == "guilty"
            if check.comparison is not None:
                medians.append(check.comparison.median_error)
        rate = guilty / sampled if sampled else float("nan")
        results[kind] = {
            "sessions": args.sessions,
            "sampled": sampled,
            "guilty": guilty,
            "guilty_rate": round(rate, 4),
            "median_error_min": round(min(medians), 5) if medians else None,
            "median_error_max": round(max(medians), 5) if medians else None,
        }
        print(
            f"{kind:14s} sessions {args.sessions}  sampled {sampled:3d}  judged guilty {guilty:3d} ({rate:.3f})  "
            f"median token error {results[kind]['median_error_min']}..{results[kind]['median_error_max']}",
            flush=True,
        )
    delays: dict[str, dict[str, float | None]] = {}
    for kind, v in results.items():
        if kind == "honest":
            continue
        p = v["guilty_rate"]
        delays[kind] = {str(r): (round(1 / (r * p), 1) if p and p > 0 else None) for r in RATES}
    print("expected sessions a cheater serves until caught, 1 / (rate x detection):")
    for kind, d in delays.items():
        print(f"  {kind:14s} " + "  ".join(f"{r}: {x}" for r, x in d.items()))
    line = {
        "bench": "trust",
        "layers": args.layers,
        "rate": args.rate,
        "tokens_per_session": args.prompt + args.decode,
        "results": results,
        "false_positive_rate": results["honest"]["guilty_rate"],
        "expected_detection_delay_sessions": delays,
        "seconds": round(time.time() - began, 1),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(line))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
