"""int8 weights for a span: weight-only quantization, one scale per output channel.

Why weight-only: torch's dynamic quantization also quantizes each linear layer's *input* to 8 bits with one scale
per tensor; SmolLM2's hidden states carry a few channels hundreds of times larger than the rest, so that rounding
wipes out the small channels (measured: 36% top-1 agreement with fp32 on bench/node.py's text). Here activations
stay floating point; only the weights are int8, which is what a memory-bound decode step pays for.

The matmul is torch's `_weight_int8pack_mm` (int8 weights x bf16 activations, fp32 accumulation): on CPU it is
the fast int8 path (2.5x less time than an fp32 linear for a 576x1536 decode step here; its fp32-activation
variant is slower than fp32). Outputs go back to the caller's dtype, so the residual stream stays fp32.

Two linears per layer stay fp32 (`KEEP_FP32`): v_proj and down_proj. Quantizing them costs the most agreement
(per-type sweep over 251 tokens: down_proj alone 97.2%, v_proj alone 96.8%; all seven types 96.0%); without
them the span agrees 98.8% (KL 0.0011) and v_proj is tiny. bench/node.py measures speed and agreement.
"""

from __future__ import annotations

import torch
from torch import nn

from inferchain.models.family import no_grad_eval

KEEP_FP32 = ("v_proj", "down_proj")


class Int8Linear(nn.Module):
    """y = (x @ q.T) * scale, q int8 [out, in] with one bf16 scale per output row (symmetric, absmax / 127)."""

    qweight: torch.Tensor
    scale: torch.Tensor
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
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.out_features, self.in_features = int(qweight.shape[0]), int(qweight.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        y = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_int8(layers: nn.ModuleList, keep_fp32: tuple[str, ...] = KEEP_FP32) -> nn.ModuleList:
    """Replace every nn.Linear in `layers` (but those named in `keep_fp32`) by an Int8Linear, in place."""
    for module in list(layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and name not in keep_fp32:
                setattr(module, name, Int8Linear(child))
    return no_grad_eval(layers)  # type: ignore[return-value]
