"""Relay (node-to-node push) across real node processes: a node that alters what it pushes is caught by the digest
and the generation still equals the monolithic model; pushes go only where their key says, errors reach the client
stream, and a node that cannot reach its successor says so and the session keeps working unrelayed."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import torch
import trio
from libp2p.custom_types import TProtocol

from inferchain.client.generation import SamplingParams, chat_prompt, generate
from inferchain.client.session import InferenceSession
from inferchain.models.span import ModelHead, SpanModel
from inferchain.node.launch import local_swarm
from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
from inferchain.p2p.streams import FramedStream, StreamClosed
from inferchain.p2p.thread import HostThread
from inferchain.trust.adversary import ENV
from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode
from inferchain.wire.tensors import decode_tensor, encode_tensor, tensor_digest

pytestmark = pytest.mark.integration
H = 576


def test_a_node_that_alters_its_pushes_is_caught_and_the_text_is_unchanged(
    smollm2, tokenizer, reference_model, tmp_path
):
    ids = chat_prompt(tokenizer, [{"role": "user", "content": "Name a large city in Japan."}])
    with (
        local_swarm([(0, 10)], tmp_path / "bad", smollm2, env={ENV: "relay"}) as (bad,),
        local_swarm([(10, 20), (20, 30)], tmp_path / "good", smollm2) as good,
    ):
        peers = [bad.addr] + [n.addr for n in good]
        with InferenceSession(smollm2, peers, max_length=len(ids) + 20) as session:
            assert [h.remote.relaying for h in session.chain.hops] == [True, True, False]
            done = generate(session, tokenizer, ids, SamplingParams(max_tokens=12, ignore_eos=True))
            events = session.failovers
            route = [peer for peer, _, _ in session.route]
            relay_after = session.chain.relay
    with torch.inference_mode():
        expected = reference_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    assert done.token_ids == expected[0, len(ids) :].tolist()
    # The prompt's relayed input to 10:20 did not match what 0:10 answered: the hops from there on were re-opened
    # (on the same nodes: who altered it is not known) and the client drove every hop from then on.
    assert len(events) == 1 and events[0].reason.startswith("relay_mismatch")
    assert events[0].failed_peer == good[0].peer_id
    assert route == [bad.peer_id, good[0].peer_id, good[1].peer_id]
    assert relay_after is False


@pytest.fixture(scope="module")
def node(smollm2, tmp_path_factory):
    with local_swarm([(0, 10)], tmp_path_factory.mktemp("relay"), smollm2) as nodes:
        yield nodes[0]


@pytest.fixture(scope="module")
def host():
    with HostThread(load_or_create_identity(None)) as h:
        yield h


def open_request(model_id: str, session_id: str, **relay: object) -> m.Open:
    return m.Open(session_id=session_id, model_id=model_id, start=0, end=10, max_length=32, dtype="f32", **relay)


async def session_stream(host: HostThread, addr: str, request: m.Open) -> tuple[FramedStream, m.Message]:
    peer = parse_peer_addr(addr)
    await host.host.connect(peer)
    framed = FramedStream(await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)]))
    await framed.send(m.encode(request))
    return framed, m.decode(await framed.recv())


def test_pushes_need_the_sessions_key_and_their_errors_reach_its_client(node, host, smollm2):
    model_id = ModelHead(smollm2).info.model_id
    key = secrets.token_bytes(32)
    x = encode_tensor(np.random.default_rng(3).standard_normal((1, 2, H)).astype(np.float32), "f32")
    peer = parse_peer_addr(node.addr)

    async def go() -> dict:
        client, opened = await session_stream(host, node.addr, open_request(model_id, "relayed", relay_key=key))
        other, _ = await session_stream(host, node.addr, open_request(model_id, "other"))
        taken, same_key = await session_stream(host, node.addr, open_request(model_id, "taken", relay_key=key))
        relay = FramedStream(await host.host.new_stream(peer.peer_id, [TProtocol(m.RELAY_PROTOCOL_ID)]))
        await relay.send(m.encode(m.Push(key=key, pos=5, x=x)))  # wrong position: a typed error, to the client
        wrong_position = m.decode(await client.recv())
        await relay.send(m.encode(m.Push(key=key, pos=0, x=x)))
        output = m.decode(await client.recv())
        stranger = FramedStream(await host.host.new_stream(peer.peer_id, [TProtocol(m.RELAY_PROTOCOL_ID)]))
        await stranger.send(m.encode(m.Push(key=secrets.token_bytes(32), pos=0, x=x)))  # no session has this key
        with trio.fail_after(10):
            try:
                stranger_reply: object = await stranger.recv()
            except StreamClosed:
                stranger_reply = "closed"
        await other.send(m.encode(m.Forward(pos=0, x=x)))  # the other session saw none of it
        other_output = m.decode(await other.recv())
        for framed in (client, other, taken, relay, stranger):
            await framed.close()
        return {
            "opened": opened,
            "same_key": same_key,
            "wrong_position": wrong_position,
            "output": output,
            "stranger": stranger_reply,
            "other": other_output,
        }

    got = host.call(go)
    assert isinstance(got["opened"], m.Opened) and got["opened"].relay is False  # no relay_to: nothing to push to
    assert isinstance(got["same_key"], m.ErrorReply) and got["same_key"].code == ErrorCode.BAD_MESSAGE
    assert isinstance(got["wrong_position"], m.ErrorReply)
    assert got["wrong_position"].code == ErrorCode.POSITION_MISMATCH
    output = got["output"]
    assert isinstance(output, m.Output) and output.in_digest == tensor_digest(x) and output.relayed is False
    assert got["stranger"] == "closed"
    span = SpanModel(smollm2, 0, 10)
    expected = span.forward(torch.from_numpy(decode_tensor(x, H, 8).copy()), 0, span.new_cache()).numpy()
    for reply in (output, got["other"]):
        assert isinstance(reply, m.Output)
        np.testing.assert_allclose(decode_tensor(reply.x, H, 8), expected, atol=1e-4)


def test_an_unreachable_successor_leaves_the_session_unrelayed(node, host, smollm2):
    model_id = ModelHead(smollm2).info.model_id
    nobody = load_or_create_identity(None)
    from libp2p.peer.id import ID

    unreachable = f"/ip4/127.0.0.1/tcp/1/p2p/{ID.from_pubkey(nobody.public_key)}"  # nothing listens on port 1
    x = encode_tensor(np.random.default_rng(4).standard_normal((1, 1, H)).astype(np.float32), "f32")

    async def go() -> tuple[m.Message, m.Message]:
        request = open_request(model_id, "lonely", relay_to=unreachable, relay_to_key=secrets.token_bytes(32))
        client, opened = await session_stream(host, node.addr, request)
        await client.send(m.encode(m.Forward(pos=0, x=x, relay=True)))
        output = m.decode(await client.recv())
        await client.close()
        return opened, output

    opened, output = host.call(go)
    assert isinstance(opened, m.Opened) and opened.relay is False
    assert isinstance(output, m.Output) and output.relayed is False and output.in_digest is None
