"""A prepared model folder: config.json + model.safetensors + tokenizer + a manifest with the content hash.

The model id is a content hash: sha256 over the canonical config and the sha256 of every tensor. Each tensor's
own hash is in the manifest, so a node that loads only layers a..b can check exactly the tensors it loads
against the model id without reading the rest of the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "inferchain-manifest.json"
WEIGHTS = "model.safetensors"
# Keys of config.json that describe the software that wrote it, not the model.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype"}


class ModelFolderError(Exception):
    """A model folder is missing, incomplete, or does not match its content hash."""


def canonical_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(config.items()) if k not in _VOLATILE_CONFIG_KEYS}


def compute_model_id(config: dict[str, Any], tensor_hashes: dict[str, str]) -> str:
    payload = json.dumps(
        {"config": canonical_config(config), "tensors": dict(sorted(tensor_hashes.items()))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def tensor_digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    model_id: str
    family: str
    num_layers: int
    tensor_hashes: dict[str, str]
    name: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "model_id": self.model_id,
                "family": self.family,
                "num_layers": self.num_layers,
                "name": self.name,
                "tensors": self.tensor_hashes,
            },
            indent=1,
            sort_keys=True,
        )


@dataclass(frozen=True)
class ModelFolder:
    """A local folder holding one prepared model."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    def config_dict(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.config_path.read_text())
        except FileNotFoundError as e:
            raise ModelFolderError(f"{self.path} is not a model folder: config.json is missing") from e
        return data

    def manifest(self) -> Manifest:
        try:
            raw = json.loads((self.path / MANIFEST).read_text())
        except FileNotFoundError as e:
            raise ModelFolderError(f"{self.path} has no {MANIFEST}; prepare it with `inferchain model prepare`") from e
        manifest = Manifest(
            model_id=raw["model_id"],
            family=raw["family"],
            num_layers=int(raw["num_layers"]),
            tensor_hashes=dict(raw["tensors"]),
            name=raw.get("name", self.path.name),
        )
        expected = compute_model_id(self.config_dict(), manifest.tensor_hashes)
        if expected != manifest.model_id:
            raise ModelFolderError(
                f"{self.path}: manifest model id {manifest.model_id} does not match its content ({expected})"
            )
        return manifest
