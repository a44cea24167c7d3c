"""Validator detection: detection rate and false-positive rate over N sessions at a sampling rate, and the
expected detection delay (sessions served before the first sampled, detected cheat) vs sampling rate.

Sessions run in process through one span of the default model (each a random prompt + decode steps), as an honest
node (f16 or f32 wire, 1 or 2 threads, batched decode) or a cheating one (noise, skipped layer, other weights).
A validator samples each session with probability `--rate` and re-runs the sampled ones.

    python bench/trust.py --sessions 200 --rate 0.1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from eth_account import Account

from inferchain.models.prepare import default_model_dir
from inferchain.models.span import ModelHead, SpanModel
from inferchain.trust.validator import check_session


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200, help="sessions per node kind")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--layers", default="10:13")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import tests.test_trust_commitment as t  # the same node simulation the tests use

    path = default_model_dir()
    start, end = (int(x) for x in args.layers.split(":"))
    head, first = ModelHead(path), SpanModel(path, 0, start)
    span, other = SpanModel(path, start, end), SpanModel(path, end, end + (end - start))
    parts = (head, first, span, other)
    kinds = {
        "honest": lambda steps, i: t.serve(span, steps, "f16" if i % 2 else "f32", threads=1 + i % 2, batched=True),
        "noise_0.05": lambda steps, i: t.serve(span, steps, noise=0.05),
        "skip_1": lambda steps, i: t.serve(span, steps, layers=(start, end - 1)),
        "other_weights": lambda steps, i: t.serve(other, steps),
    }
    rng = np.random.default_rng(args.seed)
    node = Account.create()
    results: dict[str, dict[str, float]] = {}
    began = time.time()
    for kind, run in kinds.items():
        sampled = guilty = 0
        for i in range(args.sessions):
            if rng.random() >= args.rate:
                continue
            steps = t.session_inputs(parts, int(rng.integers(1 << 30)), prompt=8, decode=4)
            sketch, sent = run(steps, i)
            sampled += 1
            ev = t.evidence_for(sketch, sent, node, span=(start, end))
            guilty += check_session(span, ev, t.RECEIPT_DOMAIN).outcome == "guilty"
        rate = guilty / sampled if sampled else float("nan")
        results[kind] = {"sessions": args.sessions, "sampled": sampled, "guilty": guilty, "guilty_rate": rate}
        print(f"{kind:14s} sessions {args.sessions}  sampled {sampled}  judged guilty {guilty}  ({rate:.3f})")
    p = min(v["guilty_rate"] for k, v in results.items() if k != "honest")
    delays = {r: round(1 / (r * p), 1) if p > 0 else None for r in (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)}
    print("expected sessions until a cheating node is caught (1 / (rate x detection)):", delays)
    line = {
        "bench": "trust",
        "layers": args.layers,
        "rate": args.rate,
        "results": results,
        "false_positive_rate": results["honest"]["guilty_rate"],
        "expected_detection_delay_sessions": delays,
        "seconds": round(time.time() - began, 1),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
