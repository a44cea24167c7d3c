"""Gateway overhead: time to first token and tokens/s through the OpenAI-compatible gateway (the official
`openai` client streaming over HTTP) vs the client library directly, at 1 and at N concurrent streams, on a
3-node free swarm on loopback. Greedy decoding of one prompt, so both sides generate the same tokens.

Both paths run on the gateway's own libp2p host thread in this process, so they share the nodes, the host and the
machine alike; the gateway's customers (the openai clients) run in processes of their own, one per stream, as real
customers do (in the gateway's process, or in one shared process, their clients' own parsing would compete for one
interpreter lock and delay each other's requests). Each configuration runs `--reps` times, direct and gateway
interleaved (the machine's load drifts), and the table shows medians. TTFT is the time from the request to the first
text; tokens/s is the completion tokens of all streams over the wall time of the run.

`--backend stub` replaces the node chain by a stand-in with a fixed answer and fixed timing (`--stub-prefill-ms`,
`--stub-ms-per-token`, sleeps, no CPU), so the difference between the two paths is the gateway's own cost (HTTP,
auth, tokenizing, metering, SSE, the openai client), nearly free of the machine's load and of the swarm's noise.

Threads: this process uses one torch thread, as `inferchain market start` does by default, and each node process its
share of the cores (the local launcher's default); `--threads` and `--node-threads` override both.

Prints a table and appends a JSON line to bench/results/gateway.jsonl.
    python bench/gateway.py [--backend swarm|stub] [--tokens 32] [--concurrency 1 8] [--reps 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import torch
import uvicorn
from eth_account import Account
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)

from inferchain.client.generation import SamplingParams, stream_tokens
from inferchain.client.remote import Timeouts
from inferchain.client.session import InferenceSession
from inferchain.marketplace.book import OfferBook
from inferchain.marketplace.db import init_db, make_engine
from inferchain.marketplace.gateway import siwe
from inferchain.marketplace.gateway.db import init_gateway_db
from inferchain.marketplace.gateway.runner import Generation, Runners, static_peers
from inferchain.marketplace.gateway.state import Gateway
from inferchain.marketplace.service import MarketState, create_app
from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.node.launch import local_swarm, threads_per_node

MESSAGES = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]


class StubSession:
    """Stands in for `InferenceSession` over a node chain: answers `answer` token by token (greedy picks it),
    sleeping `prefill_ms` for the prompt and `ms_per_token` per decode step."""

    route: list = []
    receipts: list = []

    def __init__(self, answer: list[int], vocab: int, max_length: int, prefill_ms: float, ms_per_token: float):
        self.answer, self.vocab, self.max_length = answer, vocab, max_length
        self.prefill_s, self.step_s = prefill_ms / 1000, ms_per_token / 1000
        self.position, self.steps = 0, 0

    def step(self, token_ids: list[int]) -> torch.Tensor:
        time.sleep(self.prefill_s if self.position == 0 else self.step_s)
        self.position += len(token_ids)
        logits = torch.zeros(self.vocab)
        logits[self.answer[self.steps % len(self.answer)]] = 1.0
        self.steps += 1
        return logits

    def close(self) -> None:
        pass

    def __enter__(self) -> StubSession:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def direct(open_session, runner, ids: list[int], tokens: int) -> tuple[float, int, float]:
    """(time to first token s, tokens, total s) for one stream run with the client library."""
    t0 = time.perf_counter()
    first, n = None, 0
    with open_session() as session:
        for chunk in stream_tokens(session, runner.tokenizer, ids, SamplingParams(max_tokens=tokens)):
            if chunk.text:
                first = first or time.perf_counter() - t0
            n += chunk.token_id >= 0
    return first or 0.0, n, time.perf_counter() - t0


def through_gateway(client: openai.OpenAI, tokens: int) -> tuple[float, int, float]:
    """(time to first token s, tokens, total s) for one stream through the gateway with the official client."""
    t0 = time.perf_counter()
    first, n = None, 0
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=MESSAGES, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - t0
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
    return first or 0.0, n, time.perf_counter() - t0


def concurrently(fn, concurrency: int) -> tuple[list[tuple[float, int, float]], float]:
    """`fn()` on `concurrency` threads at once: their results and the wall time of all."""
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda _: fn(), range(concurrency)))
        return results, time.perf_counter() - t0


def customer(conn, url: str, key: str) -> None:
    """One customer process: runs a stream through the gateway each time it is asked, until told to stop."""
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=300)
    while (tokens := conn.recv()) is not None:
        conn.send(through_gateway(client, tokens))


class Customers:
    """The gateway's customers, one process each (see the module's docstring for why)."""

    def __init__(self, n: int, url: str, key: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=customer, args=(theirs, url, key), daemon=True)
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)

    def run(self, tokens: int, concurrency: int) -> tuple[list[tuple[float, int, float]], float]:
        """`concurrency` streams at once, one per process: their results and the wall time of all."""
        t0 = time.perf_counter()
        for conn in self.conns[:concurrency]:
            conn.send(tokens)
        results = [conn.recv() for conn in self.conns[:concurrency]]
        return results, time.perf_counter() - t0

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            conn.send(None)
            proc.join(timeout=30)


def figures(results: list[tuple[float, int, float]], wall: float) -> dict[str, float]:
    return {
        "ttft_ms": 1000 * statistics.median(r[0] for r in results),
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "tokens": sum(r[1] for r in results),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}  # type: ignore[dict-item]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=3, help="runs per configuration (medians reported)")
    ap.add_argument("--backend", choices=["swarm", "stub"], default="swarm")
    ap.add_argument("--stub-prefill-ms", type=float, default=100.0)
    ap.add_argument("--stub-ms-per-token", type=float, default=25.0)
    ap.add_argument("--node-threads", type=int, default=0,
                    help="torch threads per node process (0: the local launcher's share of the cores)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of this process (as `market start --threads`; 0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gateway.jsonl"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # the machine's load when the run started (other work skews everything)
    folder = default_model_dir()
    prepare_default_model(folder)
    rows = []
    spans = [(0, 10), (10, 20), (20, 30)] if args.backend == "swarm" else []
    with tempfile.TemporaryDirectory() as tmp, local_swarm(
        spans, Path(tmp), folder, ["--threads", str(args.node_threads)] if args.node_threads else []
    ) as nodes, contextlib.ExitStack() as stack:
        addrs = [n.addr for n in nodes]
        engine = make_engine(f"sqlite:///{Path(tmp) / 'gw.sqlite'}")
        # generous step limits on both paths: a loaded 2-core machine must not turn slowness into fail-over
        runners = Runners([folder], static_peers(addrs), timeouts=Timeouts(step_s=120.0))
        runner = next(iter(runners.by_id.values()))
        if args.backend == "swarm":

            def open_session():
                return InferenceSession(runner.head, addrs, host=runner.host, max_length=runner.max_length,
                                        timeouts=runner.timeouts)  # fmt: skip
        else:
            answer = runner.encode("The sky looks blue because air scatters short wavelengths of sunlight more.")

            def open_session():
                return StubSession(answer, runner.head.info.config.vocab_size, runner.max_length, args.stub_prefill_ms,
                                   args.stub_ms_per_token)  # fmt: skip

            runner.start = lambda prompt, params, limits=None, buyer=None: Generation(  # the gateway's side too
                open_session(), prompt, params, runner.tokenizer)  # fmt: skip
        gw = Gateway(init_gateway_db(engine), runners, domain="bench")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(MarketState(OfferBook(init_db(engine), {})), gw),
                                               host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
        serving = threading.Thread(target=server.run, daemon=True)
        serving.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url, acct = f"http://127.0.0.1:{port}", Account.create()
        n = httpx.get(url + "/admin/nonce").json()
        now = time.time()
        msg = siwe.SignInMessage("bench", acct.address, "https://bench", n["chain_id"], n["nonce"], now, now + 600)
        token = httpx.post(url + "/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, acct.key)})
        key = httpx.post(url + "/admin/keys", json={}, headers={"authorization": f"Bearer {token.json()['token']}"})
        customers = Customers(max(args.concurrency), url + "/v1", key.json()["key"])
        stack.callback(customers.close)
        ids = runner.encode_chat(MESSAGES)
        direct(open_session, runner, ids, 4)  # warm-up both paths
        customers.run(4, len(customers.conns))
        for c in args.concurrency:
            ds, gs = [], []
            for rep in range(args.reps):  # interleaved, alternating which goes first
                for path in (("direct", "gateway") if rep % 2 == 0 else ("gateway", "direct")):
                    if path == "direct":
                        ds.append(figures(*concurrently(
                            lambda: direct(open_session, runner, ids, args.tokens), c)))  # noqa: B023
                    else:
                        gs.append(figures(*customers.run(args.tokens, c)))
                    print(f"  {c} stream(s), rep {rep + 1}, {path}: {(ds if path == 'direct' else gs)[-1]}",
                          file=sys.stderr, flush=True)  # fmt: skip
            d, g = median_of(ds), median_of(gs)
            rows.append({"concurrency": c, "direct": d, "gateway": g,
                         "ttft_overhead_ms": g["ttft_ms"] - d["ttft_ms"],
                         "tokens_per_s_ratio": g["tokens_per_s"] / d["tokens_per_s"]})  # fmt: skip
        server.should_exit = True
        serving.join(timeout=60)  # in-flight answers finish (and close their sessions) before the host goes
        runners.close()
        engine.dispose()
    print(f"{'streams':>7} | {'direct TTFT ms':>14} | {'gateway TTFT ms':>15} | {'TTFT +ms':>8} | "
          f"{'direct tok/s':>12} | {'gateway tok/s':>13} | {'tok/s ratio':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['concurrency']:>7} | {r['direct']['ttft_ms']:>14.1f} | {r['gateway']['ttft_ms']:>15.1f} | "
              f"{r['ttft_overhead_ms']:>8.1f} | {r['direct']['tokens_per_s']:>12.2f} | "
              f"{r['gateway']['tokens_per_s']:>13.2f} | {r['tokens_per_s_ratio']:>11.3f}")  # fmt: skip
    result = {
        "bench": "gateway", "at": datetime.now(UTC).isoformat(timespec="seconds"), "backend": args.backend,
        "tokens": args.tokens,
        "reps": args.reps, "threads": torch.get_num_threads(),
        "node_threads": (args.node_threads or threads_per_node(len(spans))) if spans else None,
        "load_avg_1m_at_start": load_before,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows,
    }  # fmt: skip
    write_result(args.out, result)


if __name__ == "__main__":
    main()
