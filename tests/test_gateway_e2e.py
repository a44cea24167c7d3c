"""The paid gateway end to end: a Hardhat chain, three staked operators' paid node processes, and
`inferchain market start --gateway-wallet ...` (a process: book from the nodes' signed offers, gateway, settlement
worker) on 127.0.0.1. The official `openai` client streams a chat completion with a reseller's customer key; once
the worker has settled, every node's earnings and the reseller's escrow changed on-chain by exactly the metered
amounts. A reseller with no deposit gets 402, one that did not authorise the gateway's key 403.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from eth_account import Account

from inferchain.marketplace.gateway import siwe

REPO = Path(__file__).resolve().parents[1]
PASS = "e2e passphrase"
SPANS = [(0, 10), (10, 20), (20, 30)]
PRICES = ["0.002", "0.001", "0.003"]  # INFER per 1k tokens per layer
MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.integration


def sign_in(http: httpx.Client, account) -> dict[str, str]:
    n = http.get("/admin/nonce").json()
    now = time.time()
    msg = siwe.SignInMessage("gateway.test", account.address, "https://gateway.test", n["chain_id"], n["nonce"], now,
                             now + 600)  # fmt: skip
    login = http.post("/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, account.key)})
    return {"authorization": f"Bearer {login.json()['token']}"}


def test_paid_gateway_pays_each_node_exactly_what_it_metered(smollm2: Path, tmp_path: Path) -> None:
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run scripts/setup.sh)")
    from inferchain.node.launch import start_node
    from inferchain.wallet import devnet
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.keystore import Keystore

    home = tmp_path / "home"
    env = {"INFERCHAIN_HOME": str(home), "INFERCHAIN_PASSPHRASE": PASS, "INFERCHAIN_SCRYPT_N": "1024"}
    devnet.up(home, accounts=8, fund=1_000 * ONE_TOKEN, timeout_s=60)
    nodes, market = [], None
    try:
        chain = Chain.open(home / "deployment.json")
        keys = [Account.from_key(a["private_key"]) for a in devnet.devnet_accounts(8)]
        operators, reseller, gateway_key, broke, stranger = keys[1:4], keys[4], keys[5], keys[6], keys[7]
        store = Keystore(home / "wallets")
        for i, op in enumerate(operators):
            store.import_private_key(f"op{i}", "0x" + bytes(op.key).hex(), PASS)
            chain.register_node(op, bytes(32), stake=150 * ONE_TOKEN)
        store.import_private_key("gateway", "0x" + bytes(gateway_key.key).hex(), PASS)
        chain.deposit(reseller, 100 * ONE_TOKEN)
        for who in (reseller, broke):
            chain.authorize_signer(who, gateway_key.address)

        fast = ["--announce-every", "0.5"]
        for i, (span, price) in enumerate(zip(SPANS, PRICES, strict=True)):
            extra = [*fast, "--wallet", f"op{i}", "--price", price] + (["--bootstrap", nodes[0].addr] if nodes else [])
            nodes.append(start_node(span, tmp_path / f"op{i}", smollm2, extra, env=env))
            if i == 0:
                nodes[0].wait_ready(180)
        for node in nodes:
            node.wait_ready(180)

        port = devnet.free_port()
        db = f"sqlite:///{tmp_path / 'market.sqlite'}"
        cmd = [
            sys.executable, "-m", "inferchain.cli", "market", "start", "--port", str(port), "--json",
            "--database", db, "--deployment", str(home / "deployment.json"), "--bootstrap", nodes[0].addr,
            "--model", str(smollm2), "--gateway-domain", "gateway.test", "--gateway-wallet", "gateway",
            "--max-price-per-1k", "1", "--settle-every", "1",
        ]  # fmt: skip
        log = tmp_path / "market.log"
        with open(log, "wb") as out:
            market = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=url, timeout=30) as http:
            while True:
                assert market.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the market never heard the three paid nodes"
                try:
                    if http.get("/health").json()["live_offers"] >= 3:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            admin = sign_in(http, reseller)
            key = http.post("/admin/keys", json={"name": "customer"}, headers=admin).json()["key"]
            broke_key = http.post("/admin/keys", json={}, headers=sign_in(http, broke)).json()["key"]
            stranger_key = http.post("/admin/keys", json={}, headers=sign_in(http, stranger)).json()["key"]

        escrow_before = chain.escrow_balance(reseller.address)
        earned_before = {op.address: chain.earnings(op.address) for op in operators}
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=180)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12,
            temperature=0, stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip() and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1

        for bad_key, status, code in ((broke_key, 402, "insufficient_balance"),
                                      (stranger_key, 403, "gateway_key_not_authorized")):  # fmt: skip
            with pytest.raises(openai.APIStatusError) as refused:
                openai.OpenAI(base_url=url + "/v1", api_key=bad_key, max_retries=0).chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
                )
            assert refused.value.status_code == status and refused.value.code == code

        deadline = time.monotonic() + 90
        with httpx.Client(base_url=url, timeout=30) as http:
            while True:
                usage = http.get("/admin/usage", headers=admin).json()
                receipts = [rc for row in usage["rows"] for rc in row["receipts"]]
                if receipts and all(rc["state"] == "settled" for rc in receipts):
                    break
                assert market.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not settled: {receipts}"
                time.sleep(0.5)

        (row,) = usage["rows"]
        assert row["status"] == "settled" and len(row["route"]) == len(receipts) >= 3
        assert {rc["node"] for rc in receipts} == {op.address for op in operators}
        fee_bps = int(chain.contracts.escrow.functions.feeBps().call())
        for rc in receipts:  # what the contract computes from the receipt itself
            (a, b), tokens = rc["span"], rc["tokens_in"] + rc["tokens_out"]
            assert int(rc["amount"]) == tokens * (b - a) * int(rc["price_per_1k"]) // 1000
            assert int(rc["fee"]) == int(rc["amount"]) * fee_bps // 10_000 and rc["settled_tx"]
        metered = sum(int(rc["amount"]) for rc in receipts)
        assert metered > 0 and usage["spend"] == row["spend"] == metered
        assert escrow_before - chain.escrow_balance(reseller.address) == metered
        for op in operators:
            mine = [rc for rc in receipts if rc["node"] == op.address]
            assert chain.earnings(op.address) - earned_before[op.address] == sum(
                int(rc["amount"]) - int(rc["fee"]) for rc in mine
            )
        events = chain.contracts.escrow.events.ReceiptSettled.get_logs(from_block=chain.deployment.block)
        assert sorted("0x" + bytes(e["args"]["key"]).hex() for e in events) == sorted(rc["key"] for rc in receipts)
    finally:
        if market is not None:
            market.terminate()
            try:
                market.wait(timeout=15)
            except subprocess.TimeoutExpired:
                market.kill()
        for node in nodes:
            node.kill()
        devnet.down(home)
