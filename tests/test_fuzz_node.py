"""Wire fuzzing against a running node process over real libp2p streams (Noise + Yamux on 127.0.0.1).

A seeded generator (reproducible: the seed is printed) builds >= 10,000 malformed messages in eight families:
random bytes, msgpack of the wrong shape, unknown or server-only message types, known types with wrong-typed,
missing, extra or out-of-range fields, bad protocol versions, bad tensors (dtype, shape, byte length, NaN),
forwards out of order inside an open session, and oversized payloads under the frame limit. Each must be
answered by exactly one `err` reply with a known ErrorCode, and the stream must stay usable. Framing errors
(oversized or empty frames, truncated frames) go on fresh streams: the node answers once and drops the stream
(or, for a truncated frame, just drops it). Afterwards the node is still up and serves a correct session.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable

import msgpack
import numpy as np
import pytest
import torch
import trio
from libp2p.custom_types import TProtocol

from inferchain.client.remote import RemoteSpan, Timeouts
from inferchain.models.span import ModelHead, SpanModel
from inferchain.node.launch import local_swarm
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.streams import FramedStream
from inferchain.p2p.thread import HostThread
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode
from inferchain.wire.tensors import encode_tensor

H = 576
SPAN = (0, 2)
TOTAL_MESSAGES = int(os.environ.get("INFERCHAIN_FUZZ_MESSAGES", "12000"))
FRAMING_CASES = 150  # each on its own stream (the node drops the stream after a framing error)
BATCH = 50  # frames written before their replies are read (the node answers in order)
REPLY_WAIT_S = 20.0
SEED = int(os.environ.get("INFERCHAIN_FUZZ_SEED", "20240608"))

pytestmark = pytest.mark.integration

_JUNK: list[object] = [None, True, 1.5, -1, 2**63, "x" * 300, b"\xff" * 9, [], {}, [1, "a"], {"k": 1}]
_SERVER_ONLY = ["opened", "out", "closed", "countersigned", "node", "announce", "pong", "err"]
_CLIENT_TYPES = ["open", "fwd", "close", "countersign", "info", "ping"]
_FIELDS = ["session_id", "model_id", "start", "end", "max_length", "dtype", "buyer", "max_price_per_1k", "pos", "x"]


class Generator:
    """Malformed messages, each a msgpack payload (or raw bytes) the node must refuse with a typed error."""

    def __init__(self, seed: int, model_id: str) -> None:
        self.rng = random.Random(seed)
        self.model_id = model_id

    def junk(self) -> object:
        return self.rng.choice(_JUNK)

    def good_open(self) -> dict:
        return {"t": "open", "v": 1, "session_id": "fuzz", "model_id": self.model_id, "start": SPAN[0],
                "end": SPAN[1], "max_length": 16, "dtype": "f32"}  # fmt: skip

    def random_bytes(self) -> bytes:
        n = self.rng.choice([1, 2, 7, 33, 300, 4000])
        data = bytes(self.rng.getrandbits(8) for _ in range(n))
        return b"\xc1" + data  # 0xc1 is never valid msgpack: the payload cannot decode to a valid map by chance

    def wrong_shape(self) -> bytes:
        value = self.rng.choice([[1, 2, 3], "open", 7, None, True, 2.5, b"open", [{"t": "ping"}]])
        return msgpack.packb(value, use_bin_type=True)

    def bad_type(self) -> bytes:
        t = self.rng.choice([*_SERVER_ONLY, "", "OPEN", "fwd2", "\u202e", "x" * 200, 5, None, b"ping"])
        return msgpack.packb({"t": t, "n": 1}, use_bin_type=True)

    def bad_fields(self) -> bytes:
        t = self.rng.choice(_CLIENT_TYPES)
        msg: dict = {"t": t}
        if t == "open":
            msg = self.good_open()
            mutation = self.rng.choice(["wrong_type", "missing", "extra", "range", "model", "span", "long"])
            if mutation == "wrong_type":
                msg[self.rng.choice(list(msg)[2:])] = self.junk()
            elif mutation == "missing":
                del msg[self.rng.choice(["session_id", "model_id", "start", "end", "max_length"])]
            elif mutation == "extra":
                msg[self.rng.choice(["zz", "pos", "x", "buyer_sig"]) + "_"] = self.junk()
            elif mutation == "range":
                msg[self.rng.choice(["start", "end", "max_length"])] = self.rng.choice([-1, -(2**40)])
            elif mutation == "model":
                msg["model_id"] = self.rng.choice(["", "sha256:other", self.model_id + "x"])
            elif mutation == "span":
                msg["start"], msg["end"] = self.rng.choice([(5, 3), (0, 31), (29, 30), (1, 1)])
            else:
                msg["max_length"] = self.rng.choice([10**6, 2**62])
        elif t == "fwd":  # before any open on this stream
            msg = {"t": "fwd", "pos": self.rng.choice([0, 3, -1, "0", None]), "x": self.junk()}
        elif t == "countersign":
            msg = {"t": "countersign", "buyer_sig": self.rng.choice([b"", b"\0" * 64, "0x00", 5, b"\1" * 66])}
        elif t == "ping":
            msg = {"t": "ping", "n": self.rng.choice(["1", 1.5, None, [], b"1"])}
        elif t == "info":
            msg = {"t": "info", self.rng.choice(_FIELDS): self.junk()}
        else:  # close with an unexpected field (a valid close would end the stream)
            msg = {"t": "close", self.rng.choice(_FIELDS): self.junk()}
        return msgpack.packb(msg, use_bin_type=True)

    def bad_version(self) -> bytes:
        msg = self.good_open() if self.rng.random() < 0.5 else {"t": "ping"}
        msg["v"] = self.rng.choice([0, 2, 99, -1, 2**40])
        return msgpack.packb(msg, use_bin_type=True)

    def bad_tensor(self, pos: int) -> bytes:
        """A forward inside the open session whose tensor is wrong (the session must survive it)."""
        n = self.rng.randint(1, 3)
        kind = self.rng.choice(["dtype", "shape", "bytes", "nan", "types", "i8_bytes", "pos", "too_long"])
        good = encode_tensor(np.zeros((1, n, H), np.float32), "f32")
        x: object = dict(good)
        p = pos
        if kind == "dtype":
            x = good | {"d": self.rng.choice(["bf16", "f64", "", 1, None])}
        elif kind == "shape":
            x = good | {"s": self.rng.choice([[1, n, H - 1], [2, n, H], [1, 0, H], [n, H], [1, n, H, 1], "1,1,576"])}
        elif kind == "bytes":
            x = good | {"b": good["b"][: -self.rng.randint(1, 8)]}
        elif kind == "nan":
            bad = np.zeros((1, n, H), np.float32)
            bad[0, 0, self.rng.randrange(H)] = self.rng.choice([np.nan, np.inf, -np.inf])
            x = encode_tensor(bad, "f32")
        elif kind == "types":
            x = self.junk()
        elif kind == "i8_bytes":
            x = {"d": "i8", "s": [1, n, H], "b": b"\0" * (n * H)}
        elif kind == "pos":
            p = pos + self.rng.choice([1, 5, 1000])
        else:
            x = encode_tensor(np.zeros((1, 17, H), np.float32), "f32")  # past the session's 16 tokens
        return msgpack.packb({"t": "fwd", "pos": p, "x": x}, use_bin_type=True)

    def oversized(self) -> bytes:
        """A large payload under the frame limit: a huge bin or string field."""
        size = self.rng.choice([256 * 1024, 1024 * 1024, 3 * 1024 * 1024])
        field = self.rng.choice(["session_id", "model_id", "zz"])
        return msgpack.packb(self.good_open() | {field: "a" * size}, use_bin_type=True)


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@pytest.fixture(scope="module")
def node(smollm2, tmp_path_factory):
    args = ["--max-sessions", "4", "--max-length", "64"]
    with local_swarm([SPAN], tmp_path_factory.mktemp("fuzz"), smollm2, extra_args=args) as nodes:
        yield nodes[0]


@pytest.fixture(scope="module")
def host():
    with HostThread(load_or_create_identity(None)) as h:
        yield h


async def _send_batch(framed: FramedStream, payloads: list[bytes]) -> list[m.Message | None]:
    for p in payloads:
        await framed.stream.write(_frame(p))
    replies: list[m.Message | None] = []
    for _ in payloads:
        reply = None
        with trio.move_on_after(REPLY_WAIT_S):
            reply = m.decode(await framed.recv())
        replies.append(reply)
    return replies


def test_fuzzed_messages_get_typed_errors_and_the_node_keeps_serving(node, host, smollm2):
    model_id = ModelHead(smollm2).info.model_id
    gen = Generator(SEED, model_id)
    peer = parse_peer_addr(node.addr)
    print(f"\nfuzz seed {SEED}")
    families: list[tuple[str, Callable[[], bytes]]] = [
        ("random_bytes", gen.random_bytes),
        ("wrong_shape", gen.wrong_shape),
        ("bad_type", gen.bad_type),
        ("bad_fields", gen.bad_fields),
        ("bad_version", gen.bad_version),
    ]
    sent: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    known_codes = {c.value for c in ErrorCode}
    problems: list[str] = []
    x = np.random.default_rng(3).standard_normal((1, 2, H)).astype(np.float32)

    def check(family: str, replies: list[m.Message | None]) -> None:
        for reply in replies:
            sent[family] += 1
            if isinstance(reply, m.ErrorReply) and reply.code.value in known_codes:
                answered[reply.code.value] += 1
            elif len(problems) < 10:
                problems.append(f"{family}: {reply!r}")

    async def stateless_stream(budget: int) -> None:
        stream = await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
        framed = FramedStream(stream)
        done = 0
        while done < budget:
            name, make = gen.rng.choice(families)
            batch = [make() for _ in range(min(BATCH, budget - done))]
            check(name, await _send_batch(framed, batch))
            done += len(batch)
        # the stream is still usable after all that
        replies = await _send_batch(framed, [msgpack.packb({"t": "ping", "n": 9})])
        assert isinstance(replies[0], m.Pong) and replies[0].n == 9
        await framed.close()

    async def session_stream(budget: int) -> np.ndarray:
        """Bad forwards inside one open session; then one good forward whose output must be exact."""
        stream = await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
        framed = FramedStream(stream)
        opened = await _send_batch(framed, [msgpack.packb(gen.good_open(), use_bin_type=True)])
        assert isinstance(opened[0], m.Opened), opened
        done = 0
        while done < budget:
            batch = [gen.bad_tensor(0) for _ in range(min(BATCH, budget - done))]
            check("bad_tensor", await _send_batch(framed, batch))
            done += len(batch)
        good = msgpack.packb({"t": "fwd", "pos": 0, "x": encode_tensor(x, "f32")}, use_bin_type=True)
        out = (await _send_batch(framed, [good]))[0]
        assert isinstance(out, m.Output), out
        await _send_batch(framed, [msgpack.packb({"t": "close"})])
        await framed.close()
        return np.frombuffer(out.x["b"], dtype="<f4").reshape(out.x["s"]).copy()

    async def oversized(count: int) -> None:
        stream = await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
        framed = FramedStream(stream)
        for _ in range(count):
            check("oversized", await _send_batch(framed, [gen.oversized()]))
        await framed.close()

    async def framing(count: int) -> int:
        """Oversized headers, empty frames and truncated frames, each on a fresh stream; returns replies seen."""
        dropped = 0
        for i in range(count):
            stream = await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
            framed = FramedStream(stream)
            kind = i % 3
            if kind == 0:
                await stream.write(gen.rng.choice([16 * 1024 * 1024 + 1, 2**31, 2**32 - 1]).to_bytes(4, "big"))
            elif kind == 1:
                await stream.write(b"\0\0\0\0")
            else:
                await stream.write(b"\0\0\1\0" + b"\x81" * gen.rng.randint(0, 200))
                await stream.close()  # truncated: the node sees EOF mid-frame and just drops the stream
            reply = None
            with trio.move_on_after(2.0 if kind == 2 else REPLY_WAIT_S):
                try:
                    reply = m.decode(await framed.recv())
                except Exception:
                    reply = None
            expected = {0: ErrorCode.TOO_LARGE, 1: ErrorCode.BAD_FRAME}.get(kind)
            if expected is None:
                assert reply is None, reply
            else:
                assert isinstance(reply, m.ErrorReply) and reply.code == expected, reply
                sent["framing"] += 1
                answered[reply.code.value] += 1
            dropped += 1
            await framed.reset()
        return dropped

    async def run() -> np.ndarray:
        with trio.fail_after(300):  # the whole run is bounded in time
            return await run_all()

    async def run_all() -> np.ndarray:
        await host.host.connect(peer)
        per_stream = 2000
        stateless = TOTAL_MESSAGES - 1500 - 10 - FRAMING_CASES
        while stateless > 0:
            await stateless_stream(min(per_stream, stateless))
            stateless -= per_stream
        await oversized(10)
        await framing(FRAMING_CASES)
        return await session_stream(1500)

    started = time.monotonic()
    got = host.call(run)
    took = time.monotonic() - started
    total = sum(sent.values())
    print(f"fuzz: {total} malformed messages in {took:.1f} s; by family {dict(sent)}; replies {dict(answered)}")
    assert not problems, problems
    assert total >= TOTAL_MESSAGES - FRAMING_CASES // 3  # truncated frames get no reply by design
    assert sum(answered.values()) == total
    assert node.process.poll() is None, node.log_tail()

    local = SpanModel(smollm2, *SPAN)
    expected = local.forward(torch.from_numpy(x), 0, local.new_cache()).numpy()
    assert np.abs(got - expected).max() < 1e-5  # the fuzzed session's cache saw only the good forward

    # a fresh, ordinary client session afterwards is served correctly
    span = RemoteSpan(host.host, peer, *SPAN, "f32", Timeouts())
    host.call(span.open, "after-fuzz", model_id, H, 16)
    out = host.call(span.forward, x, 0)
    host.call(span.close)
    assert np.abs(out - expected).max() < 1e-5
