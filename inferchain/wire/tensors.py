"""Hidden states on the wire: raw little-endian fp16 (default) or fp32 bytes with an explicit shape, or "i8":
int8 values in blocks of 64 along the hidden dimension, each block with its own fp16 scale (absmax / 127)."""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

from inferchain.wire.errors import ErrorCode, WireError

WireDType = Literal["f16", "f32", "i8"]
_NUMPY: dict[str, np.dtype] = {"f16": np.dtype("<f2"), "f32": np.dtype("<f4")}
_KNOWN = ("f16", "f32", "i8")
BLOCK = 64


def _blocks(n: int) -> int:
    return -(-n // BLOCK)


def _i8_size(shape: list[int]) -> int:
    rows = shape[0] * shape[1]
    return rows * shape[2] + rows * _blocks(shape[2]) * 2  # int8 values, then one fp16 scale per block


def _encode_i8(array: np.ndarray) -> bytes:
    rows = array.reshape(-1, array.shape[-1]).astype(np.float32)
    hidden = rows.shape[1]
    padded = np.zeros((rows.shape[0], _blocks(hidden) * BLOCK), np.float32)
    padded[:, :hidden] = rows
    blocks = padded.reshape(rows.shape[0], -1, BLOCK)
    scale = (np.abs(blocks).max(axis=2) / 127.0).astype(np.float16)
    safe = np.where(scale == 0, 1, scale).astype(np.float32)[:, :, None]
    values = np.clip(np.rint(blocks / safe), -127, 127).astype(np.int8).reshape(rows.shape[0], -1)[:, :hidden]
    return np.ascontiguousarray(values).tobytes() + scale.astype("<f2").tobytes()


def _decode_i8(data: bytes, shape: list[int]) -> np.ndarray:
    rows, hidden = shape[0] * shape[1], shape[2]
    values = np.frombuffer(data, dtype=np.int8, count=rows * hidden).reshape(rows, hidden)
    scale = np.frombuffer(data, dtype="<f2", offset=rows * hidden).reshape(rows, -1).astype(np.float32)
    padded = np.zeros((rows, _blocks(hidden) * BLOCK), np.float32)
    padded[:, :hidden] = values
    out = (padded.reshape(rows, -1, BLOCK) * scale[:, :, None]).reshape(rows, -1)[:, :hidden]
    return out.reshape(shape)


def encode_tensor(array: np.ndarray, dtype: WireDType) -> dict:
    """A [batch, tokens, hidden] array as {"d": dtype, "s": shape, "b": bytes}."""
    if dtype == "i8":
        return {"d": dtype, "s": list(array.shape), "b": _encode_i8(array)}
    if dtype not in _NUMPY:
        raise WireError(ErrorCode.BAD_TENSOR, f"unsupported wire dtype {dtype!r}")
    data = np.ascontiguousarray(array, dtype=_NUMPY[dtype])
    return {"d": dtype, "s": list(data.shape), "b": data.tobytes()}


def decode_tensor(obj: object, hidden_size: int, max_tokens: int) -> np.ndarray:
    """Check and decode a tensor sent by a peer: shape [1, tokens, hidden_size], 1 <= tokens <= max_tokens."""
    if not isinstance(obj, dict):
        raise WireError(ErrorCode.BAD_TENSOR, "tensor must be a map with d, s, b")
    dtype, shape, data = obj.get("d"), obj.get("s"), obj.get("b")
    if dtype not in _KNOWN:
        raise WireError(ErrorCode.BAD_TENSOR, f"tensor dtype must be one of {list(_KNOWN)}, got {dtype!r}")
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
    expected = _i8_size(shape) if dtype == "i8" else shape[0] * shape[1] * shape[2] * _NUMPY[dtype].itemsize
    if len(data) != expected:
        raise WireError(ErrorCode.BAD_TENSOR, f"tensor of shape {shape} needs {expected} bytes, got {len(data)}")
    array = _decode_i8(data, shape) if dtype == "i8" else np.frombuffer(data, dtype=_NUMPY[dtype]).reshape(shape)
    if not np.isfinite(array).all():
        raise WireError(ErrorCode.BAD_TENSOR, "tensor contains NaN or infinity")
    return array


def tensor_digest(obj: dict) -> bytes:
    """16-byte BLAKE2b of a wire tensor (dtype, shape, bytes): what a relayed input is checked by."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{obj.get('d')}:{obj.get('s')}:".encode())
    data = obj.get("b")
    h.update(data if isinstance(data, bytes) else b"")
    return h.digest()
