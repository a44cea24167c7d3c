#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: ruff, mypy, the contracts (Hardhat tests, gas, coverage),
# and the Python test suite (unit tests and integration tests with real node processes and real EVMs).
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k wire    # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup.sh

echo "==> ruff"
ruff check .
echo "==> mypy"
mypy inferchain/wire inferchain/models inferchain/client inferchain/p2p inferchain/node inferchain/wallet
mypy inferchain/marketplace inferchain/trust
echo "==> contracts"
bash scripts/contracts_test.sh
echo "==> pytest"
python -m pytest -ra "$@"
