"""Test-only misbehaviour for the adversarial suite: a node process started with INFERCHAIN_ADVERSARY set cheats.

    noise:S        adds Gaussian noise of S x each token's standard deviation to every output (and commits to it)
    skip:N         skips the last N layers of the requested span (saves compute, commits to the wrong result)
    model:PATH     computes with the same layers of another prepared model folder (e.g. a cheaper or altered
                   model) while announcing and billing the model it loaded
    equivocate     signs a second, different receipt when a buyer opens the same session and span again (an
                   honest node refuses the second open and would never sign twice)
    relay          pushes altered outputs to the next node of a relayed session while answering the true ones to
                   the client (the client catches it by the next hop's input digest)

A cheating node commits to exactly what it sends, so the buyer's own check passes and only a validator's re-run
(or, for `equivocate`, the two receipts side by side) can catch it. Never set this outside tests and benchmarks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ENV = "INFERCHAIN_ADVERSARY"


@dataclass(frozen=True)
class Adversary:
    noise: float = 0.0
    skip: int = 0
    model: str | None = None
    equivocate: bool = False
    relay: bool = False

    @classmethod
    def from_env(cls) -> Adversary | None:
        spec = os.environ.get(ENV, "").strip()
        if not spec:
            return None
        kind, _, value = spec.partition(":")
        if kind == "noise":
            return cls(noise=float(value or "0.1"))
        if kind == "skip":
            return cls(skip=int(value or "1"))
        if kind == "model" and value:
            return cls(model=value)
        if kind == "equivocate":
            return cls(equivocate=True)
        if kind == "relay":
            return cls(relay=True)
        raise ValueError(f"{ENV} must be noise:S, skip:N, model:PATH, equivocate or relay, got {spec!r}")

    def layers(self, start: int, end: int) -> tuple[int, int]:
        return start, max(start + 1, end - self.skip)

    def perturb(self, out: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.noise <= 0:
            return out
        scale = out.std(dim=-1, keepdim=True)
        noise = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(np.float32))
        return out + self.noise * scale * noise

    def relayed(self, wire: dict) -> dict:
        """For `relay`: the tensor pushed to the next node, with its first value's bytes flipped."""
        if not self.relay:
            return wire
        data = bytearray(wire["b"])
        data[0] ^= 0x55
        return wire | {"b": bytes(data)}

    def swap_weights(self, span: Any) -> None:
        """For `model:PATH`: load the same layers of the other model folder into `span` in place, so the node computes
        with them while still announcing and billing the model it loaded (and checked) first."""
        if self.model is None:
            return
        from inferchain.models.span import SpanModel

        other = SpanModel(Path(self.model), span.start, span.end)
        for mine, theirs in zip(span.layers, other.layers, strict=True):
            mine.load_state_dict(theirs.state_dict())


def altered_model_folder(
    source: Path, out: Path, layers: tuple[int, int], relative_noise: float, seed: int = 0
) -> Path:
    """A model folder that passes for `source` on layers [start, end) but is not it: every weight of those layers
    gets Gaussian noise of `relative_noise` x that tensor's std (a stand-in for a cheaper or altered model). Holds
    only those layers' tensors, with a manifest of its own; `model:PATH` runs a node's span on it."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from inferchain.models.folder import WEIGHTS
    from inferchain.models.prepare import write_manifest

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", out / "config.json")
    gen = torch.Generator().manual_seed(seed)
    prefixes = tuple(f"model.layers.{i}." for i in range(*layers))
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(source / WEIGHTS), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            if key.startswith(prefixes):
                t = f.get_tensor(key).float()
                tensors[key] = (t + relative_noise * t.std() * torch.randn(t.shape, generator=gen)).contiguous()
    save_file(tensors, str(out / WEIGHTS))
    write_manifest(out, f"altered-{source.name}")
    return out
