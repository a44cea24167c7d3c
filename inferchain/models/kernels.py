"""Which kernel runs each fp32 linear of a span (and the client's LM head) on CPU: torch's default BLAS (MKL) or
oneDNN's matmul, which torch ships and its compiler uses for CPU linears. Same weights either way (no copy, no
extra memory; the packed batch weights below are the exception); results agree to float rounding (~1e-6
relative), like any change of summation order.

Neither wins everywhere, so each weight shape is timed once per process with both, at the row counts of a decode
step (1 and 16 rows; the LM head at 1), the two taking turns over five rounds (a noisy machine then slows both
alike), and oneDNN replaces torch's default only when it is at least 3% faster: a close call (the fused 3072x576
gate/up weight here: 0.256 vs 0.270 ms at one row, 1.86 vs 1.99 ms at 16) would otherwise flip from one process to
the next. Measured per call with one thread on two 2-core hosts: on one, oneDNN won every SmolLM2 shape (576x1536:
0.24 -> 0.15 ms at 1 row, 0.61 -> 0.41 ms at 16 rows; the 49152x576 LM head 9.0 -> 6.2 ms); on an AVX2 AMD EPYC,
MKL won the layers' shapes (576x1536 at 16 rows: 0.58 ms vs 0.73) and oneDNN still won the LM head (12.6 -> 11.1
ms).

Batched decode steps (2-16 rows) may also run on a oneDNN-packed copy of a weight (`PackedLinear`, see
models/decode.py `BatchProjection`): that is a copy, so it is timed per shape against the plain weight's kernel
at 4 and 16 rows and kept only where at least 3% faster.

`INFERCHAIN_LINEAR_KERNEL=torch|onednn` fixes the choice (default `auto`: time both; `onednn` also packs every
batch weight, `torch` none). Where torch lacks oneDNN (`torch.backends.mkldnn.is_available()` false) every layer
stays on torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Literal, cast

import torch
from torch import nn

Kernel = Literal["torch", "onednn"]
LinearFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
ROWS = (1, 16)  # a decode step alone, and a batch of 16 sessions' steps


class KernelChoiceError(ValueError):
    """INFERCHAIN_LINEAR_KERNEL names no kernel this torch has."""


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


KERNELS: dict[Kernel, LinearFn] = {"torch": torch.nn.functional.linear, "onednn": _onednn}


def _best_seconds(
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], width: int, rows: tuple[int, ...], calls: int
) -> dict[str, float]:
    """Per function, summed over inputs of `rows` rows (and `width` columns), the best time of `calls` calls over
    five rounds, the functions taking turns within each round (a noisy machine only ever adds time, and slows all
    alike when they alternate)."""
    total = dict.fromkeys(fns, 0.0)
    with torch.inference_mode():
        for n in rows:
            x = torch.randn(n, width)
            for fn in fns.values():
                fn(x)  # warm-up: oneDNN builds its primitive for the shape on the first call
            best = dict.fromkeys(fns, float("inf"))
            for _ in range(5):
                for name, fn in fns.items():
                    started = time.perf_counter()
                    for _ in range(calls):
                        fn(x)
                    best[name] = min(best[name], time.perf_counter() - started)
            for name, seconds in best.items():
                total[name] += seconds
    return total


def _on(fn: LinearFn, weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: fn(x, weight, None)


def _timed_calls(weight: torch.Tensor) -> int:
    return max(2, min(50, 2_000_000 // weight.numel()))  # about the same time per shape: small ones more calls


MARGIN = 0.97  # oneDNN replaces torch's default only when it takes at most this share of torch's time


_chosen: dict[tuple[int, int, tuple[int, ...]], Kernel] = {}


def _fixed_kernel() -> Kernel | None:
    """The kernel INFERCHAIN_LINEAR_KERNEL fixes, or None for `auto` (time both)."""
    fixed = os.environ.get("INFERCHAIN_LINEAR_KERNEL", "auto")
    if fixed not in ("auto", "torch", "onednn"):
        raise KernelChoiceError(f"INFERCHAIN_LINEAR_KERNEL must be auto, torch or onednn, not {fixed!r}")
    if fixed == "onednn" and not onednn_available():
        raise KernelChoiceError("INFERCHAIN_LINEAR_KERNEL=onednn, but this torch has no oneDNN")
    return None if fixed == "auto" else cast(Kernel, fixed)


def kernel_for(weight: torch.Tensor, rows: tuple[int, ...] = ROWS) -> Kernel:
    """The faster kernel for an fp32 weight of this shape on this machine, with this process's torch threads,
    timed on `weight` itself at these row counts (once per shape and process)."""
    fixed = _fixed_kernel()
    if fixed is not None:
        return fixed
    if not onednn_available():
        return "torch"
    key = (int(weight.shape[0]), int(weight.shape[1]), rows)
    if key not in _chosen:
        fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {n: _on(fn, weight) for n, fn in KERNELS.items()}
        total = _best_seconds(fns, key[1], rows, _timed_calls(weight))
        _chosen[key] = "onednn" if total["onednn"] < MARGIN * total["torch"] else "torch"
    return _chosen[key]


def linear_fn(weight: torch.Tensor, rows: tuple[int, ...] = ROWS) -> LinearFn:
    """The function that computes x @ weight.T + bias fastest here (kernel_for), for fp32 on CPU; torch's
    own linear for anything else."""
    if weight.dtype != torch.float32 or weight.is_cuda or weight.dim() != 2:
        return torch.nn.functional.linear
    return KERNELS[kernel_for(weight, rows)]


class FastLinear(nn.Module):
    """y = x @ weight.T + bias by the kernel linear_fn picked, sharing the weight and bias of the layer it
    replaces."""

    def __init__(self, linear: nn.Linear, fn: LinearFn) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        kernel = next((name for name, fn in KERNELS.items() if fn is self.fn), "?")
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={kernel}"


def use_fastest_kernels(module: nn.Module) -> nn.Module:
    """Replace, in place, every nn.Linear inside `module` whose weight shape runs faster on oneDNN by a FastLinear
    (the others stay as they are). Returns `module`."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                fn = linear_fn(child.weight)
                if fn is not torch.nn.functional.linear:
                    setattr(parent, name, FastLinear(child, fn))
    return module


BATCH_ROWS = (4, 16)  # batches of a few and of 16 sessions' decode steps
PACK_FOR = 16  # the row count oneDNN lays a packed weight out for (it serves any row count)


class PackedLinear:
    """y = x @ weight.T + bias on oneDNN's own blocked copy of the weight, laid out for PACK_FOR-row inputs: for
    batched decode steps, where it is much faster than the plain weight (see packed_linear). A copy: it costs the
    weight's memory again."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_FOR)
        self.bias = None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


_packing_pays: dict[tuple[int, int], bool] = {}


def packed_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> PackedLinear | None:
    """A PackedLinear of this fp32 weight for batched steps where it pays: timed against the plain weight's kernel
    at BATCH_ROWS rows (once per shape and process) and used when at least MARGIN faster; always with
    INFERCHAIN_LINEAR_KERNEL=onednn, never with =torch, nor where torch lacks oneDNN. None: keep the plain weight."""
    if weight.dtype != torch.float32 or weight.is_cuda or weight.dim() != 2:
        return None
    fixed = _fixed_kernel()
    if fixed is not None or not onednn_available():
        return PackedLinear(weight, bias) if fixed == "onednn" else None
    key = (int(weight.shape[0]), int(weight.shape[1]))
    if _packing_pays.get(key) is False:  # this shape was timed already: no copy to make
        return None
    packed = PackedLinear(weight, bias)
    if key not in _packing_pays:
        fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "plain": _on(KERNELS[kernel_for(weight)], weight),
            "packed": packed,
        }
        total = _best_seconds(fns, key[1], BATCH_ROWS, _timed_calls(weight))
        _packing_pays[key] = total["packed"] < MARGIN * total["plain"]
    return packed if _packing_pays[key] else None
