"""Route planner quote latency: median, p99 and quotes/s with 100 / 1,000 / 10,000 live offers.

Runs on one core (affinity pinned where the OS allows, numpy single-threaded). For each model size
(30 and 80 layers) and book size it builds a random offer book, warms the hop table, then times
``RoutePlanner.plan`` over a mix of quotes:

* open    -- no caps (the unconstrained lexicographic optimum, read from the cached DP);
* binding -- caps drawn between the cheapest and the fastest route, so the exact A* search runs.

It also times a table rebuild (the first quote after a cost-relevant offer change). Prints a table and
appends one JSON line per configuration to bench/results/planner.jsonl.

    python bench/planner.py [--quotes 2000] [--seed 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from inferchain.marketplace.planner import NoRouteError, Offer, RoutePlanner  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "planner.jsonl"
MODEL = "bench-model"

# Hardware classes: (ms per layer per token, price per layer per 1k tokens in wei) -- faster costs more.
HARDWARE = [(0.25, 4_000_000_000), (0.6, 2_000_000_000), (1.5, 800_000_000), (4.0, 300_000_000)]


def random_book(rng: random.Random, layers: int, count: int) -> list[Offer]:
    offers = []
    tiles = list(range(0, layers, max(1, layers // 4)))  # the first offers tile the model: always covered
    for i in range(count):
        length = rng.randint(max(1, layers // 8), max(1, layers // 2))
        start = rng.randint(0, layers - length)
        if i < len(tiles):
            start, length = tiles[i], min(layers, (tiles[i + 1] if i + 1 < len(tiles) else layers)) - tiles[i]
        ms, price = rng.choice(HARDWARE)
        offers.append(
            Offer(
                node_id=f"node-{i}",
                model_id=MODEL,
                start=start,
                end=start + length,
                price_per_1k=int(price * rng.uniform(0.7, 1.3)),
                ms_per_layer=round(ms * rng.uniform(0.8, 1.25), 3),
                rtt_ms=round(rng.lognormvariate(3.5, 0.8), 2),  # median ~33 ms, long tail
                free_slots=rng.choice([0, 1, 2, 4, 8, 8]) if i >= len(tiles) else 8,
                max_slots=8,
                expires_at=1e12,
            )
        )
    return offers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_config(layers: int, count: int, quotes: int, seed: int) -> dict:
    rng = random.Random(seed * 1_000_003 + layers * 7919 + count)
    planner = RoutePlanner({MODEL: layers}, seed=seed)
    offers = random_book(rng, layers, count)
    for o in offers:
        planner.upsert(o)

    t0 = time.perf_counter()
    fastest = planner.plan(MODEL, objective="latency", now=0.0)
    build_ms = (time.perf_counter() - t0) * 1000
    cheapest = planner.plan(MODEL, objective="price", now=0.0)

    requests = []
    for i in range(quotes):
        objective = "latency" if i % 2 else "price"
        if i % 3 == 0:
            requests.append(("open", objective, None, None))
            continue
        f = rng.random()
        price_cap = round(cheapest.price_per_1k + f * (fastest.price_per_1k - cheapest.price_per_1k))
        lat_cap = fastest.est_latency_ms + f * (cheapest.est_latency_ms - fastest.est_latency_ms)
        if objective == "latency":
            requests.append(("binding", objective, price_cap, None))
        else:
            requests.append(("binding", objective, None, lat_cap))

    times: dict[str, list[float]] = {"open": [], "binding": []}
    failures = 0
    wall0 = time.perf_counter()
    for kind, objective, price_cap, lat_cap in requests:
        t0 = time.perf_counter_ns()
        try:
            planner.plan(MODEL, price_cap, lat_cap, objective, now=0.0)  # type: ignore[arg-type]
        except NoRouteError:
            failures += 1
        times[kind].append((time.perf_counter_ns() - t0) / 1e6)
    wall = time.perf_counter() - wall0

    rebuilds = []
    for _ in range(5):
        victim = rng.choice(offers)
        planner.upsert(dataclasses.replace(victim, price_per_1k=victim.price_per_1k + 1))
        t0 = time.perf_counter()
        planner.plan(MODEL, now=0.0)
        rebuilds.append((time.perf_counter() - t0) * 1000)

    everything = times["open"] + times["binding"]
    return {
        "layers": layers,
        "offers": count,
        "quotes": quotes,
        "median_ms": statistics.median(everything),
        "p99_ms": percentile(everything, 0.99),
        "max_ms": max(everything),
        "quotes_per_s": quotes / wall,
        "open_median_ms": statistics.median(times["open"]),
        "open_p99_ms": percentile(times["open"], 0.99),
        "binding_median_ms": statistics.median(times["binding"]),
        "binding_p99_ms": percentile(times["binding"], 0.99),
        "no_route": failures,
        "first_build_ms": build_ms,
        "rebuild_median_ms": statistics.median(rebuilds),
        "fastest_route_hops": len(fastest.hops),
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quotes", type=int, default=2000, help="quotes per configuration")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="print only, do not append to the results")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    header = (
        f"{'layers':>6} {'offers':>7} {'median ms':>10} {'p99 ms':>8} {'quotes/s':>9}"
        f" {'open p99':>9} {'bind p99':>9} {'rebuild ms':>11}"
    )
    print(header)
    print("-" * len(header))
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for layers in (30, 80):
        for count in (100, 1_000, 10_000):
            r = run_config(layers, count, args.quotes, args.seed)
            print(
                f"{layers:>6} {count:>7} {r['median_ms']:>10.3f} {r['p99_ms']:>8.3f} {r['quotes_per_s']:>9.0f}"
                f" {r['open_p99_ms']:>9.3f} {r['binding_p99_ms']:>9.3f} {r['rebuild_median_ms']:>11.1f}"
            )
            if not args.no_save:
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                with RESULTS.open("a") as fh:
                    line = {"bench": "planner", "date": date, "machine": machine(), "seed": args.seed, **r}
                    fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
