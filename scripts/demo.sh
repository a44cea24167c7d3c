#!/usr/bin/env bash
# Set up, then run the whole paid market locally: a devnet chain with the contracts, four staked operators whose
# node processes serve overlapping spans of SmolLM2 over libp2p on 127.0.0.1, a buyer with an escrow deposit,
# a paid chat over the planner's route, the receipts settled on-chain, and who earned what. Extra arguments go
# to `inferchain demo` (e.g. --kill-a-node, --prompt "...", --keep).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup.sh
inferchain demo "$@"
