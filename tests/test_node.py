"""A real node process under bad and excessive input: typed errors, limits, and it keeps serving correctly."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import psutil
import pytest
import torch
import trio
from libp2p.custom_types import TProtocol

from inferchain.client.remote import RemoteError, RemoteSpan, Timeouts
from inferchain.models.span import ModelHead, SpanModel
from inferchain.node.launch import local_swarm
from inferchain.node.sessions import SessionLimits, SessionTable
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.streams import FramedStream
from inferchain.p2p.thread import HostThread
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode
from inferchain.wire.tensors import encode_tensor

H = 576


@pytest.fixture(scope="module")
def small_node(smollm2, tmp_path_factory):
    """One node serving 0:10 with 2 session slots, short sessions and a 1.5 s idle timeout."""
    workdir = tmp_path_factory.mktemp("node")
    args = ["--max-sessions", "2", "--max-length", "64", "--idle-timeout", "1.5"]
    with local_swarm([(0, 10)], workdir, smollm2, extra_args=args) as nodes:
        yield nodes[0]


@pytest.fixture(scope="module")
def host():
    with HostThread(load_or_create_identity(None)) as h:
        yield h


def raw_exchange(host: HostThread, addr: str, frames: list[bytes], wait_s: float = 10) -> list[m.Message | None]:
    """Send raw bytes on one stream, one item at a time; read one reply per item (None: no reply in time)."""
    peer = parse_peer_addr(addr)

    async def go() -> list[m.Message | None]:
        await host.host.connect(peer)
        stream = await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
        framed = FramedStream(stream)
        replies: list[m.Message | None] = []
        for data in frames:
            await stream.write(data)
            reply = None
            with trio.move_on_after(wait_s):
                try:
                    reply = m.decode(await framed.recv())
                except Exception:
                    reply = None
            replies.append(reply)
        await framed.close()
        return replies

    return host.call(go)


def framed(obj) -> bytes:
    payload = obj if isinstance(obj, bytes) else msgpack.packb(obj, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


def open_msg(model_id: str, **kw) -> dict:
    base = {
        "t": "open",
        "v": 1,
        "session_id": "s1",
        "model_id": model_id,
        "start": 0,
        "end": 10,
        "max_length": 32,
        "dtype": "f32",
    }
    return base | kw


def codes(replies) -> list[str]:
    return [r.code.value if isinstance(r, m.ErrorReply) else r.t if r is not None else "none" for r in replies]


def test_bad_input_gets_typed_errors_and_the_session_survives(small_node, host, smollm2):
    model_id = ModelHead(smollm2).info.model_id
    x = np.random.default_rng(1).standard_normal((1, 3, H)).astype(np.float32)
    good = {"t": "fwd", "pos": 0, "x": encode_tensor(x, "f32")}
    replies = raw_exchange(
        host,
        small_node.addr,
        [
            framed(b"\xc1garbage"),
            framed({"t": "fwd", "pos": 0, "x": encode_tensor(x, "f32")}),  # before open
            framed(open_msg("sha256:other")),
            framed(open_msg(model_id, start=5, end=20)),
            framed(open_msg(model_id, max_length=10_000)),
            framed(open_msg(model_id)),
            framed({"t": "fwd", "pos": 0, "x": {"d": "f32", "s": [1, 3, H - 1], "b": b"\0" * 4 * 3 * (H - 1)}}),
            framed({"t": "fwd", "pos": 0, "x": {"d": "i8", "s": [1, 3, H], "b": b"\0" * 3 * H}}),
            framed({"t": "fwd", "pos": 5, "x": encode_tensor(x, "f32")}),
            framed({"t": "fwd", "pos": 0, "x": encode_tensor(np.zeros((1, 40, H), np.float32), "f32")}),
            framed(good),
            framed({"t": "open", "v": 2}),
            framed({"t": "ping", "n": 7}),
        ],
    )
    assert codes(replies) == [
        "bad_message",
        "no_session",
        "wrong_model",
        "bad_span",
        "too_long",
        "opened",
        "bad_tensor",
        "bad_tensor",
        "position_mismatch",
        "too_long",
        "out",
        "unsupported_version",
        "pong",
    ]
    # The session's cache saw only the one good forward: its output equals a fresh local span's.
    local = SpanModel(smollm2, 0, 10)
    expected = local.forward(torch.from_numpy(x), 0, local.new_cache()).numpy()
    out = replies[10]
    assert isinstance(out, m.Output)
    got = np.frombuffer(out.x["b"], dtype="<f4").reshape(out.x["s"])
    assert np.abs(got - expected).max() < 1e-5


def test_oversized_and_truncated_frames_do_not_hurt_the_node(small_node, host):
    replies = raw_exchange(host, small_node.addr, [(64 * 1024 * 1024).to_bytes(4, "big")])
    assert codes(replies) == ["too_large"]
    replies = raw_exchange(host, small_node.addr, [b"\x00\x00\x00\x00"])
    assert codes(replies) == ["bad_frame"]
    replies = raw_exchange(host, small_node.addr, [b"\x00\x00\x01\x00abc"], wait_s=1)  # truncated, then closed
    assert codes(replies) == ["none"]
    assert small_node.process.poll() is None
    assert codes(raw_exchange(host, small_node.addr, [framed({"t": "ping"})])) == ["pong"]


def test_full_node_refuses_new_sessions_with_node_full(small_node, host, smollm2):
    model_id = ModelHead(smollm2).info.model_id
    peer = parse_peer_addr(small_node.addr)
    spans = [RemoteSpan(host.host, peer, 0, 10, "f16", Timeouts()) for _ in range(3)]
    host.call(spans[0].open, "a", model_id, H, 32)
    host.call(spans[1].open, "b", model_id, H, 32)
    with pytest.raises(RemoteError) as e:
        host.call(spans[2].open, "c", model_id, H, 32)
    assert e.value.code == ErrorCode.NODE_FULL and "2 session slots" in e.value.message
    host.call(spans[0].close)
    host.call(spans[2].open, "c", model_id, H, 32)  # a freed slot is reusable at once
    host.call(spans[1].close)
    host.call(spans[2].close)


def test_idle_session_expires_and_its_memory_is_freed(small_node, host, smollm2):
    model_id = ModelHead(smollm2).info.model_id
    peer = parse_peer_addr(small_node.addr)
    span = RemoteSpan(host.host, peer, 0, 10, "f16", Timeouts())
    host.call(span.open, "idle", model_id, H, 32)
    x = np.zeros((1, 2, H), np.float32)
    host.call(span.forward, x, 0)
    time.sleep(3.5)
    with pytest.raises(RemoteError) as e:
        host.call(span.forward, x[:, :1], 2)
    assert e.value.code == ErrorCode.SESSION_EXPIRED


def test_session_table_budget_and_limits():
    table = SessionTable(SessionLimits(max_sessions=3, max_length=100, cache_budget_bytes=10_000), 10)

    def cache(tokens: int) -> dict[str, int]:  # stands in for SpanModel.new_cache: sized for the session
        return {"tokens": tokens}

    _, first = table.open("a", "p", (0, 5), "f16", 100, cache)  # 100 tokens x 5 layers x 10 bytes = 5,000
    assert first.cache == {"tokens": 100}
    with pytest.raises(Exception) as e:
        table.open("b", "p", (0, 6), "f16", 100, cache)  # 6,000 more: over budget
    assert getattr(e.value, "code", None) == ErrorCode.NODE_FULL
    with pytest.raises(Exception) as e:
        table.open("c", "p", (0, 1), "f16", 101, cache)
    assert getattr(e.value, "code", None) == ErrorCode.TOO_LONG
    _, second = table.open("d", "p", (0, 5), "f16", 100, cache)
    assert table.free_cache_tokens() == 0
    second.last_active -= 1000
    assert table.expire_idle() == 1 and len(table) == 1 and table.free_cache_tokens() == 500
    assert second.closed_reason == ErrorCode.SESSION_EXPIRED and first.closed_reason is None
    first.last_active -= 1000
    assert table.expire_idle() == 1 and len(table) == 0 and table.free_cache_tokens() == 1000


def test_node_memory_grows_with_its_span(smollm2, tmp_path):
    """Resident memory of a node serving 10 of 30 layers vs one serving all 30 (real processes)."""
    with local_swarm([(0, 10), (0, 30)], tmp_path, smollm2) as nodes:
        rss = [psutil.Process(n.process.pid).memory_info().rss for n in nodes]
    layer_bytes = sum(p.numel() * 4 for p in SpanModel(smollm2, 0, 1).layers.parameters())
    print(
        f"\nRSS serving 10 layers: {rss[0] / 2**20:.0f} MiB; 30 layers: {rss[1] / 2**20:.0f} MiB; "
        f"one layer's weights: {layer_bytes / 2**20:.1f} MiB"
    )
    # The 20 extra layers must show up (at least 80% of their bytes), and nothing model-wide may be loaded
    # by the 10-layer node: embeddings + head alone would add 108 MiB.
    assert rss[1] - rss[0] > 0.8 * 20 * layer_bytes
