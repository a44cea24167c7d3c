"""What a token's messages cost through 3 nodes, by topology, without a model: the client drives every hop (star,
what the chain does now: 6 one-way messages per token) vs each node forwarding to the next and the last one back
to the client (relay, as Petals' server-to-server push: 4). Each node process holds its CPU busy for --compute-ms
per step, as a span would, so every process waits cold while the others work, as in a real chain. Messages are
1.2 KB frames (a one-token f16 hidden state) over our libp2p stack (Noise + Yamux, `FramedStream`).

Prints ms per token above the nodes' compute for both, interleaved, and appends a JSON line to
bench/results/topology.jsonl.
    python bench/topology.py [--tokens 60] [--repeats 3] [--compute-ms 15]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)

from inferchain.p2p.host import listen_addr, load_or_create_identity, make_host, parse_peer_addr
from inferchain.p2p.streams import FramedStream

STEP = TProtocol("/inferchain-bench/step/1")  # request -> compute -> reply (star)
RELAY = TProtocol("/inferchain-bench/relay/1")  # frame -> compute -> forward to the next peer (relay)
FRAME = b"x" * 1180


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


async def received(framed: FramedStream) -> AsyncIterator[bytes]:
    """The frames a stream brings, until its peer goes away."""
    while True:
        try:
            yield await framed.recv()
        except Exception:  # the peer closed or reset the stream
            return


def node(conn, compute_ms: float) -> None:
    """A node process: sends its address, receives the next peer's address (or the client's), then serves."""

    async def main() -> None:
        host = make_host(load_or_create_identity(None))
        nxt: list[FramedStream] = []

        async def step(stream) -> None:
            framed = FramedStream(stream)
            async for data in received(framed):
                busy(compute_ms)
                await framed.send(data)

        async def relay(stream) -> None:
            async for data in received(FramedStream(stream)):
                busy(compute_ms)
                await nxt[0].send(data)

        host.set_stream_handler(STEP, step)
        host.set_stream_handler(RELAY, relay)
        async with host.run(listen_addrs=[listen_addr("127.0.0.1", 0)]):
            conn.send(str(host.get_addrs()[0]))
            peer = parse_peer_addr(await trio.to_thread.run_sync(conn.recv))
            await host.connect(peer)
            nxt.append(FramedStream(await host.new_stream(peer.peer_id, [RELAY])))
            conn.send("ready")
            await trio.sleep_forever()

    trio.run(main)


async def client(addrs: list[str], tokens: int, repeats: int, ready) -> dict[str, list[float]]:
    host = make_host(load_or_create_identity(None))
    back, arrivals = trio.open_memory_channel[bytes](16)

    async def last_hop(stream) -> None:  # the relay's last node sends its output here
        async for data in received(FramedStream(stream)):
            await back.send(data)

    host.set_stream_handler(RELAY, last_hop)
    out: dict[str, list[float]] = {"star": [], "relay": []}
    async with host.run(listen_addrs=[listen_addr("127.0.0.1", 0)]):
        await ready(str(host.get_addrs()[0]))
        peers = [parse_peer_addr(a) for a in addrs]
        for p in peers:
            await host.connect(p)
        star = [FramedStream(await host.new_stream(p.peer_id, [STEP])) for p in peers]
        first = FramedStream(await host.new_stream(peers[0].peer_id, [RELAY]))
        for _ in range(repeats):
            for kind in ("star", "relay"):
                t0 = time.perf_counter()
                for _ in range(tokens):
                    if kind == "star":
                        for s in star:
                            await s.send(FRAME)
                            await s.recv()
                    else:
                        await first.send(FRAME)
                        await arrivals.receive()
                out[kind].append((time.perf_counter() - t0) / tokens * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compute-ms", type=float, default=15.0, help="each node's busy time per step")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "topology.jsonl"))
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for _ in range(3):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=node, args=(theirs, args.compute_ms), daemon=True)
        p.start()
        pipes.append(mine)
        procs.append(p)
    addrs = [c.recv() for c in pipes]

    async def ready(client_addr: str) -> None:  # each node forwards to the next; the last one to the client
        for i, c in enumerate(pipes):
            c.send(addrs[i + 1] if i + 1 < len(addrs) else client_addr)
        for c in pipes:
            await trio.to_thread.run_sync(c.recv)

    try:
        times = trio.run(client, addrs, args.tokens, args.repeats, ready)
    finally:
        for p in procs:
            p.kill()
            p.join()
    compute = 3 * args.compute_ms
    star, relay = statistics.median(times["star"]), statistics.median(times["relay"])
    result = {
        "bench": "topology",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "tokens": args.tokens,
        "repeats": args.repeats,
        "compute_ms_per_node": args.compute_ms,
        "star_ms_per_token": round(star, 2),
        "relay_ms_per_token": round(relay, 2),
        "star_messaging_ms_per_token": round(star - compute, 2),
        "relay_messaging_ms_per_token": round(relay - compute, 2),
    }
    print(f"{'ms per token (median)':28}{'total':>8}{'above compute':>16}")
    print(f"{'star (client drives hops)':28}{star:>8.2f}{star - compute:>16.2f}")
    print(f"{'relay (node to node)':28}{relay:>8.2f}{relay - compute:>16.2f}")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
