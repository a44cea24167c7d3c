"""Shared fixtures: the prepared default model (built once and cached), tiny random models, a node swarm."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The prepared default model is cached in the repo's ignored .data folder, so the ~25 s conversion runs once.
os.environ.setdefault("INFERCHAIN_HOME", str(REPO / ".data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One linear kernel in every process of a test (nodes inherit it): a node and the test's own reference then round
# alike, and tolerances check batching and the wire, not which kernel each process happened to time faster.
# tests/test_models.py checks the per-shape timing itself.
os.environ.setdefault("INFERCHAIN_LINEAR_KERNEL", "torch")


@pytest.fixture
def int8_kernel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch for INFERCHAIN_INT8_KERNEL; the cached int8 kernel choice is forgotten before and after."""
    from inferchain.models import int8

    int8.native_kernel.cache_clear()
    yield monkeypatch
    int8.native_kernel.cache_clear()


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (scripts/postgres.sh); skipped only where it cannot be installed
    or started, never in CI."""
    folder = tempfile.mkdtemp(prefix="inferchain-pg-")
    script = str(REPO / "scripts" / "postgres.sh")
    proc = subprocess.run(["bash", script, "start", folder], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not be started:\n{proc.stderr[-2000:]}")
        pytest.skip(f"PostgreSQL could not be installed or started: {proc.stderr.strip()[-300:]}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", script, "stop", folder], timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests on SQLite and on a fresh database of the real PostgreSQL server."""
    from sqlalchemy import text

    from inferchain.marketplace.db import make_engine

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    name = f"test_{os.getpid()}_{time.monotonic_ns()}"
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
