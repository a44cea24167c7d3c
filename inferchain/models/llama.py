"""Llama family (also SmolLM2, TinyLlama and other Llama-architecture checkpoints)."""

from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from inferchain.models.family import DecoderFamily, register

LLAMA = register(
    DecoderFamily(
        name="llama",
        model_types=("llama",),
        config_class=LlamaConfig,
        layer_class=LlamaDecoderLayer,
        rotary_class=LlamaRotaryEmbedding,
        norm_class=LlamaRMSNorm,
        lean_decode=True,
    )
)
