"""A receipt signed in Python settles on a real `hardhat node` over JSON-RPC (started here, on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from inferchain.wallet.chain import Chain, connect
from inferchain.wallet.deployment import ONE_TOKEN, deploy, mint
from inferchain.wallet.devnet import HardhatNode, devnet_accounts, free_port
from inferchain.wallet.receipts import Receipt, SignedReceipt
from inferchain.wallet.tx import TransactionFailed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hardhat_rpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run `npm ci` or scripts/contracts_test.sh)")
    log = tmp_path_factory.mktemp("hardhat") / "hardhat.log"
    with HardhatNode(free_port(), log, REPO) as node:
        node.start(timeout_s=60)
        yield node.rpc_url


def test_python_signed_receipt_settles_on_hardhat(hardhat_rpc: str, tmp_path: Path) -> None:
    w3 = connect(hardhat_rpc)
    assert w3.eth.chain_id == 31337
    owner = w3.eth.accounts[0]
    deployment = deploy(w3, owner, out=tmp_path / "deployment.json")
    assert deployment.rpc_url == hardhat_rpc
    chain = Chain.open(tmp_path / "deployment.json")

    # Hardhat's development keys sign locally (raw transactions), like a real wallet would.
    keys = devnet_accounts(3)
    assert [k["address"] for k in keys] == w3.eth.accounts[:3]
    node = Account.from_key(keys[1]["private_key"])
    buyer = Account.from_key(keys[2]["private_key"])
    for who in (node, buyer):
        mint(w3, deployment, owner, who.address, 1_000 * ONE_TOKEN)
    chain.register_node(node, keccak(text="meta"), stake=deployment.params.min_stake)
    assert chain.is_routable(node.address)
    chain.deposit(buyer, 100 * ONE_TOKEN)

    now = w3.eth.get_block("latest")["timestamp"]
    r = Receipt(
        session_id=os.urandom(32),
        buyer=buyer.address,
        node=node.address,
        model_id=keccak(text="SmolLM2-135M-Instruct"),
        span_start=10,
        span_end=20,
        tokens_in=64,
        tokens_out=16,
        price_per_1k=ONE_TOKEN // 10,
        activation_commitment=keccak(text="acts"),
        expiry=now + 600,
    )
    d = deployment.receipt_domain
    assert chain.receipt_digest(r) == r.digest(d)
    signed = SignedReceipt(r, r.sign(node, d), r.sign(buyer, d))
    chain.settle(node, signed)
    fee = r.amount_owed * deployment.params.fee_bps // 10_000
    assert chain.escrow_balance(buyer.address) == 100 * ONE_TOKEN - r.amount_owed
    assert chain.earnings(node.address) == r.amount_owed - fee
    with pytest.raises(TransactionFailed) as err:
        chain.settle(node, signed)
    assert err.value.error == "ReceiptAlreadySettled"
    assert chain.claim_earnings(node) == r.amount_owed - fee
