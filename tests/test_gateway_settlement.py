"""Paid gateway requests and their settlement: the escrow-backed 402, node receipts stored per usage row, the
settlement worker (batches, already-settled receipts, permanent and passing refusals with backoff, a batch
recorded before a crash and resumed), and the worker process killed by SIGKILL right after it sent a batch.

The worker's logic runs on the in-process EVM (py-evm); the kill test on a Hardhat node and a real worker process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from sqlalchemy import select

from inferchain.marketplace.db import make_engine
from inferchain.marketplace.gateway.db import BatchRow, ReceiptRow, UsageRow, init_gateway_db
from inferchain.marketplace.gateway.keys import KeyStore
from inferchain.marketplace.gateway.metering import InsufficientBalance, Meter
from inferchain.marketplace.gateway.paid import PaidMode
from inferchain.marketplace.gateway.settlement import SettlementWorker
from inferchain.node.receipts import ReceiptSigner, ReceiptStore
from inferchain.wallet.buyer import Buyer
from inferchain.wallet.chain import Chain
from inferchain.wallet.deployment import ONE_TOKEN
from inferchain.wallet.inprocess import funded_account, in_process_chain
from inferchain.wallet.receipts import InvalidReceipt, Receipt, SignedReceipt
from inferchain.wallet.tx import send, sign_call

REPO = Path(__file__).resolve().parents[1]
PRICE = ONE_TOKEN // 1000  # 0.001 INFER per 1k tokens per layer
FEE_BPS = 500  # the deployment default


def make_signed(chain: Chain, node, reseller: str, gateway_key, *, tokens: int = 150, span=(0, 10), expiry_in=86400,
                countersigner=None) -> SignedReceipt:  # fmt: skip
    domain = chain.deployment.receipt_domain
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    r = Receipt(os.urandom(32), reseller, node.address, keccak(text="model"), span[0], span[1], tokens - 30, 30,
                PRICE, keccak(text="activations"), now + expiry_in)  # fmt: skip
    return SignedReceipt(r, r.sign(node, domain), r.sign(countersigner or gateway_key, domain))


def metered(sessions, reseller: str, receipts: list[SignedReceipt]) -> str:
    """A usage row for one paid request whose route produced `receipts`; returns its id."""
    keys, meter = KeyStore(sessions), Meter(sessions)
    info, _ = keys.create(reseller)
    rid = "chatcmpl-" + os.urandom(8).hex()
    res = meter.reserve(rid, info.id, "model", 200, 10**18)
    meter.settle(res, 150, 30, sum(r.receipt.amount_owed for r in receipts), PRICE, [], receipts)
    return rid


@pytest.fixture()
def market(tmp_path: Path):
    """An in-process chain, two nodes, a reseller with 5 INFER in escrow that authorised the gateway's key."""
    chain = in_process_chain()
    nodes = [funded_account(chain) for _ in range(2)]
    reseller, gateway_key = funded_account(chain), funded_account(chain, tokens=0)
    chain.deposit(reseller, 5 * ONE_TOKEN)
    chain.authorize_signer(reseller, gateway_key.address)
    engine = make_engine(f"sqlite:///{tmp_path / 'gw.sqlite'}")
    sessions = init_gateway_db(engine)
    yield chain, nodes, reseller, gateway_key, sessions
    engine.dispose()


def rows(sessions) -> dict[str, ReceiptRow]:
    with sessions() as s:
        return {r.key: r for r in s.scalars(select(ReceiptRow))}


def test_node_takes_a_countersignature_by_the_resellers_authorised_key(market, tmp_path: Path) -> None:
    chain, (node, _), reseller, gateway_key, _ = market
    domain = chain.deployment.receipt_domain
    signer = ReceiptSigner(ReceiptStore(tmp_path), node, domain, PRICE, 86400, chain.authorized_signers())
    buyer = PaidMode(chain, gateway_key).buyer(reseller.address, PRICE)
    assert isinstance(buyer, Buyer) and buyer.address == reseller.address
    for i, (who, ok) in enumerate([(Account.create(), False), (gateway_key, True)]):
        stored = signer.sign(bytes([i + 1]) * 32, reseller.address, b"\x01" * 32, (0, 10), 5, 3, bytes(32))
        sig = stored.receipt.sign(who, domain)
        if ok:
            assert signer.countersigned(stored.key, sig).state == "countersigned"
        else:
            with pytest.raises(InvalidReceipt, match="countersignature is by"):
                signer.countersigned(stored.key, sig)


def test_escrow_less_what_is_owed_must_cover_the_worst_case(market) -> None:
    """Open reservations and unsettled receipts count against the on-chain balance; 32 concurrent requests of
    1 INFER each against 5 INFER in escrow: exactly 5 pass (then settled receipts still count until paid)."""
    chain, (node, _), reseller, gateway_key, sessions = market
    keys, meter = KeyStore(sessions), Meter(sessions, PaidMode(chain, gateway_key).escrow_balance)
    info, _ = keys.create(reseller.address)
    barrier, passed, refused = threading.Barrier(32), [], []

    def ask(i: int) -> None:
        barrier.wait()
        try:
            passed.append(meter.reserve(f"r{i}", info.id, "model", 100, ONE_TOKEN))
        except InsufficientBalance as e:
            refused.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 5 and len(refused) == 27
    receipt = make_signed(chain, node, reseller.address, gateway_key)
    meter.settle(passed[0], 120, 30, receipt.receipt.amount_owed, PRICE, [], [receipt])
    for r in passed[1:]:
        meter.release(r, "test")
    room = 5 * ONE_TOKEN - receipt.receipt.amount_owed
    with pytest.raises(InsufficientBalance) as e:
        meter.reserve("big", info.id, "model", 100, room + 1)
    assert e.value.available == room
    meter.reserve("fits", info.id, "model", 100, room)


def test_worker_settles_in_batches_and_records_amounts_fees_and_txs(market) -> None:
    chain, nodes, reseller, gateway_key, sessions = market
    receipts = [make_signed(chain, nodes[i % 2], reseller.address, gateway_key, tokens=100 + i) for i in range(5)]
    usage = metered(sessions, reseller.address, receipts)
    with sessions() as s:
        assert sorted(s.get(UsageRow, usage).receipts) == sorted("0x" + r.receipt.key.hex() for r in receipts)
    before = {n.address: chain.earnings(n.address) for n in nodes}
    escrow_before = chain.escrow_balance(reseller.address)
    worker = SettlementWorker(sessions, chain, gateway_key, batch_size=2)
    report = worker.run_once()
    assert len(report.settled) == 5 and len(report.txs) == 3 and not report.flagged
    stored = rows(sessions)
    assert {r.state for r in stored.values()} == {"settled"} and all(r.settled_tx for r in stored.values())
    owed = {n.address: 0 for n in nodes}
    for s in receipts:
        row = stored["0x" + s.receipt.key.hex()]
        assert int(row.amount) == s.receipt.amount_owed and int(row.fee) == s.receipt.amount_owed * FEE_BPS // 10_000
        owed[s.receipt.node] += int(row.amount) - int(row.fee)
    for n in nodes:
        assert chain.earnings(n.address) - before[n.address] == owed[n.address]
    with sessions() as s:
        spend = s.get(UsageRow, usage).spend
    paid = sum(int(r.amount) for r in stored.values())
    assert escrow_before - chain.escrow_balance(reseller.address) == spend == paid
    assert worker.run_once().txs == []  # nothing left


def test_refusals_flag_or_back_off_and_receipts_settled_elsewhere_are_found(market) -> None:
    chain, (node, other), reseller, gateway_key, sessions = market
    good = make_signed(chain, node, reseller.address, gateway_key)
    by_node = make_signed(chain, node, reseller.address, gateway_key)
    send(chain.w3, other, chain.settle_batch_call([by_node]))  # the node (anyone) settled this one itself
    stranger = make_signed(chain, other, reseller.address, gateway_key, countersigner=Account.create())
    too_big = make_signed(chain, other, reseller.address, gateway_key, tokens=600_000)  # 6 INFER > the deposit
    metered(sessions, reseller.address, [good, by_node, stranger, too_big])
    worker = SettlementWorker(sessions, chain, gateway_key, max_attempts=2, backoff_s=60)
    report = worker.run_once()
    key = lambda s: "0x" + s.receipt.key.hex()  # noqa: E731
    assert report.settled == [key(good)] and report.already == [key(by_node)]
    assert list(report.flagged) == [key(stranger)] and "InvalidBuyerSignature" in report.flagged[key(stranger)]
    assert list(report.retry) == [key(too_big)]
    stored = rows(sessions)
    assert stored[key(by_node)].state == "settled" and stored[key(by_node)].settled_tx  # the node's own tx
    big = stored[key(too_big)]
    assert big.state == "pending" and big.attempts == 1 and big.next_attempt_at > time.time() + 50
    assert worker.run_once().retry == {}  # backing off: not due yet
    final = worker.run_once(now=big.next_attempt_at + 1)
    assert "gave up after 2 attempts" in final.flagged[key(too_big)]
    assert {r.state for r in rows(sessions).values()} == {"settled", "flagged"}


def test_a_batch_recorded_before_a_crash_is_resumed_never_sent_twice(market) -> None:
    """Crash between recording and broadcasting: the next pass sends the same bytes. A recorded batch whose nonce
    was used by another transaction can never be mined: its receipts go back and settle in a new batch."""
    chain, (node, _), reseller, gateway_key, sessions = market
    first = [make_signed(chain, node, reseller.address, gateway_key) for _ in range(3)]
    metered(sessions, reseller.address, first)
    worker = SettlementWorker(sessions, chain, gateway_key)
    keys = ["0x" + s.receipt.key.hex() for s in first]
    tx = sign_call(chain.w3, gateway_key, chain.settle_batch_call(first))
    worker._record_signed(keys, tx)  # ... and the process died here
    assert {r.state for r in rows(sessions).values()} == {"submitted"}
    report = worker.run_once()
    assert report.resumed == {tx.hash: "mined"} and sorted(report.settled) == sorted(keys) and report.txs == []
    assert {r.settled_tx for r in rows(sessions).values()} == {tx.hash}

    second = [make_signed(chain, node, reseller.address, gateway_key) for _ in range(2)]
    metered(sessions, reseller.address, second)
    keys2 = ["0x" + s.receipt.key.hex() for s in second]
    stale = sign_call(chain.w3, gateway_key, chain.settle_batch_call(second))
    worker._record_signed(keys2, stale)
    w3 = chain.w3
    other_tx = gateway_key.sign_transaction({"to": gateway_key.address, "value": 0, "nonce": stale.nonce, "gas": 21000,
                                             "gasPrice": w3.eth.gas_price * 2, "chainId": w3.eth.chain_id})  # fmt: skip
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(other_tx.raw_transaction))  # takes its nonce
    report = worker.run_once()
    assert report.resumed == {stale.hash: "replaced"} and sorted(report.settled) == sorted(keys2)
    with sessions() as s:
        assert s.get(BatchRow, stale.hash).state == "replaced"
    events = chain.contracts.escrow.events.ReceiptSettled.get_logs(from_block=chain.deployment.block)
    paid = ["0x" + bytes(e["args"]["key"]).hex() for e in events]
    assert sorted(paid) == sorted(keys + keys2)  # each exactly once


@pytest.mark.integration
def test_worker_killed_right_after_sending_settles_each_receipt_once(tmp_path: Path) -> None:
    """`inferchain market settle` is SIGKILLed right after broadcasting its batch; the restarted worker finds
    the recorded transaction mined and records it; each receipt is paid exactly once on-chain."""
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run scripts/setup.sh)")
    from inferchain.wallet import devnet
    from inferchain.wallet.keystore import Keystore

    home = tmp_path / "home"
    devnet.up(home, accounts=5, fund=1_000 * ONE_TOKEN, timeout_s=60)
    try:
        chain = Chain.open(home / "deployment.json")
        keys = [Account.from_key(a["private_key"]) for a in devnet.devnet_accounts(5)]
        nodes, reseller, gateway_key = keys[1:3], keys[3], keys[4]
        chain.deposit(reseller, 50 * ONE_TOKEN)
        chain.authorize_signer(reseller, gateway_key.address)
        Keystore(home / "wallets").import_private_key("gateway", "0x" + bytes(gateway_key.key).hex(), "pw")
        url = f"sqlite:///{tmp_path / 'gw.sqlite'}"
        engine = make_engine(url)
        sessions = init_gateway_db(engine)
        receipts = [make_signed(chain, nodes[i % 2], reseller.address, gateway_key, tokens=100 + i) for i in range(6)]
        metered(sessions, reseller.address, receipts)
        escrow_before = chain.escrow_balance(reseller.address)
        earned_before = {n.address: chain.earnings(n.address) for n in nodes}
        env = {**os.environ, "INFERCHAIN_HOME": str(home), "INFERCHAIN_PASSPHRASE": "pw",
               "INFERCHAIN_SCRYPT_N": "1024"}  # fmt: skip
        cmd = [sys.executable, "-m", "inferchain.cli", "market", "settle", "--database", url, "--wallet", "gateway",
               "--batch-size", "4", "--json"]  # fmt: skip
        crashed = subprocess.run(cmd, env={**env, "INFERCHAIN_TEST_CRASH_AFTER_SETTLE_SEND": "1"},
                                 capture_output=True, text=True, timeout=180)  # fmt: skip
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        stored = rows(sessions)
        submitted = [k for k, r in stored.items() if r.state == "submitted"]
        assert len(submitted) == 4 and {r.state for r in stored.values()} == {"submitted", "pending"}
        with sessions() as s:
            (batch,) = s.scalars(select(BatchRow)).all()
        assert batch.state == "signed" and sorted(batch.keys) == sorted(submitted)

        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["resumed"] == {batch.tx_hash: "mined"}
        assert sorted(report["settled"]) == sorted(stored) and len(report["txs"]) == 1  # the 2 left: one new batch
        assert report["receipts"]["by_state"] == {"settled": 6}
        stored = rows(sessions)
        assert {stored[k].settled_tx for k in submitted} == {batch.tx_hash}

        events = chain.contracts.escrow.events.ReceiptSettled.get_logs(from_block=chain.deployment.block)
        paid = sorted("0x" + bytes(e["args"]["key"]).hex() for e in events)
        assert paid == sorted(stored)  # each receipt paid exactly once
        total = sum(s.receipt.amount_owed for s in receipts)
        assert escrow_before - chain.escrow_balance(reseller.address) == total
        for n in nodes:
            mine = [s.receipt.amount_owed for s in receipts if s.receipt.node == n.address]
            assert chain.earnings(n.address) - earned_before[n.address] == sum(a - a * FEE_BPS // 10_000 for a in mine)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert json.loads(again.stdout.strip().splitlines()[-1])["txs"] == []
        engine.dispose()
    finally:
        devnet.down(home)
