"""Shared fixtures: the prepared default model (built once and cached), tiny random models, a node swarm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The prepared default model is cached in the repo's ignored .data folder, so the ~25 s conversion runs once.
os.environ.setdefault("INFERCHAIN_HOME", str(REPO / ".data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from inferchain.models.prepare import default_model_dir, prepare_default_model

    folder = default_model_dir()
    prepare_default_model(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(smollm2: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2))


@pytest.fixture(scope="session")
def reference_model(smollm2: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def swarm(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three node processes serving 0:10, 10:20, 20:30 of SmolLM2, plus a spare for 10:20."""
    from inferchain.node.launch import local_swarm

    workdir = tmp_path_factory.mktemp("swarm")
    with local_swarm([(0, 10), (10, 20), (20, 30), (10, 20)], workdir, smollm2) as nodes:
        yield nodes
