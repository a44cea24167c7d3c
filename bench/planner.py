"""Route planner quote latency: median, p99 and quotes/s with 100 / 1,000 / 10,000 live offers.

Runs on one core (affinity pinned where the OS allows, numpy single-threaded). For each model size
(30 and 80 layers) and book size it builds a random offer book, builds the index (``RoutePlanner.prepare``:
hop table and bound tables), then times ``RoutePlanner.plan`` over a mix of quotes:

* open (a quarter) -- no caps (the unconstrained lexicographic optimum, read from the cached DP);
* binding (half the quotes) -- one cap drawn uniformly between the cheapest and the fastest route, so it
  constrains the route and the exact A* search runs: "least latency within a price cap" (``bind_lat``)
  or "least price within a latency cap" (``bind_price``);
* bind_both (a quarter) -- such a cap plus an independent one on the other cost, which may bind too or
  make the request impossible (``no_route``: CapsConflictError, whose message costs a second search).

Each quote is timed in wall-clock time and in the thread's CPU time: on a shared machine the wall-clock
tail measures the other processes too, the CPU time only the planner. Between the quotes a fixed ~0.3 ms
CPU task is timed too: its wall-clock p99 ("noise p99") is what the machine adds to anything that short.
It also times a rebuild (after a price change: the next quote rebuilds the hop table, ``prepare`` the
bound tables). Prints a table and appends one JSON line per configuration to bench/results/planner.jsonl
(with the load average).

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


def probe(n: int) -> int:
    """Fixed CPU work: timed between the quotes, its wall-clock tail is the machine's noise floor."""
    return sum(i * i for i in range(n))


def calibrate_probe(cpu_ms: float) -> int:
    """Size of ``probe`` that takes about ``cpu_ms`` of CPU time here."""
    n = 10_000
    c0 = time.thread_time_ns()
    probe(n)
    return max(1, round(n * cpu_ms * 1e6 / max(1, time.thread_time_ns() - c0)))


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
    planner.prepare(MODEL, now=0.0)
    build_ms = (time.perf_counter() - t0) * 1000
    fastest = planner.plan(MODEL, objective="latency", now=0.0)
    cheapest = planner.plan(MODEL, objective="price", now=0.0)

    requests = []
    for i in range(quotes):
        kind = ("open", "bind_lat", "bind_price", "bind_both")[i % 4]
        flip = (i // 4) % 2  # open and bind_both alternate objectives
        objective = "latency" if kind == "bind_lat" or (kind in ("open", "bind_both") and flip) else "price"
        if kind == "open":
            requests.append(("open", objective, None, None))
            continue
        f = rng.random()
        price_cap = round(cheapest.price_per_1k + f * (fastest.price_per_1k - cheapest.price_per_1k))
        lat_cap = fastest.est_latency_ms + f * (cheapest.est_latency_ms - fastest.est_latency_ms)
        if kind == "bind_both":  # a second, independent cap on the other cost: it may bind or conflict
            g = rng.random()
            other_price = round(cheapest.price_per_1k + g * (fastest.price_per_1k - cheapest.price_per_1k))
            other_lat = fastest.est_latency_ms + g * (cheapest.est_latency_ms - fastest.est_latency_ms)
            requests.append(
                (kind, objective, price_cap, other_lat)
                if objective == "latency"
                else (kind, objective, other_price, lat_cap)
            )
        elif objective == "latency":
            requests.append(("bind_lat", objective, price_cap, None))
        else:
            requests.append(("bind_price", objective, None, lat_cap))

    wall: dict[str, list[float]] = {"open": [], "bind_lat": [], "bind_price": [], "bind_both": []}
    cpu: dict[str, list[float]] = {"open": [], "bind_lat": [], "bind_price": [], "bind_both": []}
    failures = constrained = 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    probe_n = calibrate_probe(0.3)
    noise: list[float] = []
    for kind, objective, price_cap, lat_cap in requests:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        try:
            route = planner.plan(MODEL, price_cap, lat_cap, objective, now=0.0)  # type: ignore[arg-type]
        except NoRouteError:
            failures += 1
            route = None
        wall[kind].append((time.perf_counter_ns() - t0) / 1e6)
        cpu[kind].append((time.thread_time_ns() - c0) / 1e6)
        unconstrained = fastest if objective == "latency" else cheapest
        if kind in ("bind_lat", "bind_price") and route is not None:
            constrained += route.price_per_1k != unconstrained.price_per_1k  # the cap changed the answer
        t0 = time.perf_counter_ns()
        probe(probe_n)
        noise.append((time.perf_counter_ns() - t0) / 1e6)

    rebuilds, bound_builds = [], []
    for _ in range(3):
        victim = rng.choice(offers)
        planner.upsert(dataclasses.replace(victim, price_per_1k=victim.price_per_1k + 1))
        t0 = time.perf_counter()
        planner.plan(MODEL, now=0.0)
        t1 = time.perf_counter()
        planner.prepare(MODEL, now=0.0)
        rebuilds.append((t1 - t0) * 1000)
        bound_builds.append((time.perf_counter() - t1) * 1000)

    everything = [t for kind in wall for t in wall[kind]]
    binding = wall["bind_lat"] + wall["bind_price"] + wall["bind_both"]
    all_cpu = [t for kind in cpu for t in cpu[kind]]
    return {
        "layers": layers,
        "offers": count,
        "quotes": quotes,
        "median_ms": statistics.median(everything),
        "p99_ms": percentile(everything, 0.99),
        "max_ms": max(everything),
        "quotes_per_s": quotes / (sum(everything) / 1000),
        "open_median_ms": statistics.median(wall["open"]),
        "open_p99_ms": percentile(wall["open"], 0.99),
        "binding_median_ms": statistics.median(binding),
        "binding_p99_ms": percentile(binding, 0.99),
        "bind_lat_p99_ms": percentile(wall["bind_lat"], 0.99),
        "bind_price_p99_ms": percentile(wall["bind_price"], 0.99),
        "bind_both_p99_ms": percentile(wall["bind_both"], 0.99),
        "cpu_median_ms": statistics.median(all_cpu),
        "cpu_p99_ms": percentile(all_cpu, 0.99),
        "cpu_binding_p99_ms": percentile(cpu["bind_lat"] + cpu["bind_price"] + cpu["bind_both"], 0.99),
        "cpu_bind_both_p99_ms": percentile(cpu["bind_both"], 0.99),
        "binding_constrained": constrained / max(1, len(wall["bind_lat"]) + len(wall["bind_price"])),
        "no_route": failures,
        "first_build_ms": build_ms,
        "rebuild_median_ms": statistics.median(rebuilds),
        "bounds_build_median_ms": statistics.median(bound_builds),
        "fastest_route_hops": len(fastest.hops),
        "cheapest_route_hops": len(cheapest.hops),
        "load_average": load,
        "noise_p99_ms": percentile(noise, 0.99),
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
    parser.add_argument("--layers", type=int, nargs="*", default=[30, 80])
    parser.add_argument("--offers", type=int, nargs="*", default=[100, 1_000, 10_000])
    parser.add_argument("--no-save", action="store_true", help="print only, do not append to the results")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    header = (
        f"{'layers':>6} {'offers':>7} {'median ms':>10} {'p99 ms':>8} {'quotes/s':>9} {'open p99':>9}"
        f" {'bind p99':>9} {'b.lat p99':>10} {'b.price p99':>12} {'b.both p99':>11} {'cpu p99':>8} {'noise p99':>10}"
        f" {'build ms':>9}"
        f" {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for layers in args.layers:
        for count in args.offers:
            r = run_config(layers, count, args.quotes, args.seed)
            print(
                f"{layers:>6} {count:>7} {r['median_ms']:>10.3f} {r['p99_ms']:>8.3f} {r['quotes_per_s']:>9.0f}"
                f" {r['open_p99_ms']:>9.3f} {r['binding_p99_ms']:>9.3f} {r['bind_lat_p99_ms']:>10.3f}"
                f" {r['bind_price_p99_ms']:>12.3f} {r['bind_both_p99_ms']:>11.3f} {r['cpu_p99_ms']:>8.3f}"
                f" {r['noise_p99_ms']:>10.3f}"
                f" {r['rebuild_median_ms'] + r['bounds_build_median_ms']:>9.1f} {r['load_average'] or 0:>5.1f}"
            )
            if not args.no_save:
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                with RESULTS.open("a") as fh:
                    line = {"bench": "planner", "date": date, "machine": machine(), "seed": args.seed, **r}
                    fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
