"""Mistral family: Llama-like layers with an optional sliding attention window."""

from transformers.models.mistral.configuration_mistral import MistralConfig
from transformers.models.mistral.modeling_mistral import (
    MistralDecoderLayer,
    MistralRMSNorm,
    MistralRotaryEmbedding,
)

from inferchain.models.family import DecoderFamily, register

MISTRAL = register(
    DecoderFamily(
        name="mistral",
        model_types=("mistral",),
        config_class=MistralConfig,
        layer_class=MistralDecoderLayer,
        rotary_class=MistralRotaryEmbedding,
        norm_class=MistralRMSNorm,
        lean_decode=True,
    )
)
