"""A paid node from wallet to payout: start refuses without stake, serves a buyer, stores countersigned receipts,
survives SIGKILL, and settles each receipt exactly once even when `node settle` dies after its transaction.

Real pieces: a Hardhat node on 127.0.0.1, a node OS process on loopback libp2p, the client library as buyer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferchain.cli import app

REPO = Path(__file__).resolve().parents[1]
PASS = "node passphrase"
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    return result.exit_code, json.loads(lines[-1])


@pytest.mark.integration
def test_paid_node_receipts_survive_kills_and_settle_once(
    smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run `npm ci` or scripts/contracts_test.sh)")
    from eth_account import Account

    from inferchain.client.remote import RemoteError
    from inferchain.client.session import InferenceSession
    from inferchain.node.launch import start_node
    from inferchain.wallet import devnet
    from inferchain.wallet.buyer import Buyer
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.devnet import devnet_accounts

    home = tmp_path / "home"
    env = {"INFERCHAIN_HOME": str(home), "INFERCHAIN_SCRYPT_N": "1024", "INFERCHAIN_PASSPHRASE": PASS}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("INFERCHAIN_WALLET", raising=False)
    node_dir = tmp_path / "node"
    devnet.up(home, accounts=2, fund=10_000 * ONE_TOKEN, timeout_s=60)
    node = None
    try:
        chain = Chain.open()
        # No wallet and no --free: refused before loading anything.
        code, err = cli("node", "start", "--layers", "0:30", "--model", str(smollm2))
        assert code == 1 and "--free" in err["error"]
        assert cli("wallet", "create", "op")[0] == 0
        assert cli("wallet", "faucet", "op", "--infer", "200")[0] == 0
        code, err = cli("node", "start", "--layers", "0:30", "--wallet", "op", "--model", str(smollm2))
        assert code == 1 and "not registered" in err["error"]
        assert cli("node", "register")[0] == 0
        code, err = cli("node", "start", "--layers", "0:30", "--wallet", "op", "--model", str(smollm2))
        assert code == 1 and "not staked enough" in err["error"] and "node stake" in err["error"]
        assert cli("node", "stake", "150")[0] == 0
        address = cli("wallet", "show", "op")[1]["address"]

        price = ONE_TOKEN // 100  # 0.01 INFER per 1000 tokens per layer
        node = start_node(
            (0, 30), node_dir, smollm2, extra_args=["--wallet", "op", "--price", "0.01"], env=env
        )
        node.wait_ready(120)
        offer = json.loads((node_dir / "offer.json").read_text())
        assert offer["node"] == address and offer["span"] == [0, 30] and int(offer["price_per_1k"]) == price
        from inferchain.wallet.offers import SignedOffer

        SignedOffer.from_json(offer).verify(chain.deployment.verdict_domain)

        buyer_key = Account.from_key(devnet_accounts(2)[1]["private_key"])
        chain.deposit(buyer_key, 100 * ONE_TOKEN)
        buyer = Buyer(buyer_key, chain.deployment.receipt_domain, max_price_per_1k=price)
        receipts = []
        for prompt in ([1, 2, 3, 4, 5], [7, 8, 9]):
            with InferenceSession(smollm2, [node.addr], buyer=buyer) as session:
                session.step(prompt)
                for token in (11, 12, 13):
                    session.step([token])
            assert len(session.receipts) == 1
            r = session.receipts[0].receipt
            assert (r.node, r.buyer, r.span_start, r.span_end) == (address, buyer_key.address, 0, 30)
            assert (r.tokens_in, r.tokens_out) == (len(prompt), 3)
            receipts.extend(session.receipts)

        cheap = Buyer(buyer_key, chain.deployment.receipt_domain, max_price_per_1k=price - 1)
        with pytest.raises(RemoteError, match="price"):
            InferenceSession(smollm2, [node.addr], buyer=cheap)

        node.kill()  # SIGKILL: whatever was acknowledged is on disk
        code, listed = cli("node", "receipts", "--data-dir", str(node_dir))
        assert code == 0 and [x["state"] for x in listed["receipts"]] == ["countersigned", "countersigned"]
        keys = sorted("0x" + s.receipt.key.hex() for s in receipts)
        assert sorted(x["key"] for x in listed["receipts"]) == keys

        # settle, killed right after its transaction is mined and before it records the result
        proc = subprocess.run(
            [sys.executable, "-m", "inferchain.cli", "node", "settle", "--data-dir", str(node_dir), "--json"],
            env={**os.environ, "INFERCHAIN_TEST_CRASH_AFTER_SETTLE_TX": "1"},
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 3, proc.stderr.decode()
        assert all(chain.is_settled(s.receipt) for s in receipts)
        owed = sum(s.receipt.amount_owed for s in receipts)
        fees = sum(s.receipt.amount_owed * 500 // 10_000 for s in receipts)
        assert chain.earnings(address) == owed - fees
        assert chain.escrow_balance(buyer_key.address) == 100 * ONE_TOKEN - owed
        code, listed = cli("node", "receipts", "--data-dir", str(node_dir))
        assert {x["state"] for x in listed["receipts"]} == {"countersigned"}  # the store never heard back

        code, report = cli("node", "settle", "--data-dir", str(node_dir))
        assert code == 0
        assert sorted(report["already_settled"]) == keys and report["settled"] == [] and report["txs"] == []
        assert chain.earnings(address) == owed - fees  # paid exactly once
        assert chain.escrow_balance(buyer_key.address) == 100 * ONE_TOKEN - owed
        events = chain.contracts.escrow.events.ReceiptSettled.get_logs(from_block=chain.deployment.block)
        assert sorted("0x" + bytes(e["args"]["key"]).hex() for e in events) == keys
        code, listed = cli("node", "receipts", "--data-dir", str(node_dir))
        assert {x["state"] for x in listed["receipts"]} == {"settled"}
        code, again = cli("node", "settle", "--data-dir", str(node_dir))
        assert code == 0 and again["settled"] == [] and again["already_settled"] == []

        code, status = cli("node", "status", "--data-dir", str(node_dir))
        assert code == 0 and status["receipts"]["by_state"] == {"settled": 2}
        before = chain.token_balance(address)
        code, claimed = cli("node", "claim")
        assert code == 0 and chain.token_balance(address) == before + owed - fees
    finally:
        if node is not None:
            node.kill()
        devnet.down(home)
