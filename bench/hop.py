"""What one hop's messaging costs, without a model: round trips of 1.2 KB frames (a decode step's hidden state)
between two processes on loopback, over our libp2p stack (Noise + Yamux, `FramedStream`) and over plain trio TCP,
back to back and with the client idle for 10 ms before each (as in a chain, where a node waits while the others
compute). The gap between the two columns is what cold caches and wake-ups add to a hop.

Prints a table and appends a JSON line to bench/results/hop.jsonl.
    python bench/hop.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from record import write_result  # bench/record.py (scripts in bench/ run with bench/ on the path)

from inferchain.p2p.host import listen_addr, load_or_create_identity, make_host, parse_peer_addr
from inferchain.p2p.streams import FramedStream

PROTOCOL = TProtocol("/inferchain-bench/echo/1")
FRAME = b"x" * 1180  # a one-token f16 hidden state of SmolLM2 with its message header is ~1,190 bytes


def serve(conn, kind: str) -> None:
    """The echo process: sends its address on `conn`, then echoes until killed."""

    async def libp2p_echo() -> None:
        host = make_host(load_or_create_identity(None))

        async def handle(stream) -> None:
            framed = FramedStream(stream)
            while True:
                try:
                    await framed.send(await framed.recv())
                except Exception:  # the client went away
                    return

        host.set_stream_handler(PROTOCOL, handle)
        async with host.run(listen_addrs=[listen_addr("127.0.0.1", 0)]):
            conn.send(str(host.get_addrs()[0]))
            await trio.sleep_forever()

    async def tcp_echo() -> None:
        async def handle(stream) -> None:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        conn.send(str(listeners[0].socket.getsockname()[1]))
        await trio.serve_listeners(handle, listeners)

    trio.run(libp2p_echo if kind == "libp2p" else tcp_echo)


async def round_trips(kind: str, address: str, rounds: int, idle_s: float) -> list[float]:
    times = []
    if kind == "libp2p":
        host = make_host(load_or_create_identity(None))
        peer = parse_peer_addr(address)
        async with host.run(listen_addrs=[listen_addr("127.0.0.1", 0)]):
            await host.connect(peer)
            framed = FramedStream(await host.new_stream(peer.peer_id, [PROTOCOL]))
            for _ in range(rounds):
                time.sleep(idle_s)  # blocks the event loop: the process is idle, as a waiting node is
                t0 = time.perf_counter()
                await framed.send(FRAME)
                await framed.recv()
                times.append(time.perf_counter() - t0)
            await framed.close()
    else:
        stream = await trio.open_tcp_stream("127.0.0.1", int(address))
        for _ in range(rounds):
            time.sleep(idle_s)
            t0 = time.perf_counter()
            await stream.send_all(FRAME)
            got = 0
            while got < len(FRAME):
                got += len(await stream.receive_some(65536))
            times.append(time.perf_counter() - t0)
        await stream.aclose()
    return times[len(times) // 10 :]  # the first rounds warm up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hop.jsonl"))
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    result: dict = {
        "bench": "hop",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "frame_bytes": len(FRAME),
        "rounds": args.rounds,
    }
    print(f"{'round trip, ms (median)':28}{'back to back':>14}{'after 10 ms idle':>18}")
    for kind in ("libp2p", "tcp"):
        mine, theirs = ctx.Pipe()
        server = ctx.Process(target=serve, args=(theirs, kind), daemon=True)
        server.start()
        try:
            address = mine.recv()
            row = {}
            for label, idle in (("back_to_back", 0.0), ("after_idle", 0.010)):
                times = trio.run(round_trips, kind, address, args.rounds, idle)
                row[f"{label}_ms"] = round(statistics.median(times) * 1000, 3)
        finally:
            server.kill()
            server.join()
        result[kind] = row
        name = "libp2p (Noise + Yamux)" if kind == "libp2p" else "plain trio TCP"
        print(f"{name:28}{row['back_to_back_ms']:>14}{row['after_idle_ms']:>18}")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
