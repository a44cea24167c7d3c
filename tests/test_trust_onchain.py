"""The adversarial suite on a real chain with real cheating node processes.

A Hardhat devnet with the contracts; six paid node processes (own wallets, registered, staked 150 INFER each):
an honest node on layers 0:15, an honest one on 15:30, and four cheaters on 15:30 started with
INFERCHAIN_ADVERSARY: noise on the outputs, a skipped layer, another model's weights behind the claimed model id,
and one that signs a second receipt for a re-opened session (equivocation). Two staked validators (quorum 2) run
`inferchain validator start` as OS processes over the evidence the buyer hands them.

What must hold: every cheater loses stake on-chain and is jailed (noise, skip, other model through a quorum of
signed verdicts; the equivocator through its two receipts, without a quorum); the honest nodes of the same runs
keep all their stake; a session generating through the equivocator when it is slashed drops it before the next
step and finishes on the honest node with the same greedy tokens as a fault-free run; the offer verifier refuses
the cheaters' signed offers at once; the validators' evidence stores hold every check, verdict and tx hash; and
the validators are paid for their checks (escrow earnings and a RewardPool share of the epoch).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PASS = "trust passphrase"
STAKE_INFER = 150
PRICE = "0.001"  # INFER per 1k tokens per layer
DEAR = "0.003"  # the honest 15:30 node: dearer, so the price objective routes through a cheater first
CHEATS = {"noise": "noise:0.05", "skip": "skip:1", "other": None, "equivocate": "equivocate"}  # other: model:PATH
PROMPT = [1, 504, 3458, 282, 4649, 314, 7042, 30]


pytestmark = pytest.mark.integration


def _greedy(session, first: list[int], n: int) -> list[int]:
    logits = session.step(first)
    out = []
    for _ in range(n):
        token = int(logits.argmax())
        out.append(token)
        logits = session.step([token])
    return out


def _raw_paid_session(host, peer_addr: str, session_id: str, buyer, model_id: str, hidden: np.ndarray):
    """Open, forward and close one paid session without countersigning: returns the node's `closed` receipt, its
    signature, the sketch and the inputs sent (what a buyer holds after a node signed a second receipt)."""
    from libp2p.custom_types import TProtocol

    from inferchain.p2p.host import ensure_connected, parse_peer_addr
    from inferchain.p2p.streams import FramedStream
    from inferchain.wire import messages as m
    from inferchain.wire.tensors import encode_tensor

    peer = parse_peer_addr(peer_addr)

    async def run():
        await ensure_connected(host.host, peer, 10)
        stream = await host.host.new_stream(peer.peer_id, [TProtocol(m.PROTOCOL_ID)])
        framed = FramedStream(stream)

        async def ask(msg):
            await framed.send(m.encode(msg))
            return m.decode(await framed.recv())

        opened = await ask(
            m.Open(session_id=session_id, model_id=model_id, start=15, end=30, max_length=64, dtype="f16",
                   buyer=buyer.address, max_price_per_1k=str(buyer.max_price_per_1k))
        )  # fmt: skip
        assert isinstance(opened, m.Opened), opened
        wire = encode_tensor(hidden, "f16")
        out = await ask(m.Forward(pos=0, x=wire))
        assert isinstance(out, m.Output), out
        closed = await ask(m.Close())
        await framed.close()
        return closed, [(0, wire)]

    closed, inputs = host.call(run)
    receipt = dict(closed.receipt)
    sketch = receipt.pop("activation_sketch")
    return receipt, closed.node_sig, sketch, inputs


def _validator_cli(name: str, home: Path, smollm2: Path, env: dict[str, str]) -> list[dict]:
    proc = subprocess.run(
        [
            sys.executable, "-m", "inferchain.cli", "validator", "start", "--model", str(smollm2),
            "--layers", "0:30", "--evidence-dir", str(home / "evidence"), "--verdict-dir", str(home / "verdicts"),
            "--data-dir", str(home / name), "--sample-rate", "1.0", "--price", PRICE, "--rounds", "1",
            "--wallet", name, "--json",
        ],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_cheaters_are_slashed_honest_nodes_are_not(smollm2: Path, tmp_path: Path, monkeypatch) -> None:
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run `npm ci` or scripts/contracts_test.sh)")
    from eth_account import Account

    from inferchain.client.remote import RemoteError, RemoteSpan, Timeouts
    from inferchain.client.session import InferenceSession
    from inferchain.marketplace.verify import OfferVerifier, PenaltyWatch, Rejected, Rejection, StandingCache, Verified
    from inferchain.models.span import ModelHead, SpanModel
    from inferchain.node.launch import start_node
    from inferchain.p2p.host import load_or_create_identity, parse_peer_addr
    from inferchain.p2p.thread import HostThread
    from inferchain.trust.adversary import ENV, altered_model_folder
    from inferchain.trust.evidence import EvidenceStore
    from inferchain.trust.validator import SessionEvidence
    from inferchain.trust.worker import evidence_file_name
    from inferchain.wallet import devnet
    from inferchain.wallet.buyer import Buyer, receipt_from_wire
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.keystore import Keystore
    from inferchain.wallet.operator import Operator
    from inferchain.wallet.receipts import Receipt, SignedReceipt
    from inferchain.wallet.tx import send

    home = tmp_path / "chain"
    env = {"INFERCHAIN_HOME": str(home), "INFERCHAIN_SCRYPT_N": "1024", "INFERCHAIN_PASSPHRASE": PASS}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("INFERCHAIN_WALLET", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    other_model = altered_model_folder(smollm2, tmp_path / "altered", (15, 30), relative_noise=0.05)
    roles = {
        "honest_a": ((0, 15), PRICE, None),
        "honest_b": ((15, 30), DEAR, None),
        **{
            name: ((15, 30), PRICE, spec if spec is not None else f"model:{other_model}")
            for name, spec in CHEATS.items()
        },
    }
    names = list(roles)
    validators = ["v1", "v2"]
    devnet.up(home, accounts=len(names) + len(validators) + 2, fund=10_000 * ONE_TOKEN, timeout_s=90)
    nodes: dict[str, object] = {}
    watch = None
    try:
        chain = Chain.open(home / "deployment.json")
        keys = devnet.devnet_accounts(len(names) + len(validators) + 2)
        store = Keystore(home / "wallets")
        address: dict[str, str] = {}
        for i, name in enumerate(names + validators, start=1):
            store.import_private_key(name, keys[i]["private_key"], PASS)
            op = Operator(chain, store.unlock(name, PASS))
            op.plan_register().run()
            op.plan_stake(STAKE_INFER * ONE_TOKEN).run()  # validators stake like nodes
            address[name] = op.address
        owner = chain.deployment.deployer
        staking = chain.contracts.staking
        for v in validators:
            send(chain.w3, owner, staking.functions.addValidator(address[v]))
        send(chain.w3, owner, staking.functions.setQuorum(2))

        for name, (span, price, cheat) in roles.items():
            node_env = {**env, **({ENV: cheat} if cheat else {})}
            nodes[name] = start_node(span, tmp_path / name, smollm2, ["--wallet", name, "--price", price], node_env)
        for node in nodes.values():
            node.wait_ready(240)
        peer = {name: node.peer_id for name, node in nodes.items()}
        addr = {name: node.addr for name, node in nodes.items()}
        wallets = {peer[n]: address[n] for n in names}

        buyer_key = Account.from_key(keys[len(names) + len(validators) + 1]["private_key"])
        chain.deposit(buyer_key, 500 * ONE_TOKEN)
        buyer = Buyer(buyer_key, chain.deployment.receipt_domain, max_price_per_1k=ONE_TOKEN // 100)
        evidence_dir = home / "evidence"
        evidence_dir.mkdir()

        def hand_over(evidence: list[SessionEvidence]) -> None:
            for ev in evidence:
                (evidence_dir / evidence_file_name(ev)).write_text(json.dumps(ev.to_json()))

        # 1. one paid session through the honest 0:15 node and each 15:30 node (the buyer's own sketch check
        #    passes for every cheater: each commits to exactly what it sent)
        for name in ["honest_b", "noise", "skip", "other"]:
            with InferenceSession(smollm2, [addr["honest_a"], addr[name]], buyer=buyer, max_length=64) as s:
                assert [h[0] for h in s.route] == [peer["honest_a"], peer[name]]
                _greedy(s, PROMPT, 3)
            assert len(s.evidence) == 2, [(h.remote.name, h.remote.receipt_error) for h in s.chain.hops]
            hand_over(s.evidence)

        # 2. equivocation: the same session id opened twice on the equivocator (an honest node refuses the second)
        session_id = "0x" + "e7" * 32
        with InferenceSession(
            smollm2, [addr["honest_a"], addr["equivocate"]], buyer=buyer, max_length=64, session_id=session_id
        ) as s:
            _greedy(s, PROMPT, 2)
        hand_over(s.evidence)
        head = ModelHead(smollm2)
        first_span = SpanModel(smollm2, 0, 15)
        hidden = first_span.forward(head.embed(PROMPT[:5]), 0, first_span.new_cache()).numpy()
        with HostThread(load_or_create_identity(None)) as host:
            honest = RemoteSpan(host.host, parse_peer_addr(addr["honest_a"]), 0, 15, "f16", Timeouts())
            honest.buyer = buyer
            with pytest.raises(RemoteError, match="exists"):
                host.call(honest.open, session_id, head.info.model_id, 576, 64)
            receipt, sig, sketch, inputs = _raw_paid_session(
                host, addr["equivocate"], session_id, buyer, head.info.model_id, hidden
            )
        second = SessionEvidence(receipt_from_wire(receipt), sig, sketch, inputs)
        first_receipt = next(e for e in s.evidence if e.receipt.node == address["equivocate"]).receipt
        assert second.receipt.node == first_receipt.node and second.receipt != first_receipt
        hand_over([second])

        # 3. a fault-free reference, then a generation through the equivocator that is slashed mid-answer
        with InferenceSession(smollm2, [addr["honest_a"], addr["honest_b"]], buyer=buyer, max_length=64) as s:
            reference = _greedy(s, PROMPT, 10)
        watch = PenaltyWatch(chain, poll_s=0.2).start()
        generating = InferenceSession(
            smollm2,
            [addr["honest_a"], addr["equivocate"], addr["honest_b"]],
            buyer=buyer,
            max_length=64,
            penalties=watch,
            wallets=wallets,
            limits=_price_first(),
        )
        with generating as g:
            assert [h[0] for h in g.route] == [peer["honest_a"], peer["equivocate"]]
            logits = g.step(PROMPT)
            generated = []
            for i in range(10):
                token = int(logits.argmax())
                generated.append(token)
                if i == 2:  # validator 1 takes the evidence in: the equivocation is reported at once
                    events = _validator_cli("v1", home, smollm2, env)
                    assert any(e.get("outcome") == "slashed" and e.get("node") == address["equivocate"]
                               for e in events), events  # fmt: skip
                    deadline = time.monotonic() + 10
                    while not watch.penalised(address["equivocate"]) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert watch.penalised(address["equivocate"])
                logits = g.step([token])
            failovers = list(g.failovers)
        assert generated == reference
        assert len(failovers) == 1 and failovers[0].failed_peer == peer["equivocate"]
        assert failovers[0].reason.startswith("penalised") and failovers[0].replacement[0][0] == peer["honest_b"]
        assert all(r.receipt.node != address["equivocate"] for r in g.receipts)  # no pay for the dropped session

        # 4. validator 2 signs too: the quorum of verdicts slashes the three computing cheaters
        events = _validator_cli("v2", home, smollm2, env)
        slashed_by_v2 = {e["node"] for e in events if e.get("outcome") == "slashed"}
        assert slashed_by_v2 == {address[n] for n in ("noise", "skip", "other")}, events

        bonded = STAKE_INFER * ONE_TOKEN
        for name in names:
            info = chain.node_info(address[name])
            if name.startswith("honest"):
                assert (info["stake"], info["slashed"], info["jailed_until"]) == (bonded, 0, 0), name
                assert chain.is_routable(address[name])
            else:
                assert info["stake"] == bonded // 2 and info["slashed"] == bonded // 2, name
                assert info["jailed_until"] > time.time() and not chain.is_routable(address[name]), name

        # 5. the offer verifier refuses the cheaters' signed offers at once (the watch saw the events)
        watch.poll()
        verifier = OfferVerifier(
            {head.info.model_id: 30},
            domain=chain.deployment.verdict_domain,
            standings=StandingCache(chain),
            penalties=watch,
        )
        for name in names:
            offer = json.loads((tmp_path / name / "offer.json").read_text())
            result = verifier.verify_signed(offer, peer_id=peer[name])
            if name.startswith("honest"):
                assert isinstance(result, Verified), (name, result)
            else:
                assert isinstance(result, Rejected) and result.reason == Rejection.JAILED, (name, result)

        # 6. the evidence stores: every check, verdict and submission with its tx hash
        v1, v2 = EvidenceStore(home / "v1"), EvidenceStore(home / "v2")
        try:
            for st in (v1, v2):
                outcomes = {(c["node"], c["outcome"]) for c in st.checks()}
                assert {o for n, o in outcomes if n in (address["honest_a"], address["honest_b"])} == {"honest"}
                for cheat in ("noise", "skip", "other"):
                    assert (address[cheat], "guilty") in outcomes
                assert (address["equivocate"], "honest") in outcomes  # it computes honestly; its receipts lie
            [equivocation] = [x for x in v1.submissions() if x["kind"] == "equivocation"]
            assert equivocation["status"] == "mined" and equivocation["node"] == address["equivocate"]
            tx = chain.w3.eth.get_transaction_receipt(equivocation["tx_hash"])
            assert tx["status"] == 1
            mined = [x for x in v2.submissions() if x["kind"] == "verdicts" and x["status"] == "mined"]
            assert {x["node"] for x in mined} == slashed_by_v2 and all(x["signatures"] == 2 for x in mined)

            # 7. validators' pay: the buyer countersigns their validation receipts, they settle them on the escrow
            #    (earnings from the buyer's deposit, contribution recorded with the RewardPool) and, once the
            #    epoch ends, claim their share of it (fees plus the pool's part of the four slashes)
            for v, st in (("v1", v1), ("v2", v2)):
                payments = st.payments()
                # one validation receipt per judged session (the equivocator's two receipts are one session)
                assert len(payments) == len({(c["node"], c["session_id"]) for c in st.checks()})
                batch = []
                for p in payments:
                    data = dict(p["receipt"])
                    data["price_per_1k"] = int(data["price_per_1k"])
                    r = Receipt.from_json(data)
                    batch.append(
                        SignedReceipt(
                            r,
                            bytes.fromhex(p["signature"][2:]),
                            r.sign(buyer_key, chain.deployment.receipt_domain),
                        )
                    )
                validator_account = store.unlock(v, PASS)
                chain.settle_batch(validator_account, batch)
                owed = sum(x.receipt.amount_owed for x in batch)
                assert owed > 0 and chain.earnings(address[v]) == owed - owed * 500 // 10_000
        finally:
            v1.close()
            v2.close()
        pool = chain.contracts.reward_pool
        epoch = int(pool.functions.currentEpoch().call())
        assert int(pool.functions.contributionOf(epoch, address["v1"]).call()) > 0
        devnet.rpc_request(chain.deployment.rpc_url, "evm_increaseTime", [chain.deployment.params.epoch_length_s])
        devnet.rpc_request(chain.deployment.rpc_url, "evm_mine")
        for v in validators:
            reward = int(pool.functions.claimable(epoch, address[v]).call())
            assert reward > 0
            before = chain.token_balance(address[v])
            Operator(chain, store.unlock(v, PASS)).plan_claim().run()
            assert chain.token_balance(address[v]) - before == reward + chain_earnings_claimed(chain, address[v])
    finally:
        if watch is not None:
            watch.close()
        for node in nodes.values():
            node.kill()
        devnet.down(home)


def chain_earnings_claimed(chain, address: str) -> int:
    """What the last claimEarnings paid `address` (from its event)."""
    events = chain.contracts.escrow.events.EarningsClaimed.get_logs(from_block=chain.deployment.block)
    return sum(int(e["args"]["amount"]) for e in events if e["args"]["node"] == address)


def _price_first():
    from inferchain.client.chain import RouteLimits

    return RouteLimits(objective="price")
