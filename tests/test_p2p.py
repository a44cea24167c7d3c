"""The libp2p host: Noise + Yamux only. A peer that offers only plaintext cannot talk to a node."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from inferchain.p2p.host import ID, PeerAddressError, load_or_create_identity, parse_peer_addr
from inferchain.p2p.thread import HostThread
from inferchain.wire import messages as m

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(smollm2, tmp_path_factory):
    from inferchain.node.launch import local_swarm

    with local_swarm([(0, 1)], tmp_path_factory.mktemp("p2p"), smollm2) as nodes:
        yield nodes[0]


def test_plaintext_only_peer_is_refused(node):
    pair = create_new_key_pair()
    insecure = new_host(key_pair=pair, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(pair)})
    peer = parse_peer_addr(node.addr)

    async def dial() -> str:
        from inferchain.p2p.host import listen_addr

        async with insecure.run(listen_addrs=[listen_addr()]):
            try:
                with trio.fail_after(15):
                    await insecure.connect(peer)
                    await insecure.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
            except Exception as e:  # the failure type depends on where negotiation stops
                return type(e).__name__
            return "connected"

    assert trio.run(dial) != "connected"


def test_noise_peer_gets_answers(node):
    from inferchain.client.remote import Timeouts, request_once

    with HostThread(load_or_create_identity(None)) as host:
        reply = host.call(request_once, host.host, parse_peer_addr(node.addr), m.Ping(n=3), Timeouts())
    assert isinstance(reply, m.Pong) and reply.n == 3


def test_identity_persists_and_is_private(tmp_path):
    path = tmp_path / "id.key"
    first = load_or_create_identity(path)
    again = load_or_create_identity(path)
    assert first.public_key.to_bytes() == again.public_key.to_bytes()
    assert path.stat().st_mode & 0o777 == 0o600


def test_bad_peer_address_is_a_clear_error():
    with pytest.raises(PeerAddressError, match="/p2p/"):
        parse_peer_addr("/ip4/127.0.0.1/tcp/4001")


@asynccontextmanager
async def _echo_peers(protocol: TProtocol, rounds: int) -> AsyncIterator[tuple[IHost, ID]]:
    """Two hosts in this process on 127.0.0.1, connected; the server echoes `rounds` frames on each stream of
    `protocol`. Yields the client host and the server's peer id."""
    from inferchain.p2p.host import listen_addr, make_host
    from inferchain.p2p.streams import FramedStream

    server, client = make_host(load_or_create_identity(None)), make_host(load_or_create_identity(None))

    async def handle(stream) -> None:
        framed = FramedStream(stream)
        for _ in range(rounds):
            await framed.send(await framed.recv())

    server.set_stream_handler(protocol, handle)
    async with server.run(listen_addrs=[listen_addr()]), client.run(listen_addrs=[listen_addr()]):
        peer = parse_peer_addr(f"{server.get_addrs()[0]}")
        await client.connect(peer)
        yield client, peer.peer_id


class _TaskSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: object) -> None:
        self.steps += 1


def _echo_round_trips(frames: list[bytes]) -> tuple[list[bytes], int, int]:
    """Two hosts in this process on 127.0.0.1: each frame sent on one stream and echoed back. Returns the echoes,
    how many Yamux frames both muxers wrote and how many trio task steps both sides took during the round trips
    (the stream opened and warm)."""
    from libp2p.stream_muxer.yamux.yamux import Yamux

    from inferchain.p2p.streams import FramedStream

    written = [0]
    counter = _TaskSteps()
    stock_write = Yamux._write_frame

    async def counting_write(self: Yamux, data: bytes) -> None:
        written[0] += 1
        await stock_write(self, data)

    async def main() -> list[bytes]:
        protocol = TProtocol("/inferchain-test/echo/1")
        with trio.fail_after(60):
            async with _echo_peers(protocol, len(frames)) as (client, peer_id):
                framed = FramedStream(await client.new_stream(peer_id, [protocol]))
                await framed.send(frames[0])
                echoes = [await framed.recv()]
                written[0] = 0
                trio.lowlevel.add_instrument(counter)
                for f in frames[1:]:
                    await framed.send(f)
                    echoes.append(await framed.recv())
                trio.lowlevel.remove_instrument(counter)
                await framed.close()
        return echoes

    Yamux._write_frame = counting_write  # type: ignore[method-assign]
    try:
        echoes = trio.run(main)
    finally:
        Yamux._write_frame = stock_write  # type: ignore[method-assign]
    return echoes, written[0], counter.steps


def test_small_messages_cost_one_yamux_frame_each_way():
    # py-libp2p's Yamux answers reads with window updates of their own (an extra Noise message and socket write);
    # p2p/yamux.py credits the window per half window, so a step's request and reply are one frame each.
    from inferchain.p2p import hotpath, yamux

    assert yamux.installed()
    rounds = 200
    echoes, written, steps = _echo_round_trips([bytes([i % 256]) * 1180 for i in range(rounds + 1)])
    assert echoes == [bytes([i % 256]) * 1180 for i in range(rounds + 1)]
    # 236 KB each way: a window update or two per direction, and the closing frames (stock 0.8.1: ~4 per round)
    assert written <= 2 * rounds + 10
    # p2p/hotpath.py: free locks do not yield, one socket read per message: ~6 task steps per round trip for both
    # ends together (stock 0.8.1: ~32)
    assert hotpath.installed()
    assert steps <= 10 * rounds


def test_large_messages_still_grow_the_window():
    # a 2048-token prefill in f16 is 2.4 MB, ten times the initial 256 KB window
    big = [bytes(range(256)) * (10 * 1024 * 1024 // 256), b"x" * 3 * 1024 * 1024, b"y" * 1180]
    echoes, _, _ = _echo_round_trips([b"warm"] + big)
    assert echoes == [b"warm"] + big


def test_concurrent_streams_on_one_connection_keep_their_bytes():
    # p2p/hotpath.py's locks must still exclude when they are contended: streams on one connection write at once,
    # one of them a frame far larger than the window (it waits for window updates while the others go on)
    from inferchain.p2p.streams import FramedStream

    protocol = TProtocol("/inferchain-test/echo-many/1")
    streams, rounds = 6, 25

    def payload(stream: int, i: int) -> bytes:
        size = 3 * 1024 * 1024 if (stream, i) == (0, 3) else 700 + 97 * stream + i
        return bytes([(stream * 31 + i) % 256]) * size

    async def main() -> dict[int, list[bool]]:
        results: dict[int, list[bool]] = {}
        with trio.fail_after(120):
            async with _echo_peers(protocol, rounds) as (client, peer_id):

                async def echo(k: int) -> None:
                    framed = FramedStream(await client.new_stream(peer_id, [protocol]))
                    results[k] = []
                    for i in range(rounds):
                        await framed.send(payload(k, i))
                        results[k].append(await framed.recv() == payload(k, i))
                    await framed.close()

                async with trio.open_nursery() as nursery:
                    for k in range(streams):
                        nursery.start_soon(echo, k)
        return results

    results = trio.run(main)
    assert results == {k: [True] * rounds for k in range(streams)}


def test_host_thread_calls_return_raise_and_end_with_the_host():
    """`HostThread.call` runs on the host's trio thread: results and exceptions come back; a call still running
    when the host closes ends with RuntimeError instead of hanging, and later calls are refused."""
    host = HostThread(load_or_create_identity(None))
    started = threading.Event()
    outcome: list[BaseException | None] = []

    async def thread_name() -> str:
        return threading.current_thread().name

    async def fail() -> None:
        raise ValueError("from the trio thread")

    async def forever() -> None:
        started.set()
        await trio.sleep_forever()

    def blocked_call() -> None:
        try:
            host.call(forever)
            outcome.append(None)
        except BaseException as e:  # the assertion below says which
            outcome.append(e)

    try:
        assert host.call(thread_name) != threading.current_thread().name
        with pytest.raises(ValueError, match="from the trio thread"):
            host.call(fail)
        caller = threading.Thread(target=blocked_call, daemon=True)
        caller.start()
        assert started.wait(10)
    finally:
        host.close()
    caller.join(10)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError)
    with pytest.raises(RuntimeError, match="closed"):
        host.call(thread_name)
