"""What a model family must provide to be cut into spans, and the registry of families.

A family is a small adapter (one file per family: llama.py, mistral.py, qwen2.py) naming the transformers classes
for its decoder layer, rotary embedding and final norm, and the weight names of its parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


class UnknownFamilyError(Exception):
    """The model's `model_type` has no adapter in inferchain.models."""


@dataclass(frozen=True)
class DecoderFamily:
    """A decoder-only family whose layers are `model.layers.{i}` and that takes rotary embeddings from outside."""

    name: str
    model_types: tuple[str, ...]
    config_class: type
    layer_class: Callable[[Any, int], nn.Module]
    rotary_class: Callable[..., nn.Module]
    norm_class: Callable[..., nn.Module]
    embed_key: str = "model.embed_tokens.weight"
    norm_key: str = "model.norm.weight"
    head_key: str = "lm_head.weight"
    lean_decode: bool = False  # its layers are the structure models/decode.py runs (norms, q/k/v, rotary, gated MLP)

    def layer_prefix(self, index: int) -> str:
        return f"model.layers.{index}."

    def make_config(self, raw: dict[str, Any]) -> Any:
        return self.config_class(**{k: v for k, v in raw.items() if k != "architectures"})

    def layer_type(self, config: Any, index: int) -> str:
        """'full_attention' or 'sliding_attention': which causal mask layer `index` needs."""
        types = getattr(config, "layer_types", None)
        if types:
            return str(types[index])
        if self.name == "mistral" and getattr(config, "sliding_window", None):
            return "sliding_attention"
        return "full_attention"

    def build_norm(self, config: Any) -> nn.Module:
        return self.norm_class(config.hidden_size, eps=config.rms_norm_eps)

    def embed_scale(self, config: Any) -> float:
        return 1.0


_FAMILIES: dict[str, DecoderFamily] = {}


def register(family: DecoderFamily) -> DecoderFamily:
    for model_type in family.model_types:
        _FAMILIES[model_type] = family
    return family


def family_for(model_type: str) -> DecoderFamily:
    # Importing the adapters registers them; they are tiny and import only transformers classes.
    from inferchain.models import llama, mistral, qwen2  # noqa: F401

    try:
        return _FAMILIES[model_type]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES))
        raise UnknownFamilyError(f"no adapter for model_type {model_type!r} (known: {known})") from None


def no_grad_eval(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
