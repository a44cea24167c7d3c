"""Slashes reach routing at once, and the validator's evidence store and equivocation path, on an in-process EVM.

- `PenaltyWatch` follows NodeStaking's Slashed/Jailed events: the offer verifier refuses a slashed wallet without
  waiting for its cached standing to age out (the cache entry is forgotten by the event);
- `ValidatorWorker` takes two evidence files of one node for one session and span with different receipts,
  submits `reportEquivocation` (no quorum) and records the check-free submission with its tx hash; a second
  scan and a second validator find the offence slashed and send nothing.
"""

from __future__ import annotations

import json
import os
import time

from eth_account import Account
from eth_utils import keccak

from inferchain.marketplace.verify import OfferVerifier, PenaltyWatch, Rejected, Rejection, StandingCache, Verified
from inferchain.trust.evidence import EvidenceStore
from inferchain.trust.validator import SessionEvidence, Validator
from inferchain.trust.worker import ValidatorWorker, evidence_file_name
from inferchain.wallet.deployment import ONE_TOKEN, DeploymentParams
from inferchain.wallet.inprocess import funded_account, in_process_chain
from inferchain.wallet.offers import Offer, model_id_bytes32
from inferchain.wallet.receipts import Receipt

MODEL = "sha256:" + "ab" * 32
PEER = "QmPeerOfTheNode0000000000000000000000000000000"


def _offer(account, domain) -> dict:
    now = int(time.time())
    return (
        Offer(
            node=account.address,
            model_id=model_id_bytes32(MODEL),
            span_start=0,
            span_end=10,
            price_per_1k=10**15,
            throughput_milli=50_000,
            multiaddrs=(f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}",),
            issued_at=now,
            expiry=now + 600,
        )  # fmt: skip
        .sign(account, domain)
        .to_json()
    )


def test_a_slash_is_seen_by_the_watch_and_worker_reports_equivocation(tmp_path) -> None:
    chain = in_process_chain(DeploymentParams(min_stake=10 * ONE_TOKEN))
    cheat, honest, validator_key = funded_account(chain), funded_account(chain), funded_account(chain)
    for node in (cheat, honest):
        chain.register_node(node, keccak(text=node.address), stake=50 * ONE_TOKEN)
    watch = PenaltyWatch(chain)
    verifier = OfferVerifier(
        {MODEL: 30},
        domain=chain.deployment.verdict_domain,
        standings=StandingCache(chain, ttl_s=3600),  # a long TTL: only the watch can make the slash visible
        penalties=watch,
    )
    d = chain.deployment.verdict_domain
    assert isinstance(verifier.verify_signed(_offer(cheat, d), peer_id=PEER), Verified)  # cached as good
    assert verifier.peers_of(cheat.address) == {PEER}  # what the market drops from its book on a penalty
    assert watch.poll() == [] and not watch.penalised(cheat.address)

    # the buyer hands two receipts of the cheat for one session and span to a validator
    buyer = Account.create()
    rd = chain.deployment.receipt_domain
    now = chain.w3.eth.get_block("latest")["timestamp"]
    a = Receipt(
        session_id=os.urandom(32), buyer=buyer.address, node=cheat.address, model_id=keccak(text="m"),
        span_start=0, span_end=10, tokens_in=3, tokens_out=1, price_per_1k=1,
        activation_commitment=keccak(text="x"), expiry=now + 3600,
    )  # fmt: skip
    b = Receipt.from_json({**a.to_json(), "tokens_out": 5})
    evidence_dir, verdict_dir = tmp_path / "evidence", tmp_path / "verdicts"
    evidence_dir.mkdir()
    inputs = [(0, {"d": "f16", "s": [1, 3, 576], "b": bytes(3 * 576 * 2)})]
    for r in (a, b):
        ev = SessionEvidence(r, r.sign(cheat, rd), b"sketch", inputs)
        (evidence_dir / evidence_file_name(ev)).write_text(json.dumps(ev.to_json()))
    (evidence_dir / "garbage.json").write_text("{not json")

    store = EvidenceStore(tmp_path / "v1")
    events: list[dict] = []
    validator = Validator(validator_key, d, rd, sample_rate=0.0)
    worker = ValidatorWorker(validator, None, store, evidence_dir, verdict_dir, chain=chain, progress=events.append)
    report = worker.scan()
    assert report.new_files == 3 and report.sampled == 0 and len(report.slashes) == 1
    assert any(e.get("outcome") == "unreadable" for e in events)
    [sub] = store.submissions()
    assert (sub["kind"], sub["status"], sub["node"]) == ("equivocation", "mined", cheat.address)
    assert chain.w3.eth.get_transaction_receipt(sub["tx_hash"])["status"] == 1
    info = chain.node_info(cheat.address)
    assert info["stake"] == 25 * ONE_TOKEN and info["slashed"] == 25 * ONE_TOKEN
    assert chain.token_balance(validator_key.address) == 1_000 * ONE_TOKEN + 25 * ONE_TOKEN // 2  # reporter share

    # the watch sees the events; the verifier refuses at once though the standing was cached as good
    assert watch.poll() == [cheat.address] and watch.penalised(cheat.address)
    rejected = verifier.verify_signed(_offer(cheat, d), peer_id=PEER)
    assert isinstance(rejected, Rejected) and rejected.reason == Rejection.JAILED
    assert isinstance(verifier.verify_signed(_offer(honest, d), peer_id=PEER), Verified)

    # nothing is sent twice: a rescan skips taken files; another validator finds the offence already slashed
    assert worker.scan().new_files == 0
    other = ValidatorWorker(
        Validator(funded_account(chain), d, rd, 0.0), None, EvidenceStore(tmp_path / "v2"),
        evidence_dir, verdict_dir, chain=chain,
    )  # fmt: skip
    assert other.scan().slashes == []
    assert [s["status"] for s in other.store.submissions()] == ["already"]
    assert chain.node_info(cheat.address)["slashed"] == 25 * ONE_TOKEN
    assert store.summary()["seen"] == 2 and store.summary()["submissions"] == {"equivocation:mined": 1}
