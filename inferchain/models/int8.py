"""int8 weights for a span: weight-only quantization, one scale per output channel.

Why weight-only: torch's dynamic quantization also quantizes each linear layer's *input* to 8 bits with one scale
per tensor; SmolLM2's hidden states carry a few channels hundreds of times larger than the rest, so that rounding
wipes out the small channels (measured: 36% top-1 agreement with fp32 on bench/node.py's text). Here activations
stay floating point; only the weights are int8, which is what a memory-bound decode step pays for.

Two kernels run the matmul. A lone row (one session's decode step, the latency a buyer feels) runs on this
package's own loop, models/int8_kernel.cpp (fp32 activations, AVX2 + FMA, weights prefetched ahead), built once
per machine by torch's extension loader into $INFERCHAIN_HOME/kernels: torch's int8 kernel streams int8 weights
from memory at about half the rate MKL streams fp32, so a 4x smaller weight took only ~2x less time (on a 2-core
AVX-512 Xeon VM, one thread, weights cold, per call: 768x576 129 -> 73 us, 3072x576 465 -> 332 us, 576x1536
227 -> 173 us; ~6 G weights/s against torch's ~3.5-4 and fp32's 1.6-2.1). Several rows (batches, prompts) run on
torch's `_weight_int8pack_mm` (bf16 activations, fp32 accumulation), faster there (16 rows of 768x576: 433 vs
687 us). `INFERCHAIN_INT8_KERNEL=auto|native|torch`:
auto (the default) builds the loop where the CPU has AVX2 and a C++ compiler and ninja are found, else warns once
and uses torch's kernel for every row count; native fails instead; torch never builds it. Outputs go back to the
caller's dtype, so the residual stream stays fp32.

Two linears per layer stay fp32 (`KEEP_FP32`): v_proj and down_proj. Quantizing them costs the most agreement
(per-type sweep over 251 tokens: down_proj alone 97.2%, v_proj alone 96.8%; all seven types 96.0%); without
them the span agrees 98.8% (KL 0.0011; 98.4% fed token by token, i.e. on the native kernel) and v_proj is tiny.
bench/node.py measures speed and agreement, both ways.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inferchain.models.family import no_grad_eval
from inferchain.models.prepare import data_home

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("int8_kernel.cpp")
_CFLAGS = ["-O3", "-mavx2", "-mfma"]
_STALE_LOCK_S = 600  # a build takes ~20 s; a lock this old was left by a killed one


class Int8KernelError(RuntimeError):
    """INFERCHAIN_INT8_KERNEL asks for what this machine cannot give (a bad value, or native where it won't build)."""


def _build_native() -> Any:
    """Build (once per machine: cached by source, flags, torch and Python version) and load
    models/int8_kernel.cpp; its op."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        raise Int8KernelError(f"the CPU lacks AVX2 (torch sees {torch.backends.cpu.get_cpu_capability()})")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise Int8KernelError("no C++ compiler (c++, or $CXX) on PATH")
    bin_dir = str(Path(sys.executable).parent)  # pip's ninja installs its binary beside the interpreter
    if shutil.which("ninja") is None and shutil.which("ninja", path=bin_dir) is not None:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        raise Int8KernelError("ninja (pip install ninja) is not on PATH")
    from torch.utils.cpp_extension import load

    built_for = f"{' '.join(_CFLAGS)} torch {torch.__version__} python {sys.version_info[:2]}"
    key = hashlib.sha256(_SOURCE.read_bytes() + built_for.encode())
    build = data_home() / "kernels" / f"int8-{key.hexdigest()[:16]}"
    build.mkdir(parents=True, exist_ok=True)
    lock = build / "lock"  # torch's loader waits, without end, for a lock a killed build may have left behind
    if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
        lock.unlink(missing_ok=True)
    if not any(build.glob("*.so")):
        log.info("building the int8 kernel (once per machine) in %s", build)
    load(
        f"inferchain_int8_{key.hexdigest()[:16]}",
        [str(_SOURCE)],
        extra_cflags=_CFLAGS,
        build_directory=str(build),
        is_python_module=False,
    )
    return torch.ops.inferchain.int8_linear


@functools.cache
def native_kernel() -> Any:
    """The one-row int8 kernel of models/int8_kernel.cpp, or None where INFERCHAIN_INT8_KERNEL (see the module
    docstring) or this machine rules it out."""
    choice = os.environ.get("INFERCHAIN_INT8_KERNEL", "auto")
    if choice not in ("auto", "native", "torch"):
        raise Int8KernelError(f"INFERCHAIN_INT8_KERNEL must be auto, native or torch, not {choice!r}")
    if choice == "torch":
        return None
    try:
        return _build_native()
    except Exception as e:  # a missing tool or a failed build: auto falls back, native reports it
        if choice == "native":
            raise Int8KernelError(f"the native int8 kernel is not available: {e}") from e
        log.warning("int8: using torch's kernel for every row count (native kernel unavailable: %s)", e)
        return None


KEEP_FP32 = ("v_proj", "down_proj")


class Int8Linear(nn.Module):
    """y = (x @ q.T) * scale, q int8 [out, in] with one bf16 scale per output row (symmetric, absmax / 127)."""

    qweight: torch.Tensor
    scale: torch.Tensor
    scale32: torch.Tensor
    bias: nn.Parameter | None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self._hold(qweight, scale.to(torch.bfloat16), bias)

    @classmethod
    def from_parts(cls, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> Int8Linear:
        """An Int8Linear over existing int8 rows and their scales (e.g. several projections' rows concatenated)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._hold(qweight, scale, bias)
        return self

    def _hold(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("scale32", scale.float())  # the same scales, for the native kernel
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.out_features, self.in_features = int(qweight.shape[0]), int(qweight.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        native = native_kernel() if flat.shape[0] == 1 and x.dtype == torch.float32 else None
        if native is not None:
            y = native(flat, self.qweight, self.scale32)
        else:
            y = torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16).contiguous(), self.qweight, self.scale)
            y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_int8(layers: nn.ModuleList, keep_fp32: tuple[str, ...] = KEEP_FP32) -> nn.ModuleList:
    """Replace every nn.Linear in `layers` (but those named in `keep_fp32`) by an Int8Linear, in place; builds the
    native kernel now if it is to be used (not at a first step, which a build would stall)."""
    native_kernel()
    for module in list(layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and name not in keep_fp32:
                setattr(module, name, Int8Linear(child))
    return no_grad_eval(layers)  # type: ignore[return-value]
