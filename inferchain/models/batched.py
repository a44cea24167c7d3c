"""One decode step for several sessions at once through a span: the weight-bound work (projections, MLP) runs as
one batch; each session keeps its own KV cache and position.

Families with a lean decode step (models/decode.py) run it on the batch, with attention per session on each
session's own cache. Other families reuse their stock decoder layers unchanged: a `CacheBatch` stands in for the
cache, updates every session's own cache with its row of keys/values, and hands attention the keys/values padded
to the longest session, with a mask that hides the padding. Results equal the unbatched step up to float rounding
of the batched matmuls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from inferchain.models.span import SpanError, SpanModel


class CacheBatch:
    """Presents per-session caches as one batched cache to decoder layers (single-token decode only)."""

    def __init__(self, caches: Sequence[DynamicCache]) -> None:
        self.caches = list(caches)
        self.mask: torch.Tensor | None = None  # [batch, 1, 1, longest] bool, True = attend

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        rows = [c.update(keys[i : i + 1], values[i : i + 1], layer_idx) for i, c in enumerate(self.caches)]
        longest = max(k.shape[2] for k, _ in rows)
        if all(k.shape[2] == longest for k, _ in rows):
            return torch.cat([k for k, _ in rows]), torch.cat([v for _, v in rows])

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[2]))

        return torch.cat([pad(k) for k, _ in rows]), torch.cat([pad(v) for _, v in rows])


def supports_batching(span: SpanModel, start: int, end: int) -> bool:
    """Sliding-window layers keep a windowed cache whose padding this path does not model: run those alone."""
    return all(t == "full_attention" for t in span.layer_types(start, end))


@torch.inference_mode()
def decode_batch(
    span: SpanModel,
    hiddens: Sequence[torch.Tensor],
    positions: Sequence[int],
    caches: Sequence[DynamicCache],
    start: int,
    end: int,
) -> list[torch.Tensor]:
    """Run one token per session ([1, 1, hidden] each, at its own position) through layers [start, end)."""
    if not hiddens or not (len(hiddens) == len(positions) == len(caches)):
        raise ValueError("need one hidden state, position and cache per session")
    if any(h.shape[:2] != (1, 1) for h in hiddens):
        raise ValueError("batched decode takes exactly one token per session")
    if not supports_batching(span, start, end):
        raise SpanError(f"layers {start}:{end} include sliding-window attention; run them one session at a time")
    if len(hiddens) == 1:
        return [span.forward(hiddens[0], positions[0], caches[0], start, end)]
    hidden = torch.cat([h.to(span.dtype) for h in hiddens])  # [batch, 1, hidden]
    pos = torch.tensor([[p] for p in positions])
    if span.runs_lean(start, end):  # models/decode.py: attention per session, on each cache as it is
        hidden = span.decode(hidden, pos, caches, start, end)
        return [hidden[i : i + 1] for i in range(hidden.shape[0])]
    lengths = torch.tensor(positions) + 1  # keys each session attends to, after this step
    longest = int(lengths.max())
    mask = (torch.arange(longest)[None, :] < lengths[:, None])[:, None, None, :]  # [batch, 1, 1, longest]
    batch_cache = CacheBatch(caches)
    pe = span.rotary(hidden, position_ids=pos)
    for layer in span.layers_between(start, end):
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=batch_cache,
            use_cache=True,
            position_embeddings=pe,
        )
    return [hidden[i : i + 1] for i in range(hidden.shape[0])]
