"""`inferchain demo` end to end: devnet, four staked operators as node processes, the market with its paid gateway
and web UI, a paid chat over the planner's route and a reseller customer's chat through the OpenAI-compatible API,
receipts settled on-chain; then `demo down` leaves no process behind, and a second run works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def run_demo(home: Path, smollm2: Path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "inferchain.cli", "demo", "--json", "--model", str(smollm2), *args],
        env={**os.environ, "INFERCHAIN_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_demo_pays_every_node_on_chain_and_cleans_up(smollm2, tmp_path):
    if not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run scripts/setup.sh)")
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN

    home = tmp_path / "home"
    summary = run_demo(home, smollm2, "--keep", "--max-tokens", "24")
    demo = home / "demo"
    try:
        assert "Paris" in summary["answer"]
        layers = [tuple(hop["layers"]) for hop in summary["route"]]
        assert layers[0][0] == 0 and layers[-1][1] == 30
        assert all(a[1] == b[0] for a, b in zip(layers, layers[1:], strict=False))  # a contiguous cover
        chain = Chain.open(demo / "chain" / "deployment.json")
        buyer_left = chain.escrow_balance(chain.w3.eth.accounts[5])
        paid = 100 * ONE_TOKEN - buyer_left
        assert paid > 0
        # the reseller's customer chatted through the gateway; its escrow paid exactly the settled receipts
        gateway = summary["gateway_chat"]
        assert "Paris" in gateway["answer"] and gateway["usage"]["completion_tokens"] >= 1
        assert gateway["receipts"] and all(rc["state"] == "settled" and rc["settled_tx"] for rc in gateway["receipts"])
        resold = 100 * ONE_TOKEN - chain.escrow_balance(chain.w3.eth.accounts[6])
        assert resold == sum(int(rc["amount"]) for rc in gateway["receipts"]) > 0
        earned = [int(row["earned_wei"]) for row in summary["nodes"]]
        served = {hop["operator"] for hop in summary["route"]} | {
            row["operator"] for row in summary["nodes"] if row["gateway_receipts"]
        }
        for row, amount in zip(summary["nodes"], earned, strict=True):
            assert (amount > 0) == (row["operator"] in served)
        # nodes get what both payers paid less the 5% protocol fee (rounded down per receipt: at most 1 wei each)
        total, receipts = paid + resold, len(summary["route"]) + len(gateway["receipts"])
        fees = total - sum(earned)
        assert 0 <= sum(earned) - (total - total * 500 // 10_000) <= receipts
        # every operator that served claimed its earnings and its share of the epoch's reward (the fees) into its
        # wallet: the escrow owes it nothing more, and its tokens are its funding less its stake plus the claim
        rewards = [int(row["reward_wei"]) for row in summary["nodes"]]
        assert 0 < sum(rewards) <= fees
        for row, amount, reward in zip(summary["nodes"], earned, rewards, strict=True):
            assert chain.earnings(row["address"]) == 0
            assert int(row["claimed_wei"]) == amount + reward
            assert chain.token_balance(row["address"]) == (10_000 - 150) * ONE_TOKEN + amount + reward
        # what a person running the demo sees: the table and lines printed from this same summary
        from inferchain.cli import demo as demo_cli

        with demo_cli.console.capture() as shown:
            demo_cli._print_summary(summary)
        text = " ".join(shown.get().split())  # undo the terminal's line wrapping
        assert all(row["operator"] in text for row in summary["nodes"]) and summary["web_ui"] in text
        assert f"{summary['completion_tokens']} completion tokens" in text and "gas used: register" in text
        page = httpx.get(summary["web_ui"], timeout=30, follow_redirects=True)  # the market and its web UI stay up
        assert page.status_code == 200 and "<html" in page.text.lower()
        pids = json.loads((demo / "pids.json").read_text())
        assert pids and all(psutil.pid_exists(p) for p in pids)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "inferchain.cli", "demo", "down"],
            env={**os.environ, "INFERCHAIN_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.returncode == 0
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    # A second run needs no cleanup, and fail-over keeps the paid answer.
    again = run_demo(home, smollm2, "--kill-a-node", "--max-tokens", "24")
    assert again["answer"] == summary["answer"]
    assert len(again["failovers"]) == 1
    assert not (demo / "pids.json").exists()
