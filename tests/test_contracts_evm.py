"""The contracts on a real in-process EVM (eth-tester / py-evm): receipts signed in Python settle on-chain."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from inferchain.wallet.chain import Chain
from inferchain.wallet.deployment import ONE_TOKEN, Deployment, DeploymentError, DeploymentParams
from inferchain.wallet.inprocess import funded_account, in_process_chain
from inferchain.wallet.receipts import Receipt, SignedReceipt
from inferchain.wallet.tx import TransactionFailed, send
from inferchain.wallet.typed_data import Domain
from inferchain.wallet.verdicts import Verdict, order_signatures

PRICE = ONE_TOKEN // 100  # 0.01 INFER per 1k tokens per layer


@pytest.fixture(scope="module")
def chain() -> Chain:
    return in_process_chain(DeploymentParams(min_stake=10 * ONE_TOKEN))


@pytest.fixture(scope="module")
def node(chain: Chain):
    acct = funded_account(chain)
    chain.register_node(acct, keccak(text="node metadata"), stake=100 * ONE_TOKEN)
    return acct


@pytest.fixture(scope="module")
def buyer(chain: Chain):
    acct = funded_account(chain)
    chain.deposit(acct, 500 * ONE_TOKEN)
    return acct


def make_receipt(chain: Chain, node, buyer, **over) -> Receipt:
    now = chain.w3.eth.get_block("latest")["timestamp"]
    fields = {
        "session_id": os.urandom(32),
        "buyer": buyer.address,
        "node": node.address,
        "model_id": keccak(text="SmolLM2-135M-Instruct"),
        "span_start": 0,
        "span_end": 10,
        "tokens_in": 120,
        "tokens_out": 30,
        "price_per_1k": PRICE,
        "activation_commitment": keccak(text="activations"),
        "expiry": now + 3600,
        **over,
    }
    return Receipt(**fields)


def signed(chain: Chain, r: Receipt, node, countersigner) -> SignedReceipt:
    d = chain.deployment.receipt_domain
    return SignedReceipt(r, r.sign(node, d), r.sign(countersigner, d))


def test_deploy_wires_the_contracts(chain: Chain) -> None:
    c, a = chain.contracts, chain.deployment.addresses
    assert c.staking.functions.receiptVerifier().call() == a.escrow
    assert c.reward_pool.functions.escrow().call() == a.escrow
    assert c.escrow.functions.staking().call() == a.staking
    assert c.escrow.functions.feeBps().call() == chain.deployment.params.fee_bps
    assert c.token.functions.symbol().call() == "INFER"
    assert c.token.functions.decimals().call() == 18
    assert chain.deployment.chain_id == chain.w3.eth.chain_id
    chain.deployment.check(chain.w3)


def test_deployment_file_round_trip(chain: Chain, tmp_path: Path) -> None:
    path = chain.deployment.save(tmp_path / "deployment.json")
    assert Deployment.load(path) == chain.deployment
    with pytest.raises(DeploymentError, match="no deployment file"):
        Deployment.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeploymentError, match="not valid JSON"):
        Deployment.load(tmp_path / "bad.json")


def test_deployment_check_refuses_another_chain(chain: Chain) -> None:
    other = in_process_chain()
    bogus = Deployment.from_json({**chain.deployment.to_json(), "chain_id": chain.deployment.chain_id + 1})
    with pytest.raises(DeploymentError, match="serves chain"):
        bogus.check(chain.w3)
    # same chain id, but the addresses hold no code there
    moved = Deployment.from_json(
        {
            **chain.deployment.to_json(),
            "addresses": {**chain.deployment.to_json()["addresses"], "escrow": "0x" + "11" * 20},
        }
    )
    with pytest.raises(DeploymentError, match="no contract code"):
        moved.check(other.w3)


def test_python_digest_equals_the_contract_digest(chain: Chain, node, buyer) -> None:
    for tokens in (0, 1, 2**64 - 1):
        r = make_receipt(chain, node, buyer, tokens_out=tokens, span_start=3, span_end=2**32 - 1)
        assert chain.receipt_digest(r) == r.digest(chain.deployment.receipt_domain)
    r = make_receipt(chain, node, buyer)
    key = chain.contracts.escrow.functions.receiptKey(r.as_tuple()).call()
    assert bytes(key) == r.key
    amount, fee, contribution = chain.contracts.escrow.functions.quote(r.as_tuple()).call()
    assert (amount, contribution) == (r.amount_owed, r.contribution)
    assert fee == r.amount_owed * chain.deployment.params.fee_bps // 10_000


def test_receipt_signed_in_python_settles_on_chain(chain: Chain, node, buyer) -> None:
    r = make_receipt(chain, node, buyer)
    s = signed(chain, r, node, buyer)
    s.check(chain.deployment.receipt_domain)
    before_buyer = chain.escrow_balance(buyer.address)
    before_earned = chain.earnings(node.address)
    submitter = funded_account(chain, tokens=0)
    chain.settle(submitter, s)
    fee = r.amount_owed * chain.deployment.params.fee_bps // 10_000
    assert chain.escrow_balance(buyer.address) == before_buyer - r.amount_owed
    assert chain.earnings(node.address) == before_earned + r.amount_owed - fee
    assert chain.is_settled(r)

    with pytest.raises(TransactionFailed) as err:
        chain.settle(submitter, s)
    assert err.value.error == "ReceiptAlreadySettled"
    assert err.value.error_args == (r.key,)


def test_signatures_for_another_chain_or_contract_are_refused(chain: Chain, node, buyer) -> None:
    d = chain.deployment.receipt_domain
    r = make_receipt(chain, node, buyer)
    for wrong in (
        Domain(d.chain_id + 1, d.verifying_contract),
        Domain(d.chain_id, chain.deployment.addresses.staking),
    ):
        s = SignedReceipt(r, r.sign(node, wrong), r.sign(buyer, d))
        with pytest.raises(TransactionFailed) as err:
            chain.settle(buyer, s)
        assert err.value.error == "InvalidNodeSignature"
    stranger = Account.create()
    s = SignedReceipt(r, r.sign(node, d), r.sign(stranger, d))
    with pytest.raises(TransactionFailed) as err:
        chain.settle(buyer, s)
    assert err.value.error == "InvalidBuyerSignature"
    assert err.value.error_args == (r.key, stranger.address)


def test_authorised_reseller_key_countersigns(chain: Chain, node, buyer) -> None:
    reseller = Account.create()
    chain.authorize_signer(buyer, reseller.address)
    r = make_receipt(chain, node, buyer)
    chain.settle(buyer, signed(chain, r, node, reseller))
    assert chain.is_settled(r)


def test_settlement_beyond_the_deposit_is_refused(chain: Chain, node) -> None:
    poor = funded_account(chain)
    chain.deposit(poor, 1)
    r = make_receipt(chain, node, poor)
    with pytest.raises(TransactionFailed) as err:
        chain.settle(poor, signed(chain, r, node, poor))
    assert err.value.error == "InsufficientDeposit"
    assert err.value.error_args == (poor.address, 1, r.amount_owed)


def test_batch_settlement_and_claim(chain: Chain, node, buyer) -> None:
    batch = [signed(chain, make_receipt(chain, node, buyer, tokens_out=i), node, buyer) for i in range(5)]
    before = chain.escrow_balance(buyer.address)
    receipt = chain.settle_batch(buyer, batch)
    assert receipt["status"] == 1
    assert all(chain.is_settled(s.receipt) for s in batch)
    assert chain.escrow_balance(buyer.address) == before - sum(s.receipt.amount_owed for s in batch)
    owed = chain.earnings(node.address)
    assert owed > 0
    assert chain.claim_earnings(node) == owed
    assert chain.earnings(node.address) == 0
    with pytest.raises(TransactionFailed, match="NothingToClaim"):
        chain.claim_earnings(node)


def test_equivocation_signed_in_python_slashes(chain: Chain, buyer) -> None:
    cheat = funded_account(chain)
    chain.register_node(cheat, b"\0" * 32, stake=50 * ONE_TOKEN)
    a = make_receipt(chain, cheat, buyer)
    b = Receipt.from_json({**a.to_json(), "tokens_out": a.tokens_out + 1})
    d = chain.deployment.receipt_domain
    reporter = funded_account(chain, tokens=0)
    fn = chain.contracts.staking.functions.reportEquivocation(
        a.as_tuple(), a.sign(cheat, d), b.as_tuple(), b.sign(cheat, d)
    )
    send(chain.w3, reporter, fn)
    info = chain.node_info(cheat.address)
    assert info["stake"] == 25 * ONE_TOKEN
    assert info["slashed"] == 25 * ONE_TOKEN
    assert chain.token_balance(reporter.address) == 25 * ONE_TOKEN // 2
    assert not chain.is_routable(cheat.address)
    with pytest.raises(TransactionFailed) as err:
        send(chain.w3, reporter, fn)
    assert err.value.error == "AlreadySlashed"


def test_verdict_quorum_signed_in_python_slashes(chain: Chain) -> None:
    owner = chain.deployment.deployer
    validators = [Account.create() for _ in range(3)]
    staking = chain.contracts.staking
    for v in validators:
        send(chain.w3, owner, staking.functions.addValidator(v.address))
    send(chain.w3, owner, staking.functions.setQuorum(2))
    cheat = funded_account(chain)
    chain.register_node(cheat, b"\0" * 32, stake=40 * ONE_TOKEN)
    verdict = Verdict(
        node=cheat.address,
        session_id=os.urandom(32),
        guilty=True,
        evidence_hash=keccak(text="mismatch at layer 7"),
        deadline=int(time.time()) + 10**6,
    )
    d = chain.deployment.verdict_domain
    assert bytes(staking.functions.verdictDigest(verdict.as_tuple()).call()) == verdict.digest(d)
    sigs = order_signatures(verdict, [verdict.sign(validators[2], d), verdict.sign(validators[0], d)], d)
    with pytest.raises(TransactionFailed) as err:
        send(chain.w3, owner, staking.functions.slashByVerdicts(verdict.as_tuple(), sigs[::-1]))
    assert err.value.error == "SignersNotAscending"
    send(chain.w3, owner, staking.functions.slashByVerdicts(verdict.as_tuple(), sigs))
    assert chain.node_info(cheat.address)["slashed"] == 20 * ONE_TOKEN

    one = [verdict.sign(validators[1], d)]
    with pytest.raises(TransactionFailed) as err:
        send(chain.w3, owner, staking.functions.slashByVerdicts(verdict.as_tuple(), one))
    assert err.value.error == "QuorumNotReached"
