"""Load and run a span of decoder layers [start, end) and the client's local parts (embeddings, final norm, head).

A node loads only the tensors of its layers (checked one by one against the manifest's hashes), so its memory
grows with its span, not with the model. Layers keep their absolute indices, so the KV cache and the causal mask
are addressed by absolute layer index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from inferchain.models.cache import session_cache
from inferchain.models.decode import DecodeLayer, KVCache
from inferchain.models.family import DecoderFamily, family_for, no_grad_eval
from inferchain.models.folder import Manifest, ModelFolder, ModelFolderError, tensor_digest
from inferchain.models.int8 import quantize_int8
from inferchain.models.kernels import linear_fn, use_fastest_kernels

LoadProgress = Callable[[int, int], None]
"""Called with (tensors loaded, tensors to load)."""


Precision = Literal["fp32", "int8"]


class SpanError(ValueError):
    """A requested span is not valid for the model."""


@dataclass(frozen=True)
class ModelInfo:
    folder: ModelFolder
    manifest: Manifest
    family: DecoderFamily
    config: Any

    @classmethod
    def open(cls, path: str | Path) -> ModelInfo:
        folder = ModelFolder(Path(path))
        manifest = folder.manifest()
        raw = folder.config_dict()
        family = family_for(raw.get("model_type", ""))
        config = family.make_config(raw)
        config._attn_implementation = "sdpa"
        return cls(folder, manifest, family, config)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id


def _load_tensors(info: ModelInfo, keys: list[str], progress: LoadProgress | None) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(info.folder.weights_path), framework="pt") as f:
        available = set(f.keys())
        for n, key in enumerate(keys):
            if key not in available:
                raise ModelFolderError(f"{info.folder.path}: tensor {key} is missing from the weights")
            # a copy in the process's own memory: safetensors hands out views of its file mapping, and the matmuls
            # read file-backed pages measurably slower (the chain bench's client step, mostly the LM head: 8.0 -> 7.4
            # ms per token in an interleaved A/B)
            t = f.get_tensor(key).clone(memory_format=torch.contiguous_format)
            expected = info.manifest.tensor_hashes.get(key)
            if expected != tensor_digest(t.view(-1).view(torch.uint8).numpy().tobytes()):
                raise ModelFolderError(
                    f"{info.folder.path}: tensor {key} does not match model {info.model_id} (corrupt or altered)"
                )
            out[key] = t
            if progress is not None:
                progress(n + 1, len(keys))
    return out


def _keys_with_prefix(info: ModelInfo, prefix: str) -> list[str]:
    return sorted(k for k in info.manifest.tensor_hashes if k.startswith(prefix))


class SpanModel:
    """Decoder layers [start, end) of one model, ready to run on hidden states with a per-session KV cache."""

    def __init__(
        self,
        path: str | Path,
        start: int,
        end: int,
        dtype: torch.dtype = torch.float32,
        progress: LoadProgress | None = None,
        precision: Precision = "fp32",
        lean_decode: bool = True,
        batch_weights: bool = True,
    ) -> None:
        """`precision`: "fp32" weights as stored, or "int8" (weight-only int8 with per-channel scales for most
        linear layers, see models/int8.py; activations stay float). `lean_decode`: run one-token steps by
        models/decode.py where the family allows it (the default); False keeps the stock layers for every step.
        `batch_weights`: batched steps of several sessions may run the fp32 projections on oneDNN-packed copies of
        their weights where that is timed faster (models/decode.py `BatchProjection`; it costs those weights'
        memory again); False: batches use the one set of weights."""
        if precision not in ("fp32", "int8"):
            raise SpanError(f"precision must be fp32 or int8, got {precision!r}")
        self.precision = precision
        self.info = ModelInfo.open(path)
        if not (0 <= start < end <= self.info.num_layers):
            raise SpanError(f"span {start}:{end} is not within the model's {self.info.num_layers} layers")
        self.start, self.end, self.dtype = start, end, dtype
        family, config = self.info.family, self.info.config
        keys = [k for i in range(start, end) for k in _keys_with_prefix(self.info, family.layer_prefix(i))]
        tensors = _load_tensors(self.info, keys, progress)
        self.layers = nn.ModuleList()
        for i in range(start, end):
            with torch.device("meta"):
                layer = family.layer_class(config, i)
            prefix = family.layer_prefix(i)
            state = {k[len(prefix) :]: tensors.pop(k).to(dtype) for k in list(tensors) if k.startswith(prefix)}
            layer.load_state_dict(state, assign=True, strict=True)
            self.layers.append(no_grad_eval(layer))
        if precision == "int8":
            self.layers = quantize_int8(self.layers)
        use_fastest_kernels(self.layers)  # the fp32 linears left (all, or those int8 keeps fp32): see kernels.py
        self.rotary = no_grad_eval(family.rotary_class(config=config))
        self._types = [family.layer_type(config, i) for i in range(start, end)]
        # one-token steps through full-attention layers: models/decode.py (fuses projections, sharing the weights)
        lean = lean_decode and family.lean_decode
        self._decode = [DecodeLayer(layer, batch_weights) for layer in self.layers] if lean else None

    @property
    def num_layers(self) -> int:
        return self.end - self.start

    def layer_types(self, start: int, end: int) -> list[str]:
        return self._types[start - self.start : end - self.start]

    def layers_between(self, start: int, end: int) -> list[nn.Module]:
        return list(self.layers[start - self.start : end - self.start])

    def runs_lean(self, start: int, end: int) -> bool:
        """Whether one-token steps through layers [start, end) run models/decode.py's lean path."""
        return self._decode is not None and all(t == "full_attention" for t in self.layer_types(start, end))

    @torch.inference_mode()
    def decode(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        caches: Sequence[KVCache],
        start: int,
        end: int,
    ) -> torch.Tensor:
        """One token per session: hidden [batch, 1, hidden] at `positions` [batch, 1], each session with its own
        cache (`caches`, in order), through layers [start, end) by the lean path (only where `runs_lean`)."""
        if self._decode is None or not self.runs_lean(start, end):
            raise SpanError(f"layers {start}:{end} have no lean decode path")
        cos, sin = (t.unsqueeze(1) for t in self.rotary(hidden, position_ids=positions))
        x = hidden.reshape(hidden.shape[0], hidden.shape[2])
        for layer in self._decode[start - self.start : end - self.start]:
            x = layer(x, cos, sin, caches)
        return x.view(hidden.shape)

    def new_cache(self, max_length: int | None = None) -> DynamicCache:
        """A session's cache; given the most tokens it will hold, written in place (models/cache.py)."""
        return session_cache(self.info.config, max_length)

    def cache_bytes_per_token(self, num_layers: int | None = None) -> int:
        """KV cache bytes one token costs in `num_layers` layers of this span (default: all of them)."""
        c = self.info.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        elem = torch.finfo(self.dtype).bits // 8
        layers = self.num_layers if num_layers is None else num_layers
        return 2 * layers * c.num_key_value_heads * head_dim * elem

    @torch.inference_mode()
    def forward(
        self,
        hidden: torch.Tensor,
        position: int,
        cache: DynamicCache,
        start: int | None = None,
        end: int | None = None,
    ) -> torch.Tensor:
        """Run hidden states [batch, tokens, hidden] at absolute positions position.. through layers
        [start, end) of this span (default: the whole span)."""
        start = self.start if start is None else start
        end = self.end if end is None else end
        if not (self.start <= start < end <= self.end):
            raise SpanError(f"layers {start}:{end} are not within this span {self.start}:{self.end}")
        first, last = start - self.start, end - self.start
        types = self._types[first:last]
        hidden = hidden.to(self.dtype)
        positions = torch.arange(position, position + hidden.shape[1]).unsqueeze(0)
        if hidden.shape[:2] == (1, 1) and self.runs_lean(start, end):
            return self.decode(hidden, positions, [cache], start, end)
        config = self.info.config
        masks: dict[str, Any] = {}
        for layer_type in set(types):
            first_of_type = start + types.index(layer_type)
            make = create_sliding_window_causal_mask if layer_type == "sliding_attention" else create_causal_mask
            masks[layer_type] = make(
                config=config,
                inputs_embeds=hidden,
                attention_mask=None,
                past_key_values=cache,
                position_ids=positions,
                layer_idx=first_of_type,
            )
        pe = self.rotary(hidden, position_ids=positions)
        for layer, layer_type in zip(self.layers[first:last], types, strict=True):
            hidden = layer(
                hidden,
                attention_mask=masks[layer_type],
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                position_embeddings=pe,
            )
        return hidden


class ModelHead:
    """The client's local parts: token embeddings, final norm and LM head (tied to the embeddings if so)."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        self.info = ModelInfo.open(path)
        family, config = self.info.family, self.info.config
        tied = bool(getattr(config, "tie_word_embeddings", False))
        keys = [family.embed_key, family.norm_key] + ([] if tied else [family.head_key])
        tensors = _load_tensors(self.info, keys, None)
        self.embed_weight = tensors[family.embed_key].to(dtype)
        self.norm = family.build_norm(config)
        self.norm.load_state_dict({"weight": tensors[family.norm_key].to(dtype)}, assign=True)
        no_grad_eval(self.norm)
        self.head_weight = self.embed_weight if tied else tensors[family.head_key].to(dtype)
        self.scale = family.embed_scale(config)
        self._head = linear_fn(self.head_weight, rows=(1,))  # one row: each session's last position

    @torch.inference_mode()
    def embed(self, token_ids: list[int]) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long)
        h = torch.nn.functional.embedding(ids, self.embed_weight)
        return h * self.scale if self.scale != 1.0 else h

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [vocab] for the last position of hidden states [1, tokens, hidden]."""
        last = self.norm(hidden[:, -1:, :].to(self.embed_weight.dtype))
        return self._head(last, self.head_weight, None)[0, -1]
