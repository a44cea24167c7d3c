"""The demo's paid chat timed end to end: route (nodes asked, planned, paid sessions opened), first token,
decode tokens/s, settlement time and gas. Prints the figures and appends a JSON line to bench/results/e2e.jsonl.
    python bench/e2e.py [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)

from inferchain.cli.demo import run_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--prompt", default="Explain in a few sentences why the sky is blue.")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "e2e.jsonl"))
    args = ap.parse_args()
    s = run_demo(args.prompt, args.max_tokens, kill_a_node=False, keep=False, quiet=True)
    result = {
        "bench": "e2e",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "route": [f"{h['operator']}[{h['layers'][0]}:{h['layers'][1]}]" for h in s["route"]],
        **{
            k: s[k]
            for k in (
                "prompt_tokens",
                "completion_tokens",
                "route_and_open_seconds",
                "first_token_seconds",
                "decode_tokens_per_s",
                "settle_seconds",
                "gas",
                "paid_infer",
            )
        },
    }
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    write_result(args.out, result, echo=False)


if __name__ == "__main__":
    main()
