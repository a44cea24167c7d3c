"""The Python EIP-712 Receipt/Verdict: field validation, signing, recovery, and agreement with Solidity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from inferchain.wallet.artifacts import find_repo_root, load_artifact
from inferchain.wallet.receipts import (
    RECEIPT_FIELDS,
    RECEIPT_TYPE_STRING,
    InvalidReceipt,
    Receipt,
    SignedReceipt,
)
from inferchain.wallet.typed_data import Domain
from inferchain.wallet.verdicts import VERDICT_FIELDS, Verdict, order_signatures

NODE = Account.from_key(b"\x11" * 32)
BUYER = Account.from_key(b"\x22" * 32)
DOMAIN = Domain(31337, "0x" + "ab" * 20)
REPO = find_repo_root()


def receipt(**over) -> Receipt:
    fields = {
        "session_id": b"\x01" * 32,
        "buyer": BUYER.address,
        "node": NODE.address,
        "model_id": b"\x02" * 32,
        "span_start": 0,
        "span_end": 10,
        "tokens_in": 100,
        "tokens_out": 28,
        "price_per_1k": 10**16,
        "activation_commitment": b"\x03" * 32,
        "expiry": 2_000_000_000,
        **over,
    }
    return Receipt(**fields)


def test_amount_contribution_and_layers() -> None:
    r = receipt(span_start=4, span_end=7, tokens_in=700, tokens_out=300, price_per_1k=2 * 10**18)
    assert r.layers == 3
    assert r.contribution == 3000
    assert r.amount_owed == 6 * 10**18
    # rounds down like Solidity
    assert receipt(tokens_in=1, tokens_out=0, span_start=0, span_end=1, price_per_1k=999).amount_owed == 0


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"span_start": 5, "span_end": 5}, "empty or reversed span"),
        ({"span_start": 6, "span_end": 5}, "empty or reversed span"),
        ({"span_end": 2**32}, "span_end"),
        ({"tokens_in": -1}, "tokens_in"),
        ({"tokens_out": 2**64}, "tokens_out"),
        ({"expiry": True}, "expiry"),
        ({"price_per_1k": 2**256}, "price_per_1k"),
        ({"session_id": b"\x01" * 31}, "session_id must be 32 bytes"),
        ({"model_id": "0x" + "00" * 32}, "model_id must be 32 bytes"),
        ({"buyer": "not-an-address"}, "buyer is not an address"),
    ],
)
def test_invalid_fields_are_refused(over: dict, message: str) -> None:
    with pytest.raises(InvalidReceipt, match=message):
        receipt(**over)


def test_addresses_are_checksummed() -> None:
    assert receipt(buyer=BUYER.address.lower()).buyer == BUYER.address


def test_type_string_is_the_solidity_one() -> None:
    if REPO is None:
        pytest.skip("not a source checkout")
    sol = (REPO / "contracts" / "libraries" / "Receipts.sol").read_text()
    parts = re.search(r"TYPEHASH =\s*keccak256\(\s*((?:\"[^\"]*\"\s*)+)\)", sol)
    assert parts is not None
    assert "".join(re.findall(r"\"([^\"]*)\"", parts.group(1))) == RECEIPT_TYPE_STRING
    staking = (REPO / "contracts" / "NodeStaking.sol").read_text()
    verdict = "Verdict(" + ",".join(f"{f['type']} {f['name']}" for f in VERDICT_FIELDS) + ")"
    assert f'keccak256("{verdict}")' in staking


def test_abi_struct_matches_the_python_fields() -> None:
    abi = load_artifact("PaymentEscrow").abi
    settle = next(i for i in abi if i.get("name") == "settle")
    components = settle["inputs"][0]["components"]
    assert [{"name": c["name"], "type": c["type"]} for c in components] == RECEIPT_FIELDS
    staking = load_artifact("NodeStaking").abi
    slash = next(i for i in staking if i.get("name") == "slashByVerdicts")
    assert [
        {"name": c["name"], "type": c["type"]} for c in slash["inputs"][0]["components"]
    ] == VERDICT_FIELDS


def test_sign_and_recover() -> None:
    r = receipt()
    sig = r.sign(NODE, DOMAIN)
    assert len(sig) == 65
    assert r.recover(sig, DOMAIN) == NODE.address
    # another domain (chain or contract) recovers someone else
    assert r.recover(sig, Domain(1, DOMAIN.verifying_contract)) != NODE.address
    assert r.recover(sig, Domain(DOMAIN.chain_id, "0x" + "cd" * 20)) != NODE.address


def test_signed_receipt_check() -> None:
    r = receipt()
    good = SignedReceipt(r, r.sign(NODE, DOMAIN), r.sign(BUYER, DOMAIN))
    good.check(DOMAIN)
    with pytest.raises(InvalidReceipt, match="node signature"):
        SignedReceipt(r, r.sign(BUYER, DOMAIN), r.sign(BUYER, DOMAIN)).check(DOMAIN)
    with pytest.raises(InvalidReceipt, match="countersignature"):
        SignedReceipt(r, r.sign(NODE, DOMAIN), r.sign(NODE, DOMAIN)).check(DOMAIN)
    reseller = Account.from_key(b"\x33" * 32)
    SignedReceipt(r, r.sign(NODE, DOMAIN), r.sign(reseller, DOMAIN)).check(
        DOMAIN, buyer_signer=reseller.address
    )


def test_json_round_trip_and_unknown_fields() -> None:
    r = receipt()
    assert Receipt.from_json(r.to_json()) == r
    with pytest.raises(InvalidReceipt, match="unknown receipt fields"):
        Receipt.from_json({**r.to_json(), "tip": 1})
    data = r.to_json()
    del data["expiry"]
    with pytest.raises(InvalidReceipt):
        Receipt.from_json(data)


@settings(max_examples=30, deadline=None)
@given(
    tokens_in=st.integers(0, 2**64 - 1),
    tokens_out=st.integers(0, 2**64 - 1),
    start=st.integers(0, 2**32 - 2),
    width=st.integers(1, 64),
    price=st.integers(0, 2**128),
    flip=st.integers(0, 10),
)
def test_any_field_change_breaks_the_signature(tokens_in, tokens_out, start, width, price, flip) -> None:
    end = min(start + width, 2**32 - 1)
    r = receipt(
        tokens_in=tokens_in, tokens_out=tokens_out, span_start=start, span_end=end, price_per_1k=price
    )
    sig = r.sign(NODE, DOMAIN)
    assert r.recover(sig, DOMAIN) == NODE.address
    data = r.to_json()
    name = list(data)[flip]
    value = data[name]
    if name == "span_start":
        data[name] = value - 1 if value > 0 else value
        data["span_end"] = data["span_end"] if value > 0 else data["span_end"] + 1
    elif name == "span_end":
        data[name] = value + 1 if value < 2**32 - 1 else value - 1
        if data[name] <= data["span_start"]:
            data["span_start"] -= 1
    elif isinstance(value, int):
        data[name] = value ^ 1
    elif name in ("buyer", "node"):
        data[name] = NODE.address if value == BUYER.address else BUYER.address
    else:
        data[name] = "0x" + "ff" * 32
    tampered = Receipt.from_json(data)
    assert tampered != r
    assert tampered.recover(sig, DOMAIN) != NODE.address


def test_verdict_signatures_are_ordered_by_signer() -> None:
    v = Verdict(NODE.address, b"\x05" * 32, True, b"\x06" * 32, 2_000_000_000)
    signers = [Account.from_key(bytes([i]) * 32) for i in (7, 8, 9)]
    sigs = [v.sign(s, DOMAIN) for s in signers]
    ordered = order_signatures(v, sigs, DOMAIN)
    addresses = [int(v.recover(s, DOMAIN), 16) for s in ordered]
    assert addresses == sorted(addresses)
    assert {v.recover(s, DOMAIN) for s in ordered} == {s.address for s in signers}
    with pytest.raises(ValueError, match="32 bytes"):
        Verdict(NODE.address, b"\x05", True, b"\x06" * 32, 0)


def test_repo_root_is_found_from_this_checkout() -> None:
    if REPO is None:
        pytest.skip("not a source checkout")
    assert (REPO / "hardhat.config.js").is_file()
    assert Path(__file__).resolve().is_relative_to(REPO)
