"""A session's KV cache, written in place: each full-attention layer's keys and values live in one buffer sized
for the session's whole length (which the node reserved for it when the session opened: node/sessions.py),
so a decode step copies in its one token instead of concatenating everything cached so far (transformers'
DynamicLayer makes a new tensor of the whole cache per step, per layer: O(length) per token). The layers hand
attention views of the filled part; pages of the buffer are touched only as tokens arrive, so resident memory
still grows with the tokens held.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers for `capacity` tokens, written in place. If its
    tensors are replaced from outside (a transformers method that reorders or repeats them) or it would outgrow
    the buffer, it concatenates like a DynamicLayer from then on: never wrong, only slower."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None  # what this layer last handed out

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        batch, heads, _, dim = key_states.shape
        k = key_states.new_empty(batch, heads, self.capacity, dim)
        v = value_states.new_empty(batch, value_states.shape[1], self.capacity, value_states.shape[3])
        self._buffers = (k, v)
        self.keys, self.values = self._views = (k[:, :, :0], v[:, :, :0])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]  # type: ignore[union-attr]  # initialized above
        end = start + key_states.shape[-2]
        views, buffers = self._views, self._buffers
        replaced = views is None or self.keys is not views[0] or self.values is not views[1]
        if buffers is None or replaced or end > self.capacity:
            return super().update(key_states, value_states, *args, **kwargs)
        k, v = buffers
        k[:, :, start:end] = key_states
        v[:, :, start:end] = value_states
        self.keys, self.values = self._views = (k[:, :, :end], v[:, :, :end])
        return self.keys, self.values

    def reset(self) -> None:
        self._buffers = self._views = None
        super().reset()


def session_cache(config: Any, capacity: int | None) -> DynamicCache:
    """A model's cache for one session; with a `capacity` (tokens), its full-attention layers are ReservedLayers
    (sliding-window layers keep transformers' own windowed layer)."""
    cache = DynamicCache(config=config)
    if capacity is not None:
        cache.layers = [ReservedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
