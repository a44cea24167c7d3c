#!/usr/bin/env bash
# Set up, then run a local swarm: 3 node processes (plus a spare) serving SmolLM2 in spans over libp2p on
# 127.0.0.1, and a chat answered through them. Extra arguments go to `inferchain swarm`
# (e.g. --kill-a-node, --prompt "...").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup.sh
inferchain swarm "$@"
