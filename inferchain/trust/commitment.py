"""A locality-sensitive commitment over a span's output hidden states, in the spirit of TOPLOC.

For every token the node records, from the fp32 hidden state `h` it computed (before wire encoding):

- the indices (uint16) and values (fp16) of the `TOP_K` largest |h| entries, and
- `PROJECTIONS` fixed random ±1/sqrt(hidden) projections of `h` (fp16).

That is 16 bytes per token (512 bytes per 32 tokens per span), plus a 48-byte header per session that holds the
precision the node computed with (fp32 or int8 weights, so that validators re-run the same arithmetic) and the
sha256 of the exact input tensors the node received (so a buyer cannot frame a node with invented inputs: the
validator only accepts inputs that hash to what the node committed). The receipt carries keccak256 of the
serialized sketch. Small numerical differences (thread counts, batching, wire rounding) move the sketch a little;
wrong computation (noise, skipped layers, other weights) moves it a lot; `compare` measures how much.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from eth_utils import keccak

MAGIC = b"ICAC"
VERSION = 1
TOP_K = 2
PROJECTIONS = 4
_HEADER = struct.Struct("<4sBBBBHHI32s")  # magic, version, k, projections, precision, hidden, reserved, tokens, inputs
PRECISIONS = ("fp32", "int8")  # the precision byte: the index here
HEADER_SIZE = _HEADER.size
BYTES_PER_TOKEN = TOP_K * 4 + PROJECTIONS * 2
MAX_TOKENS = 1 << 20


class CommitmentError(ValueError):
    """A serialized sketch is malformed or does not match what it should."""


@cache
def projection_matrix(hidden: int) -> np.ndarray:
    """[PROJECTIONS, hidden] of ±1/sqrt(hidden), fixed per hidden size (seeded: every peer derives the same)."""
    rng = np.random.default_rng(0x1C0C + hidden)
    signs = rng.integers(0, 2, size=(PROJECTIONS, hidden)).astype(np.float32) * 2 - 1
    return signs / np.float32(np.sqrt(hidden))


def token_sketch(hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices [T, k] uint16, values [T, k] fp16, projections [T, p] fp16) of hidden states [T, hidden]."""
    h = np.asarray(hidden, dtype=np.float32)
    idx = np.argsort(-np.abs(h), axis=1, kind="stable")[:, :TOP_K]
    values = np.take_along_axis(h, idx, axis=1)
    proj = h @ projection_matrix(h.shape[1]).T
    return idx.astype(np.uint16), values.astype(np.float16), proj.astype(np.float16)


def input_digest_update(state: Any, position: int, wire_tensor: dict[str, Any]) -> None:
    """Fold one forward's input (as sent on the wire: dtype, shape, bytes) into a running sha256."""
    d = str(wire_tensor.get("d", "")).encode()
    shape = wire_tensor.get("s", [])
    state.update(struct.pack("<q", position) + d + b"|" + ",".join(str(x) for x in shape).encode() + b"|")
    state.update(hashlib.sha256(bytes(wire_tensor.get("b", b""))).digest())


@dataclass(frozen=True)
class Sketch:
    hidden: int
    inputs_sha256: bytes
    indices: np.ndarray  # [T, k] uint16
    values: np.ndarray  # [T, k] fp16
    projections: np.ndarray  # [T, p] fp16
    precision: str = "fp32"  # the weights the node computed with

    @property
    def tokens(self) -> int:
        return int(self.indices.shape[0])

    def to_bytes(self) -> bytes:
        code = PRECISIONS.index(self.precision)
        header = _HEADER.pack(MAGIC, VERSION, TOP_K, PROJECTIONS, code, self.hidden, 0, self.tokens, self.inputs_sha256)
        rows = np.concatenate(
            [
                self.indices.astype("<u2").view(np.uint8).reshape(self.tokens, -1),
                self.values.astype("<f2").view(np.uint8).reshape(self.tokens, -1),
                self.projections.astype("<f2").view(np.uint8).reshape(self.tokens, -1),
            ],
            axis=1,
        )
        return header + rows.tobytes()

    @property
    def digest(self) -> bytes:
        """keccak256 of the serialized sketch: the receipt's `activationCommitment`."""
        return bytes(keccak(self.to_bytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> Sketch:
        if len(data) < HEADER_SIZE:
            raise CommitmentError(f"sketch of {len(data)} bytes is shorter than its {HEADER_SIZE}-byte header")
        magic, version, k, p, code, hidden, _, tokens, inputs = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or (k, p) != (TOP_K, PROJECTIONS):
            raise CommitmentError(f"unknown sketch format {magic!r} v{version} k={k} p={p}")
        if code >= len(PRECISIONS):
            raise CommitmentError(f"unknown precision code {code}")
        if not 0 < tokens <= MAX_TOKENS or hidden == 0:
            raise CommitmentError(f"sketch claims {tokens} tokens of hidden size {hidden}")
        if len(data) != HEADER_SIZE + tokens * BYTES_PER_TOKEN:
            raise CommitmentError(f"sketch of {tokens} tokens must be {HEADER_SIZE + tokens * BYTES_PER_TOKEN} bytes")
        rows = np.frombuffer(data, np.uint8, offset=HEADER_SIZE).reshape(tokens, BYTES_PER_TOKEN)
        a, b = TOP_K * 2, TOP_K * 4
        indices = rows[:, :a].copy().view("<u2")
        if int(indices.max()) >= hidden:
            raise CommitmentError("sketch index out of range")
        values, projections = rows[:, a:b].copy().view("<f2"), rows[:, b:].copy().view("<f2")
        return cls(hidden, inputs, indices, values, projections, PRECISIONS[code])


class CommitmentBuilder:
    """What a node keeps per session: the inputs' running hash and each forward's sketch rows."""

    def __init__(self, hidden: int, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise CommitmentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.hidden, self.precision = hidden, precision
        self._inputs = hashlib.sha256()
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def observe(self, position: int, wire_input: dict[str, Any], output: np.ndarray) -> None:
        """`wire_input`: the tensor map as received; `output`: the span's fp32 output [1, tokens, hidden]."""
        input_digest_update(self._inputs, position, wire_input)
        self._parts.append(token_sketch(np.asarray(output).reshape(-1, self.hidden)))

    @property
    def tokens(self) -> int:
        return sum(p[0].shape[0] for p in self._parts)

    def sketch(self) -> Sketch:
        if not self._parts:
            raise CommitmentError("no forward was observed")
        idx, val, proj = (np.concatenate([p[i] for p in self._parts]) for i in range(3))
        return Sketch(self.hidden, self._inputs.digest(), idx, val, proj, self.precision)


@dataclass(frozen=True)
class Tolerance:
    """Calibrated on honest runs (fp32 vs f16 wire inputs, 1 vs 2 torch threads, batched vs single steps; see
    tests/test_trust_commitment.py and bench/trust.py). Errors are relative to the token's bulk scale: the rms
    of its hidden state without the top-k entries (massive activations would otherwise hide everything else)."""

    token_error: float = 0.1  # a token fails if a projection or top-k value is off by more than this x scale
    rank_slack: float = 0.9  # a committed top-k index must hold at least this fraction of the k-th largest |h|
    max_failed_fraction: float = 0.1  # a session is a mismatch if more of its tokens fail
    # ... or if its median token error is above this: small noise on every token moves the median far more than
    # honest variation does (honest medians <= 0.006, noise of 0.5% of the std 0.011-0.014, 1% about 0.025 on
    # SmolLM2 layers 10:20; bench/trust.py)
    max_median_error: float = 0.012


@dataclass(frozen=True)
class Comparison:
    tokens: int
    failed_tokens: int
    max_error: float
    median_error: float
    mismatch: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "failed_tokens": self.failed_tokens,
            "max_error": round(self.max_error, 6),
            "median_error": round(self.median_error, 6),
            "mismatch": self.mismatch,
        }


def compare(sketch: Sketch, recomputed: np.ndarray, tolerance: Tolerance | None = None) -> Comparison:
    """Compare a committed sketch with hidden states [tokens, hidden] the checker computed itself."""
    tol = tolerance or Tolerance()
    h = np.asarray(recomputed, dtype=np.float32).reshape(-1, sketch.hidden)
    if h.shape[0] != sketch.tokens:
        return Comparison(sketch.tokens, sketch.tokens, float("inf"), float("inf"), True)
    mine_idx = np.argsort(-np.abs(h), axis=1, kind="stable")[:, :TOP_K]
    absh = np.abs(h)
    kth = np.sort(absh, axis=1)[:, -TOP_K]
    mask = np.ones_like(h, dtype=bool)
    np.put_along_axis(mask, mine_idx.astype(np.int64), False, axis=1)
    bulk = np.sqrt((h * h * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)) + 1e-6
    committed_idx = sketch.indices.astype(np.int64)
    at = np.take_along_axis(h, committed_idx, axis=1)
    # fp16 storage rounds large entries by up to 2^-11 of their size: allow 2^-8 of it on top of the bulk scale
    committed_values = sketch.values.astype(np.float32)
    value_err = (np.abs(at - committed_values) / (bulk[:, None] + np.abs(committed_values) / 256)).max(axis=1)
    committed_proj = sketch.projections.astype(np.float32)
    mine = h @ projection_matrix(sketch.hidden).T
    proj_err = (np.abs(mine - committed_proj) / (bulk[:, None] + np.abs(committed_proj) / 256)).max(axis=1)
    rank_ok = (np.abs(at) >= tol.rank_slack * kth[:, None]).all(axis=1)
    err = np.maximum(value_err, proj_err)
    failed = (err > tol.token_error) | ~rank_ok
    n_failed = int(failed.sum())
    return Comparison(
        tokens=sketch.tokens,
        failed_tokens=n_failed,
        max_error=float(err.max()),
        median_error=float(np.median(err)),
        mismatch=n_failed > tol.max_failed_fraction * sketch.tokens or float(np.median(err)) > tol.max_median_error,
    )
