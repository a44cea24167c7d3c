"""Qwen2 family: Llama-like layers with q/k/v biases and per-layer attention types."""

from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RMSNorm, Qwen2RotaryEmbedding

from inferchain.models.family import DecoderFamily, register

QWEN2 = register(
    DecoderFamily(
        name="qwen2",
        model_types=("qwen2",),
        config_class=Qwen2Config,
        layer_class=Qwen2DecoderLayer,
        rotary_class=Qwen2RotaryEmbedding,
        norm_class=Qwen2RMSNorm,
        lean_decode=True,
    )
)
