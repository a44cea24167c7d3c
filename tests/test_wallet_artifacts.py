"""The ABIs and bytecode shipped in inferchain/wallet/abi/ must be built from the current contracts/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferchain.wallet.artifacts import (
    CONTRACT_NAMES,
    ArtifactError,
    export,
    find_repo_root,
    load_artifact,
    load_manifest,
    sources_digest,
)

REPO = find_repo_root()
STALE_HINT = "shipped ABIs are stale: run `npx hardhat compile && python -m inferchain.wallet.artifacts`"


def test_every_contract_ships_abi_and_bytecode() -> None:
    manifest = load_manifest()
    assert manifest["contracts"] == list(CONTRACT_NAMES)
    for name in CONTRACT_NAMES:
        art = load_artifact(name)
        assert art.name == name
        assert art.bytecode.startswith("0x") and len(art.bytecode) > 1000
        assert any(item.get("type") == "constructor" for item in art.abi)


def test_shipped_artifacts_match_the_sources() -> None:
    if REPO is None:
        pytest.skip("installed package without contracts/: nothing to compare against")
    assert load_manifest()["sources_sha256"] == sources_digest(REPO), STALE_HINT


def test_digest_changes_with_any_source_edit(tmp_path: Path) -> None:
    if REPO is None:
        pytest.skip("not a source checkout")
    copy = tmp_path / "repo"
    (copy / "contracts" / "test").mkdir(parents=True)
    for rel in ("hardhat.config.js", "package.json"):
        (copy / rel).write_bytes((REPO / rel).read_bytes())
    for src in (REPO / "contracts").rglob("*.sol"):
        dst = copy / src.relative_to(REPO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    base = sources_digest(copy)
    assert base == sources_digest(REPO)

    (copy / "contracts" / "test" / "Mock.sol").write_text("// test-only mocks are not shipped\n")
    assert sources_digest(copy) == base

    escrow = copy / "contracts" / "PaymentEscrow.sol"
    escrow.write_text(escrow.read_text() + "\n// edit\n")
    assert sources_digest(copy) != base


def test_export_reads_hardhat_output(tmp_path: Path) -> None:
    if REPO is None:
        pytest.skip("not a source checkout")
    fake = tmp_path / "repo"
    (fake / "contracts").mkdir(parents=True)
    for rel in ("hardhat.config.js", "package.json"):
        (fake / rel).write_bytes((REPO / rel).read_bytes())
    with pytest.raises(ArtifactError, match="npx hardhat compile"):
        export(fake, tmp_path / "out")
    build_info = fake / "artifacts" / "build-info" / "b.json"
    build_info.parent.mkdir(parents=True)
    sources = {}
    for name in CONTRACT_NAMES:
        source = fake / "contracts" / f"{name}.sol"
        source.write_text(f"// {name}\n")
        sources[f"contracts/{name}.sol"] = {"content": source.read_text()}
        folder = fake / "artifacts" / "contracts" / f"{name}.sol"
        folder.mkdir(parents=True)
        (folder / f"{name}.json").write_text(
            json.dumps({"contractName": name, "abi": [], "bytecode": "0x00", "deployedBytecode": "0x"})
        )
        (folder / f"{name}.dbg.json").write_text(json.dumps({"buildInfo": "../../build-info/b.json"}))
    # artifacts compiled from other (e.g. coverage-instrumented) sources are refused
    instrumented = {k: {"content": v["content"] + "c_0x1234;"} for k, v in sources.items()}
    build_info.write_text(json.dumps({"input": {"sources": instrumented}}))
    with pytest.raises(ArtifactError, match="not compiled from the current"):
        export(fake, tmp_path / "out")
    build_info.write_text(json.dumps({"input": {"sources": sources}}))
    written = export(fake, tmp_path / "out")
    assert {p.name for p in written} == {f"{n}.json" for n in CONTRACT_NAMES} | {"manifest.json"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sources_sha256"] == sources_digest(fake)
    load_artifact.cache_clear()  # export cleared it too; keep later tests on the shipped files
