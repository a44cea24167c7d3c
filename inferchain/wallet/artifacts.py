"""Contract ABIs and bytecode shipped inside the package, exported from Hardhat's build output.

`python -m inferchain.wallet.artifacts` compiles (`hardhat compile --force`), copies the ABI and creation
bytecode of each deployable contract into `inferchain/wallet/abi/` and records a digest of the Solidity
sources and the compiler settings they were built from; `tests/test_wallet_artifacts.py` fails when the
digest no longer matches `contracts/`, i.e. when the shipped bytecode is stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

#: The contracts a deployment consists of, in deployment order.
CONTRACT_NAMES: tuple[str, ...] = ("InferToken", "RewardPool", "NodeStaking", "PaymentEscrow")

ABI_DIR = Path(__file__).resolve().parent / "abi"
MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """A shipped or Hardhat artifact is missing or malformed."""


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    """The shipped artifact of contract `name` (one of `CONTRACT_NAMES`)."""
    path = ABI_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"no shipped artifact for {name!r} at {path}; run `npx hardhat compile && "
            "python -m inferchain.wallet.artifacts`"
        ) from None
    return Artifact(name=data["contractName"], abi=data["abi"], bytecode=data["bytecode"])


def load_manifest() -> dict[str, Any]:
    """What the shipped artifacts were built from (source digest, compiler, OpenZeppelin version)."""
    path = ABI_DIR / MANIFEST
    if not path.exists():
        raise ArtifactError(f"no artifact manifest at {path}")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def find_repo_root(start: Path | None = None) -> Path | None:
    """The source checkout (the folder holding hardhat.config.js and contracts/), if this is one."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        if (folder / "hardhat.config.js").is_file() and (folder / "contracts").is_dir():
            return folder
    return None


def _toolchain(repo: Path) -> dict[str, str]:
    dev = json.loads((repo / "package.json").read_text()).get("devDependencies", {})
    return {"solc": dev.get("solc", "?"), "openzeppelin": dev.get("@openzeppelin/contracts", "?")}


def sources_digest(repo: Path) -> str:
    """sha256 over the deployable Solidity sources, hardhat.config.js and the compiler/library versions.

    Test-only mocks under contracts/test/ are left out: they are never shipped.
    """
    h = hashlib.sha256()
    contracts = repo / "contracts"
    files = sorted(p for p in contracts.rglob("*.sol") if "test" not in p.relative_to(contracts).parts[:-1])
    for path in files:
        h.update(path.relative_to(repo).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    h.update((repo / "hardhat.config.js").read_bytes() + b"\0")
    h.update(json.dumps(_toolchain(repo), sort_keys=True).encode())
    return h.hexdigest()


def _check_built_from_current_sources(repo: Path, artifact: Path, name: str) -> None:
    """Refuses artifacts whose compiler input differs from the source on disk.

    A solidity-coverage run leaves instrumented artifacts behind; shipping those would be silently wrong.
    """
    dbg = artifact.with_suffix(".dbg.json")
    try:
        build_info = (dbg.parent / json.loads(dbg.read_text())["buildInfo"]).resolve()
        sources = json.loads(build_info.read_text())["input"]["sources"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"no readable build info for {name} ({exc}): run `npx hardhat compile`") from exc
    key = f"contracts/{name}.sol"
    on_disk = (repo / key).read_text()
    if sources.get(key, {}).get("content") != on_disk:
        raise ArtifactError(
            f"artifacts/ for {name} were not compiled from the current {key} (e.g. a coverage run left "
            "instrumented ones): run `npx hardhat compile --force` first"
        )


def compile_contracts(repo: Path) -> None:
    """`hardhat compile --force` in `repo` (forced: a coverage run may have left instrumented output)."""
    import subprocess

    hardhat = repo / "node_modules" / ".bin" / "hardhat"
    if not hardhat.exists():
        raise ArtifactError(f"Hardhat is not installed in {repo}: run `npm ci` there first")
    done = subprocess.run([str(hardhat), "compile", "--force", "--quiet"], cwd=repo, check=False)
    if done.returncode != 0:
        raise ArtifactError(f"hardhat compile failed (exit {done.returncode})")


def export(repo: Path, out_dir: Path = ABI_DIR) -> list[Path]:
    """Copies ABI + bytecode of `CONTRACT_NAMES` from Hardhat's artifacts/ into `out_dir`, with a manifest."""
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CONTRACT_NAMES:
        src = repo / "artifacts" / "contracts" / f"{name}.sol" / f"{name}.json"
        if not src.exists():
            raise ArtifactError(f"{src} is missing: run `npx hardhat compile` first")
        _check_built_from_current_sources(repo, src, name)
        data = json.loads(src.read_text())
        art = {"contractName": data["contractName"], "abi": data["abi"], "bytecode": data["bytecode"]}
        dst = out_dir / f"{name}.json"
        dst.write_text(json.dumps(art, indent=1, sort_keys=True) + "\n")
        written.append(dst)
    manifest = {
        "sources_sha256": sources_digest(repo),
        "contracts": list(CONTRACT_NAMES),
        **_toolchain(repo),
    }
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    written.append(path)
    load_artifact.cache_clear()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=None, help="source checkout (default: found upwards)")
    parser.add_argument("--no-compile", action="store_true", help="export artifacts/ as they are")
    args = parser.parse_args(argv)
    repo = args.repo or find_repo_root()
    if repo is None:
        print("not inside a source checkout (no hardhat.config.js + contracts/ found)", file=sys.stderr)
        return 2
    try:
        if not args.no_compile:
            compile_contracts(repo)
        for path in export(repo):
            print(f"wrote {path.relative_to(repo) if path.is_relative_to(repo) else path}")
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
