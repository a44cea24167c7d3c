"""Offer verification with real EIP-712 signatures (eth-account) against the contracts on an in-process EVM:
every bad offer is dropped with its own reason, and a good one becomes a planner offer."""

from __future__ import annotations

import os
import time

import pytest
from eth_account import Account
from eth_utils import keccak

from inferchain.marketplace.verify import OfferVerifier, Rejected, Rejection, StandingCache, Verified
from inferchain.wallet.chain import Chain
from inferchain.wallet.deployment import ONE_TOKEN, DeploymentParams
from inferchain.wallet.inprocess import funded_account, in_process_chain
from inferchain.wallet.offers import Offer, model_id_bytes32
from inferchain.wallet.receipts import Receipt
from inferchain.wallet.tx import send
from inferchain.wallet.typed_data import Domain
from inferchain.wire import messages as m

MODEL = "sha256:" + "ab" * 32
OTHER_MODEL = "sha256:" + "cd" * 32
PEER = "QmPeerOfTheNode0000000000000000000000000000000"
ADDR = f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"


@pytest.fixture(scope="module")
def chain() -> Chain:
    return in_process_chain(DeploymentParams(min_stake=10 * ONE_TOKEN))


@pytest.fixture(scope="module")
def staked(chain: Chain):
    acct = funded_account(chain)
    chain.register_node(acct, keccak(text="node"), stake=20 * ONE_TOKEN)
    return acct


@pytest.fixture()
def verifier(chain: Chain) -> OfferVerifier:
    return OfferVerifier({MODEL: 30}, domain=chain.deployment.verdict_domain, standings=StandingCache(chain, ttl_s=60))


def signed_offer(account, domain: Domain, **over) -> dict:
    now = int(time.time())
    fields = {
        "node": account.address,
        "model_id": model_id_bytes32(MODEL),
        "span_start": 0,
        "span_end": 10,
        "price_per_1k": 10**15,
        "throughput_milli": 50_000,
        "multiaddrs": (ADDR,),
        "issued_at": now,
        "expiry": now + 600,
        **over,
    }
    return Offer(**fields).sign(account, domain).to_json()


def rejected(result, reason: Rejection) -> None:
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result


def test_a_good_offer_becomes_a_planner_offer(chain: Chain, staked, verifier: OfferVerifier) -> None:
    result = verifier.verify_signed(signed_offer(staked, chain.deployment.verdict_domain), peer_id=PEER)
    assert isinstance(result, Verified), result
    o = result.offer
    assert (o.node_id, o.model_id, o.start, o.end, o.price_per_1k) == (PEER, MODEL, 0, 10, 10**15)
    assert o.ms_per_layer == pytest.approx(1000 / 50 / 10)
    assert result.wallet == staked.address and result.addrs == (ADDR,)
    assert verifier.accepted == 1 and not verifier.rejected


@pytest.mark.parametrize("price", [10**16, 10**24])
def test_realistic_token_prices_are_accepted(chain: Chain, staked, verifier: OfferVerifier, price: int) -> None:
    # --price 0.01 INFER is 1e16 wei per 1k tokens per layer; 1e24 wei is 1e6 INFER
    result = verifier.verify_signed(
        signed_offer(staked, chain.deployment.verdict_domain, price_per_1k=price), peer_id=PEER
    )
    assert isinstance(result, Verified), result
    assert result.offer.price_per_1k == price


def test_bad_signature_is_dropped(chain: Chain, staked, verifier: OfferVerifier) -> None:
    data = signed_offer(staked, chain.deployment.verdict_domain)
    data["price_per_1k"] = str(int(data["price_per_1k"]) - 1)  # tampered after signing
    rejected(verifier.verify_signed(data, peer_id=PEER), Rejection.BAD_SIGNATURE)
    garbage = {**data, "signature": "0x" + "11" * 65}
    rejected(verifier.verify_signed(garbage, peer_id=PEER), Rejection.BAD_SIGNATURE)
    # signed by another key than the node it names: sign() refuses, so forge the signature by hand
    other = Account.create()
    forged = signed_offer(other, chain.deployment.verdict_domain)
    forged["node"] = staked.address
    rejected(verifier.verify_signed(forged, peer_id=PEER), Rejection.BAD_SIGNATURE)
    # the region is signed too: moving a node to another region after signing breaks the signature
    placed = signed_offer(staked, chain.deployment.verdict_domain, region="eu-west")
    assert placed["region"] == "eu-west"
    assert isinstance(verifier.verify_signed(placed, peer_id=PEER), Verified)
    rejected(verifier.verify_signed({**placed, "region": "us-east"}, peer_id=PEER), Rejection.BAD_SIGNATURE)
    assert verifier.rejected[Rejection.BAD_SIGNATURE] == 4


def test_wrong_chain_id_or_contract_is_a_bad_signature(chain: Chain, staked, verifier: OfferVerifier) -> None:
    d = chain.deployment.verdict_domain
    rejected(
        verifier.verify_signed(signed_offer(staked, Domain(d.chain_id + 1, d.verifying_contract)), peer_id=PEER),
        Rejection.BAD_SIGNATURE,
    )
    rejected(
        verifier.verify_signed(signed_offer(staked, chain.deployment.receipt_domain), peer_id=PEER),
        Rejection.BAD_SIGNATURE,
    )


def test_unregistered_unstaked_jailed_wallets_are_dropped(chain: Chain, verifier: OfferVerifier) -> None:
    d = chain.deployment.verdict_domain
    stranger = funded_account(chain)
    rejected(verifier.verify_signed(signed_offer(stranger, d), peer_id=PEER), Rejection.UNREGISTERED)

    lean = funded_account(chain)
    chain.register_node(lean, keccak(text="lean"), stake=5 * ONE_TOKEN)  # below min_stake
    rejected(verifier.verify_signed(signed_offer(lean, d), peer_id=PEER), Rejection.UNSTAKED)

    cheat = funded_account(chain)
    chain.register_node(cheat, keccak(text="cheat"), stake=50 * ONE_TOKEN)
    assert isinstance(verifier.verify_signed(signed_offer(cheat, d), peer_id=PEER), Verified)
    _equivocate(chain, cheat)
    # cached as good for ttl_s: the slash shows once the entry is forgotten (or ages out)
    assert isinstance(verifier.verify_signed(signed_offer(cheat, d), peer_id=PEER), Verified)
    assert verifier.standings is not None
    verifier.standings.forget(cheat.address)
    rejected(verifier.verify_signed(signed_offer(cheat, d), peer_id=PEER), Rejection.JAILED)


def _equivocate(chain: Chain, cheat) -> None:
    buyer = funded_account(chain)
    now = chain.w3.eth.get_block("latest")["timestamp"]
    a = Receipt(
        session_id=os.urandom(32), buyer=buyer.address, node=cheat.address, model_id=keccak(text="m"),
        span_start=0, span_end=10, tokens_in=1, tokens_out=1, price_per_1k=1,
        activation_commitment=keccak(text="x"), expiry=now + 3600,
    )  # fmt: skip
    b = Receipt.from_json({**a.to_json(), "tokens_out": 2})
    rd = chain.deployment.receipt_domain
    fn = chain.contracts.staking.functions.reportEquivocation(
        a.as_tuple(), a.sign(cheat, rd), b.as_tuple(), b.sign(cheat, rd)
    )
    send(chain.w3, buyer, fn)
    assert not chain.is_routable(cheat.address)


def test_slashed_but_released_wallet_is_dropped(verifier: OfferVerifier) -> None:
    class Released:
        def node_info(self, node):
            return {"registered": True, "stake": 10**20, "jailed_until": 1, "slashed": 5}

        def is_routable(self, node):
            return True

    v = OfferVerifier({MODEL: 30}, domain=verifier.domain, standings=StandingCache(Released()))
    acct = Account.create()
    assert verifier.domain is not None
    rejected(v.verify_signed(signed_offer(acct, verifier.domain), peer_id=PEER), Rejection.SLASHED)


def test_expired_unknown_model_bad_span(chain: Chain, staked, verifier: OfferVerifier) -> None:
    d = chain.deployment.verdict_domain
    now = int(time.time())
    rejected(
        verifier.verify_signed(signed_offer(staked, d, issued_at=now - 100, expiry=now - 1), peer_id=PEER),
        Rejection.EXPIRED,
    )
    rejected(
        verifier.verify_signed(signed_offer(staked, d, model_id=model_id_bytes32(OTHER_MODEL)), peer_id=PEER),
        Rejection.UNKNOWN_MODEL,
    )
    rejected(verifier.verify_signed(signed_offer(staked, d, span_end=31), peer_id=PEER), Rejection.BAD_SPAN)
    reversed_span = {**signed_offer(staked, d), "span": [5, 5]}
    rejected(verifier.verify_signed(reversed_span, peer_id=PEER), Rejection.BAD_SPAN)
    rejected(
        verifier.verify_signed(signed_offer(staked, d, throughput_milli=0), peer_id=PEER), Rejection.BAD_THROUGHPUT
    )
    rejected(verifier.verify_signed(signed_offer(staked, d, price_per_1k=2**200), peer_id=PEER), Rejection.BAD_PRICE)
    rejected(verifier.verify_signed(signed_offer(staked, d), peer_id="QmSomeoneElse"), Rejection.OFFER_MISMATCH)
    rejected(verifier.verify_signed({"hello": 1}), Rejection.MALFORMED)
    rejected(verifier.verify_signed({**signed_offer(staked, d), "multiaddrs": "nope"}), Rejection.MALFORMED)
    assert sum(verifier.rejected.values()) == 9 and verifier.accepted == 0


def _announce(peer: str, span=(0, 10), signed=None, model=MODEL, expires_in=15.0) -> bytes:
    info = m.NodeInfo(
        model_id=model, start=span[0], end=span[1], hidden_size=576, sessions=1, max_sessions=4,
        free_cache_tokens=1000, max_tokens_per_forward=512, ms_per_layer=2.0,
    )  # fmt: skip
    return m.encode(
        m.Announce(peer_id=peer, addrs=[ADDR], info=info, expires_at=time.time() + expires_in, signed_offer=signed)
    )


def test_announcements(chain: Chain, staked, verifier: OfferVerifier) -> None:
    d = chain.deployment.verdict_domain
    ok = verifier.verify_announcement(_announce(PEER, signed=signed_offer(staked, d)), PEER, MODEL, rtt_ms=3.0)
    assert isinstance(ok, Verified) and ok.offer.free_slots == 3 and ok.offer.rtt_ms == 3.0
    assert ok.offer.expires_at <= time.time() + 15
    rejected(verifier.verify_announcement(_announce(PEER), PEER, MODEL), Rejection.UNSIGNED)
    rejected(verifier.verify_announcement(_announce(PEER, signed=signed_offer(staked, d)), "QmX", MODEL),
             Rejection.PEER_MISMATCH)  # fmt: skip
    rejected(
        verifier.verify_announcement(_announce(PEER, span=(0, 5), signed=signed_offer(staked, d)), PEER, MODEL),
        Rejection.OFFER_MISMATCH,
    )
    rejected(verifier.verify_announcement(_announce(PEER, model=OTHER_MODEL), PEER, MODEL), Rejection.WRONG_TOPIC)
    rejected(verifier.verify_announcement(b"\x00garbage", PEER, MODEL), Rejection.MALFORMED)
    rejected(verifier.verify_announcement(m.encode(m.Ping()), PEER, MODEL), Rejection.MALFORMED)
    assert verifier.accepted == 1


def test_free_swarm_announcements() -> None:
    free = OfferVerifier({MODEL: 30}, allow_unsigned=True)
    ok = free.verify_announcement(_announce(PEER, span=(10, 30)), PEER, MODEL)
    assert isinstance(ok, Verified) and ok.offer.price_per_1k == 0 and ok.wallet is None
    assert (ok.offer.start, ok.offer.end, ok.offer.ms_per_layer) == (10, 30, 2.0)
    rejected(free.verify_announcement(_announce(PEER, expires_in=-1), PEER, MODEL), Rejection.EXPIRED)
    rejected(free.verify_announcement(_announce(PEER, span=(20, 31)), PEER, MODEL), Rejection.BAD_SPAN)
    strict = OfferVerifier({MODEL: 30})
    rejected(strict.verify_announcement(_announce(PEER), PEER, MODEL), Rejection.UNSIGNED)


def test_standing_cache_is_bounded_in_size_and_age() -> None:
    calls: list[str] = []

    class Counting:
        def node_info(self, node):
            calls.append(node)
            return {"registered": True, "stake": 1, "jailed_until": 0, "slashed": 0}

        def is_routable(self, node):
            return True

    now = [0.0]
    cache = StandingCache(Counting(), ttl_s=10, max_entries=3, clock=lambda: now[0])
    for w in "abcd":
        cache.get(w)
    assert len(cache) == 3 and calls == list("abcd")
    cache.get("d")
    assert len(calls) == 4 and cache.hits == 1  # fresh entry: no chain read
    cache.get("a")  # evicted (least recently used) -> read again
    assert calls[-1] == "a" and len(cache) == 3
    now[0] = 11.0
    cache.get("d")  # aged out -> read again
    assert calls[-1] == "d" and len(calls) == 6


def test_chain_failure_is_a_reason_not_a_crash(chain: Chain, staked) -> None:
    class Down:
        def node_info(self, node):
            raise ConnectionError("rpc down")

        def is_routable(self, node):
            raise ConnectionError("rpc down")

    d = chain.deployment.verdict_domain
    v = OfferVerifier({MODEL: 30}, domain=d, standings=StandingCache(Down()))
    rejected(v.verify_signed(signed_offer(staked, d), peer_id=PEER), Rejection.CHAIN_UNAVAILABLE)


def test_client_discovery_verifies_signed_offers(chain: Chain, staked, verifier: OfferVerifier) -> None:
    """Decentralised discovery (client.chain._learn) routes on a verified signed offer at its signed price and
    drops one from an unregistered wallet, counting the reason."""
    from types import SimpleNamespace

    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from inferchain.client.chain import Chain as RouteChain

    d = chain.deployment.verdict_domain
    client = RouteChain(None, [], MODEL, 30, 576, 64, verifier=verifier)  # type: ignore[arg-type]
    for account, span in ((staked, (0, 10)), (funded_account(chain), (10, 30))):
        peer = ID.from_pubkey(create_new_key_pair().public_key)
        addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}"
        now = int(time.time())
        signed = signed_offer(account, d, span_start=span[0], span_end=span[1], multiaddrs=(addr,), issued_at=now)
        data = m.decode(_announce(str(peer), span=span, signed=signed))
        assert isinstance(data, m.Announce)
        payload = m.encode(data.model_copy(update={"addrs": [addr]}))
        client._learn(SimpleNamespace(data=payload, from_id=peer.to_bytes()))
    offers = client.planner.offers(MODEL)
    assert [(o.start, o.end, o.price_per_1k) for o in offers] == [(0, 10, 10**15)]
    assert [p.name for p in client.known] == [offers[0].node_id]
    assert client.dropped_announcements == {"offer rejected: unregistered": 1}
