"""A lean decode step (one new token per session) through Llama-family decoder layers: the stock transformers
layer's math, in fewer torch calls.

A decode step is weight-bound, and every torch call around the weights costs microseconds of dispatch and Python
whatever the tensor size (more when the caches are cold, as in a node that waited for its next step): the stock
layer (rms norms as seven ops, three q/k/v and two gate/up projections, rotary embeddings through helper functions,
keyword plumbing) spends about 30% of a one-token step of SmolLM2 on them on a 2-core CPU. Here a layer runs: fused
rms norm, one q/k/v projection, the rotary embedding's own ops applied to q and k at once, the session's cache
update, scaled-dot-product attention, o projection, fused rms norm, one gate/up projection, activation, down
projection; attention runs per session on its own cache as it is (the stock path pads every session's keys and
values to the longest one and masks the padding), a kv head's query heads passed as rows of one query (SDPA's own
grouped-query path took 38 vs 27 us for one session's layer at 150 tokens). Measured (10 layers, one torch thread,
interleaved in one process): one session 32.8 -> 27.5 ms fp32, 29.1 -> 23.2 ms int8; 16 sessions 76.7 -> 66.6 ms.
Outputs equal the stock layers' up to float rounding (the query grouping sums in another order: ~2e-7).

The fused projections are the stock weights concatenated once at load; the stock modules then hold views of the
fused tensors (no second copy), so prefill (stock layers) and decode share one set of weights. Fusing pays for one
row, where the call overhead is what it saves. Which kernel runs a fused fp32 projection is timed for its own shape
(models/kernels.py); int8 projections fuse their int8 rows and per-row scales (models/int8.py), and an fp32
projection is never fused with an int8 one.

A batch of sessions (2-16 rows) runs its projections through `BatchProjection`: MKL's sgemm is slow at those row
counts on unpacked weights (16 rows of the 3072x576 gate/up: 2.33 ms, against 2 x 0.59 ms for its halves), and
oneDNN on a copy of the weights in its own blocked layout is much faster (10 layers' projections at 16 rows, cold:
44.6 -> 31.7 ms packed and fused; at 4 rows 32.5 -> 21.7 ms). The copy costs the fp32 weights' memory again (a
10-layer SmolLM2 node: +152 MiB resident), so it is made only where timed faster (kernels.packed_linear) and only
when the node may batch (`SpanModel(batch_weights=...)`, `inferchain node start --no-batch-weights`, off with
`--max-sessions 1`). Interleaved in one process, 16 sessions of ~40 tokens: 68.9 -> 64.0 ms per step, and 56.9 ms
with the caches written in place (models/cache.py).

Only for families whose adapter declares this structure (`DecoderFamily.lean_decode`), only for full-attention
layers, and only one token per session (a sliding window or a prefill takes the stock path). tests/test_models.py
checks every family, fp32 and int8, alone and batched, against the stock layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from inferchain.models.int8 import Int8Linear
from inferchain.models.kernels import FastLinear, PackedLinear, linear_fn, packed_linear


class KVCache(Protocol):
    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, /, *args: Any, **kwargs: Any) -> Any: ...


def _joint_bias(parts: Sequence[Any]) -> tuple[bool, torch.Tensor | None]:
    """Whether `parts` can share one matmul's bias (all have one, or none has), and their biases concatenated."""
    biases = [getattr(p, "bias", None) for p in parts]
    if all(b is None for b in biases):
        return True, None
    if any(b is None for b in biases):
        return False, None
    return True, torch.cat([b for b in biases if b is not None])


def _plain_fp32(part: Any) -> bool:
    return isinstance(part, nn.Linear | FastLinear) and part.weight.dtype == torch.float32


def _fuse(parts: Sequence[Any]) -> Any:
    """One projection computing the outputs of `parts` side by side, the parts re-pointed at row slices of its
    tensors; None when the parts cannot share one matmul (different kinds, or biases on some only)."""
    joint, bias = _joint_bias(parts)
    if not joint:
        return None
    if all(isinstance(p, Int8Linear) for p in parts):
        fused: Any = Int8Linear.from_parts(
            torch.cat([p.qweight for p in parts]), torch.cat([p.scale for p in parts]), bias
        )
        _share_rows(parts, "qweight", fused.qweight, parameter=False)
        _share_rows(parts, "scale", fused.scale, parameter=False)
    elif all(_plain_fp32(p) for p in parts):
        weight = torch.cat([p.weight for p in parts])
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        linear.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias, requires_grad=False)
        fn = linear_fn(weight)
        fused = linear if fn is torch.nn.functional.linear else FastLinear(linear, fn)
        _share_rows(parts, "weight", weight)
    else:
        return None
    if bias is not None:
        _share_rows(parts, "bias", bias)
    return fused


def _share_rows(parts: Sequence[Any], name: str, whole: torch.Tensor, parameter: bool = True) -> None:
    """Point each part's tensor `name` at its rows of `whole` (the parts' tensors concatenated, in order)."""
    rows = 0
    for p in parts:
        n = getattr(p, name).shape[0]
        piece = whole[rows : rows + n]
        setattr(p, name, nn.Parameter(piece, requires_grad=False) if parameter else piece)
        rows += n


class BatchProjection:
    """Projections of one input, side by side ([rows, their outputs together]), for batched steps. With `pack`:
    one oneDNN-packed copy of their fp32 weights concatenated where that is timed faster at batch rows
    (models/kernels.py `packed_linear`), else each fp32 part on its own packed copy where that pays; every other
    part (int8, or packing off) runs as it is, on the stock module."""

    def __init__(self, parts: Sequence[Any], pack: bool) -> None:
        calls: list[Any] = list(parts)
        joint, bias = _joint_bias(parts) if pack else (False, None)
        if joint and all(_plain_fp32(p) for p in parts):
            whole = packed_linear(torch.cat([p.weight for p in parts]), bias)
            calls = [whole] if whole is not None else calls
        if pack and len(calls) > 1:
            calls = [(packed_linear(p.weight, p.bias) if _plain_fp32(p) else None) or p for p in parts]
        self.calls = calls

    @property
    def packed(self) -> bool:
        return any(isinstance(c, PackedLinear) for c in self.calls)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        outs = [c(h) for c in self.calls]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


class DecodeLayer:
    """One stock decoder layer's decode step, run lean (see the module docstring). Shares the layer's weights."""

    def __init__(self, layer: Any, batch_weights: bool = True) -> None:
        """`batch_weights`: batched steps may use packed copies of the fp32 projection weights (BatchProjection)."""
        attn, mlp = layer.self_attn, layer.mlp
        self.layer_idx = int(attn.layer_idx)
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)
        self.norm1, self.norm2 = layer.input_layernorm, layer.post_attention_layernorm
        self.heads = attn.q_proj.out_features // self.head_dim
        self.qk_width = attn.q_proj.out_features + attn.k_proj.out_features
        qkv = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        qk = None if qkv is not None else _fuse([attn.q_proj, attn.k_proj])  # int8 keeps v_proj fp32
        self.qkv, self.qk, self.v = qkv, qk, attn.v_proj
        self.q, self.k = attn.q_proj, attn.k_proj
        self.o = attn.o_proj
        self.inner = mlp.gate_proj.out_features
        self.gate_up = _fuse([mlp.gate_proj, mlp.up_proj])
        self.gate, self.up, self.down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act = mlp.act_fn
        self.batch_qkv = BatchProjection([attn.q_proj, attn.k_proj, attn.v_proj], batch_weights)
        self.batch_o = BatchProjection([attn.o_proj], batch_weights)
        self.batch_gate_up = BatchProjection([mlp.gate_proj, mlp.up_proj], batch_weights)
        self.batch_down = BatchProjection([mlp.down_proj], batch_weights)

    def _qk_v(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k side by side [batch, q width + k width] (rotated together), and v."""
        if h.shape[0] > 1:
            qkv = self.batch_qkv(h)
        elif self.qkv is not None:
            qkv = self.qkv(h)
        elif self.qk is not None:
            return self.qk(h), self.v(h)
        else:
            qkv = torch.cat((self.q(h), self.k(h), self.v(h)), dim=-1)
        return qkv[:, : self.qk_width], qkv[:, self.qk_width :]

    def _norm(self, norm: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)

    def __call__(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, caches: Sequence[KVCache]
    ) -> torch.Tensor:
        """x [batch, hidden] (one token per session) -> the layer's output; cos, sin [batch, 1, 1, head_dim] from
        the family's rotary module at the sessions' positions; `caches`: each session's own KV cache, in order."""
        batch = x.shape[0]
        qk, v = self._qk_v(self._norm(self.norm1, x))
        qk = qk.view(batch, -1, 1, self.head_dim)  # [batch, heads + kv heads, 1, head_dim]
        half = self.head_dim // 2  # the stock rotary embedding's ops, for q and k at once:
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        v = v.view(batch, -1, 1, self.head_dim)
        # a kv head's query heads (adjacent, as grouped-query attention pairs them) go in as rows of one query:
        # the same attention, in fewer and larger kernel calls than SDPA's own grouped path
        kv_heads = qk.shape[1] - self.heads
        q = qk[:, : self.heads].reshape(batch, kv_heads, self.heads // kv_heads, self.head_dim)
        # attention per session, on its own cache as it is: padding ragged sessions to one batch copied every
        # session's keys and values twice more per layer
        outs = []
        for i, cache in enumerate(caches):
            k, v_i = cache.update(qk[i : i + 1, self.heads :], v[i : i + 1], self.layer_idx)
            outs.append(torch.nn.functional.scaled_dot_product_attention(q[i : i + 1], k, v_i, scale=self.scaling))
        out = outs[0] if batch == 1 else torch.cat(outs)
        x = x + (self.o if batch == 1 else self.batch_o)(out.reshape(batch, -1))
        h = self._norm(self.norm2, x)
        if batch > 1:
            gate_up = self.batch_gate_up(h)
        elif self.gate_up is not None:
            gate_up = self.gate_up(h)
        else:
            return x + self.down(self.act(self.gate(h)) * self.up(h))
        gate, up = gate_up[:, : self.inner], gate_up[:, self.inner :]
        return x + (self.down if batch == 1 else self.batch_down)(self.act(gate) * up)
