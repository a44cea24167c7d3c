"""The wire protocol: round trips, size limits, and typed errors for every kind of bad input."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferchain.wire import messages as m
from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.framing import frame, payload_length
from inferchain.wire.tensors import decode_tensor, encode_tensor

H = 576


def test_forward_round_trip_fp16_and_fp32():
    x = np.random.default_rng(0).standard_normal((1, 3, H)).astype(np.float32)
    for dtype, tol in (("f16", 2e-3), ("f32", 0.0)):
        msg = m.decode(m.encode(m.Forward(pos=7, x=encode_tensor(x, dtype))))
        assert isinstance(msg, m.Forward) and msg.pos == 7
        y = decode_tensor(msg.x, H, 8)
        assert y.shape == (1, 3, H)
        assert np.abs(y.astype(np.float32) - x).max() <= tol * np.abs(x).max()


def test_one_token_message_fits_the_budget():
    x = np.zeros((1, 1, H), dtype=np.float32)
    size = len(frame(m.encode(m.Forward(pos=123456, x=encode_tensor(x, "f16")))))
    assert size <= H * 2 + 256
    size = len(frame(m.encode(m.Output(x=encode_tensor(x, "f16")))))
    assert size <= H * 2 + 256


def test_frame_limit_is_checked_before_reading():
    with pytest.raises(WireError) as e:
        payload_length((10**9).to_bytes(4, "big"), max_frame=1024)
    assert e.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(WireError) as e:
        payload_length(b"\x00\x01")
    assert e.value.code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "tensor, why",
    [
        ({"d": "f64", "s": [1, 1, H], "b": b"\0" * H * 8}, "dtype"),
        ({"d": "f16", "s": [1, 1, H + 1], "b": b"\0" * (H + 1) * 2}, "shape"),
        ({"d": "f16", "s": [2, 1, H], "b": b"\0" * H * 4}, "shape"),
        ({"d": "f16", "s": [1, 0, H], "b": b""}, "shape"),
        ({"d": "f16", "s": [1, 9, H], "b": b"\0" * H * 18}, "shape"),  # over max_tokens=8
        ({"d": "f16", "s": [1, 1, H], "b": b"\0" * 10}, "bytes"),
        ({"d": "f16", "s": [1, True, H], "b": b"\0" * H * 2}, "shape"),
        ({"d": "f16", "s": "1,1,576", "b": b"\0" * H * 2}, "shape"),
        ({"d": "f16", "s": [1, 1, H], "b": "text"}, "bytes"),
        ({"d": "f32", "s": [1, 1, H], "b": np.full(H, np.nan, dtype="<f4").tobytes()}, "NaN"),
        ([1, 2, 3], "map"),
    ],
)
def test_bad_tensors_are_typed_errors(tensor, why):
    with pytest.raises(WireError) as e:
        decode_tensor(tensor, H, 8)
    assert e.value.code == ErrorCode.BAD_TENSOR
    assert why in str(e.value) or why in ("dtype", "shape", "bytes")


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\xc1\xc1\xc1", ErrorCode.BAD_MESSAGE),
        (msgpack.packb([1, 2]), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"t": "nope"}), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"t": "fwd", "pos": "3", "x": {}}), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"t": "fwd", "pos": -1, "x": {}}), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"t": "ping", "n": 1, "extra": 2}), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"t": "open", "v": 99}), ErrorCode.UNSUPPORTED_VERSION),
    ],
)
def test_bad_messages_are_typed_errors(payload, code):
    with pytest.raises(WireError) as e:
        m.decode(payload)
    assert e.value.code == code


def test_error_reply_round_trip():
    reply = m.decode(m.error_reply(WireError(ErrorCode.NODE_FULL, "all 2 session slots are taken")))
    assert isinstance(reply, m.ErrorReply)
    err = reply.to_exception()
    assert err.code == ErrorCode.NODE_FULL and "slots" in err.message


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_decode_to_a_message_or_a_wire_error(data):
    try:
        msg = m.decode(data)
    except WireError as e:
        assert e.code in (ErrorCode.BAD_MESSAGE, ErrorCode.UNSUPPORTED_VERSION)
    else:
        assert msg.t in {
            "open",
            "opened",
            "fwd",
            "out",
            "close",
            "closed",
            "info",
            "node",
            "announce",
            "ping",
            "pong",
            "err",
        }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=10,
)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.sampled_from(["t", "v", "pos", "x", "d", "s", "b", "n"]) | st.text(max_size=4), json_values))
def test_structured_garbage_is_a_wire_error(obj):
    try:
        msg = m.decode(msgpack.packb(obj, use_bin_type=True))
        if isinstance(msg, m.Forward):
            decode_tensor(msg.x, H, 8)
    except WireError:
        pass


def test_int8_block_wire_round_trip_and_size():
    x = np.random.default_rng(3).standard_normal((1, 5, H)).astype(np.float32) * 30
    encoded = encode_tensor(x, "i8")
    assert len(encoded["b"]) == 5 * (H + (H // 64) * 2)  # one byte per value + one fp16 scale per 64 values
    y = decode_tensor(m.decode(m.encode(m.Forward(pos=0, x=encoded))).x, H, 8)
    blocks = np.abs(x.reshape(5, -1, 64)).max(axis=2)  # error is at most half a step of each block's scale
    err = np.abs(y - x).reshape(5, -1, 64).max(axis=2)
    assert (err <= blocks / 127 * 0.51 + 1e-3).all()
    size = len(frame(m.encode(m.Forward(pos=9, x=encode_tensor(x[:, :1], "i8")))))
    assert size <= H + 256


def test_int8_block_wire_rejects_bad_scales():
    x = np.ones((1, 1, H), np.float32)
    encoded = encode_tensor(x, "i8")
    bad = encoded["b"][:H] + np.full(H // 64, np.inf, dtype="<f2").tobytes()
    with pytest.raises(WireError) as e:
        decode_tensor({"d": "i8", "s": [1, 1, H], "b": bad}, H, 8)
    assert e.value.code == ErrorCode.BAD_TENSOR
