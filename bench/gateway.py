"""Gateway overhead: time to first token and tokens/s through the OpenAI-compatible gateway (the official
`openai` client streaming over HTTP) vs the client library directly, at 1 and at N concurrent streams, on a
3-node free swarm on loopback. Greedy decoding of one prompt, so both sides generate the same tokens.

Prints a table and appends a JSON line to bench/results/gateway.jsonl.
    python bench/gateway.py [--tokens 32] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import uvicorn
from eth_account import Account

from inferchain.client.generation import SamplingParams, stream_tokens
from inferchain.client.session import InferenceSession
from inferchain.marketplace.book import OfferBook
from inferchain.marketplace.db import init_db, make_engine
from inferchain.marketplace.gateway import siwe
from inferchain.marketplace.gateway.db import init_gateway_db
from inferchain.marketplace.gateway.runner import Runners, static_peers
from inferchain.marketplace.gateway.state import Gateway
from inferchain.marketplace.service import MarketState, create_app
from inferchain.models.prepare import default_model_dir, prepare_default_model
from inferchain.node.launch import local_swarm

MESSAGES = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]


def direct(runner, addrs: list[str], ids: list[int], tokens: int) -> tuple[float, int, float]:
    """(time to first token s, tokens, total s) for one stream run with the client library."""
    t0 = time.perf_counter()
    first, n = None, 0
    with InferenceSession(runner.head, addrs, host=runner.host) as session:
        for chunk in stream_tokens(session, runner.tokenizer, ids, SamplingParams(max_tokens=tokens)):
            first = first or time.perf_counter() - t0
            n += chunk.token_id >= 0
    return first or 0.0, n, time.perf_counter() - t0


def through_gateway(client: openai.OpenAI, tokens: int) -> tuple[float, int, float]:
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


def run(fn, concurrency: int) -> dict[str, float]:
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda _: fn(), range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "ttft_ms": 1000 * statistics.median(r[0] for r in results),
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "tokens": sum(r[1] for r in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gateway.jsonl"))
    args = ap.parse_args()
    folder = default_model_dir()
    prepare_default_model(folder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, local_swarm([(0, 10), (10, 20), (20, 30)], Path(tmp), folder) as nodes:
        addrs = [n.addr for n in nodes]
        engine = make_engine(f"sqlite:///{Path(tmp) / 'gw.sqlite'}")
        runners = Runners([folder], static_peers(addrs))
        runner = next(iter(runners.by_id.values()))
        gw = Gateway(init_gateway_db(engine), runners, domain="bench")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(MarketState(OfferBook(init_db(engine), {})), gw),
                                               host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
        threading.Thread(target=server.run, daemon=True).start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url, acct = f"http://127.0.0.1:{port}", Account.create()
        n = httpx.get(url + "/admin/nonce").json()
        now = time.time()
        msg = siwe.SignInMessage("bench", acct.address, "https://bench", n["chain_id"], n["nonce"], now, now + 600)
        token = httpx.post(url + "/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, acct.key)})
        key = httpx.post(url + "/admin/keys", json={}, headers={"authorization": f"Bearer {token.json()['token']}"})
        client = openai.OpenAI(base_url=url + "/v1", api_key=key.json()["key"], max_retries=0, timeout=300)
        ids = runner.encode_chat(MESSAGES)
        direct(runner, addrs, ids, 4)  # warm-up both paths
        through_gateway(client, 4)
        for c in args.concurrency:
            d = run(lambda: direct(runner, addrs, ids, args.tokens), c)
            g = run(lambda: through_gateway(client, args.tokens), c)
            rows.append({"concurrency": c, "direct": d, "gateway": g,
                         "ttft_overhead_ms": g["ttft_ms"] - d["ttft_ms"],
                         "tokens_per_s_ratio": g["tokens_per_s"] / d["tokens_per_s"]})  # fmt: skip
        server.should_exit = True
        runners.close()
        engine.dispose()
    print(f"{'streams':>7} | {'direct TTFT ms':>14} | {'gateway TTFT ms':>15} | {'direct tok/s':>12} | "
          f"{'gateway tok/s':>13} | {'tok/s ratio':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['concurrency']:>7} | {r['direct']['ttft_ms']:>14.1f} | {r['gateway']['ttft_ms']:>15.1f} | "
              f"{r['direct']['tokens_per_s']:>12.1f} | {r['gateway']['tokens_per_s']:>13.1f} | "
              f"{r['tokens_per_s_ratio']:>11.3f}")  # fmt: skip
    result = {
        "bench": "gateway", "at": datetime.now(UTC).isoformat(timespec="seconds"), "tokens": args.tokens,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
