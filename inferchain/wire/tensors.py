"""Hidden states on the wire: raw little-endian fp16 (default) or fp32 bytes with an explicit shape."""

from __future__ import annotations

from typing import Literal

import numpy as np

from inferchain.wire.errors import ErrorCode, WireError

WireDType = Literal["f16", "f32"]
_NUMPY: dict[str, np.dtype] = {"f16": np.dtype("<f2"), "f32": np.dtype("<f4")}


def encode_tensor(array: np.ndarray, dtype: WireDType) -> dict:
    """A [batch, tokens, hidden] array as {"d": dtype, "s": shape, "b": bytes}."""
    if dtype not in _NUMPY:
        raise WireError(ErrorCode.BAD_TENSOR, f"unsupported wire dtype {dtype!r}")
    data = np.ascontiguousarray(array, dtype=_NUMPY[dtype])
    return {"d": dtype, "s": list(data.shape), "b": data.tobytes()}


def decode_tensor(obj: object, hidden_size: int, max_tokens: int) -> np.ndarray:
    """Check and decode a tensor sent by a peer: shape [1, tokens, hidden_size], 1 <= tokens <= max_tokens."""
    if not isinstance(obj, dict):
        raise WireError(ErrorCode.BAD_TENSOR, "tensor must be a map with d, s, b")
    dtype, shape, data = obj.get("d"), obj.get("s"), obj.get("b")
    if dtype not in _NUMPY:
        raise WireError(ErrorCode.BAD_TENSOR, f"tensor dtype must be one of {sorted(_NUMPY)}, got {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in shape)
    ):
        raise WireError(ErrorCode.BAD_TENSOR, f"tensor shape must be [1, tokens, hidden], got {shape!r}")
    if shape[0] != 1 or shape[2] != hidden_size or not (1 <= shape[1] <= max_tokens):
        raise WireError(
            ErrorCode.BAD_TENSOR,
            f"tensor shape must be [1, 1..{max_tokens}, {hidden_size}], got {shape}",
        )
    if not isinstance(data, bytes):
        raise WireError(ErrorCode.BAD_TENSOR, "tensor data must be bytes")
    np_dtype = _NUMPY[dtype]
    expected = shape[0] * shape[1] * shape[2] * np_dtype.itemsize
    if len(data) != expected:
        raise WireError(ErrorCode.BAD_TENSOR, f"tensor of shape {shape} needs {expected} bytes, got {len(data)}")
    array = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    if not np.isfinite(array).all():
        raise WireError(ErrorCode.BAD_TENSOR, "tensor contains NaN or infinity")
    return array
