"""The buyer's signed chat authorisation (EIP-712 ChatSession): issued with a nonce, checked against the buyer,
its expiry, its price cap and the wallet's signature; bounded in number."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from inferchain.marketplace.webui.authorization import (
    AuthorizationError,
    Authorizations,
    TooManyAuthorizations,
)

CHAIN_ID = 31337


def _sign(account, auths: Authorizations, grant) -> str:
    signed = account.sign_message(encode_typed_data(full_message=grant.typed_data(auths.chain_id)))
    return "0x" + bytes(signed.signature).hex()


def test_a_wallet_signed_authorisation_lets_its_buyer_chat_under_its_cap() -> None:
    buyer, other = Account.create(), Account.create()
    auths = Authorizations(CHAIN_ID)
    grant = auths.issue(buyer.address.lower(), "127.0.0.1:8000", 10**16)
    nonce = "0x" + grant.nonce.hex()
    typed = grant.typed_data(CHAIN_ID)
    assert typed["primaryType"] == "ChatSession" and typed["message"]["maxPricePer1k"] == str(10**16)
    assert typed["message"]["buyer"] == buyer.address and typed["domain"]["chainId"] == CHAIN_ID
    signature = _sign(buyer, auths, grant)
    assert auths.check(buyer.address, nonce, signature, 10**16) == grant
    assert auths.check(buyer.address, nonce, signature, 1) == grant  # any chat at or under the cap, until expiry

    with pytest.raises(AuthorizationError, match="above the authorised"):
        auths.check(buyer.address, nonce, signature, 10**16 + 1)
    with pytest.raises(AuthorizationError, match="not the buyer"):
        auths.check(buyer.address, nonce, _sign(other, auths, grant), 1)  # signed by another wallet
    with pytest.raises(AuthorizationError, match="is for"):
        auths.check(other.address, nonce, signature, 1)  # someone else naming the buyer's grant
    with pytest.raises(AuthorizationError, match="unknown"):
        auths.check(buyer.address, "0x" + "00" * 32, signature, 1)
    with pytest.raises(AuthorizationError, match="unreadable"):
        auths.check(buyer.address, nonce, "0x" + "00" * 65, 1)
    # a signature over another chain's domain does not recover to the buyer
    foreign = Authorizations(CHAIN_ID + 1)
    wrong_chain = _sign(buyer, foreign, grant)
    with pytest.raises(AuthorizationError, match="not the buyer"):
        auths.check(buyer.address, nonce, wrong_chain, 1)


def test_authorisations_expire_and_are_bounded() -> None:
    buyer = Account.create()
    auths = Authorizations(CHAIN_ID, ttl_s=1, max_pending=2)
    grant = auths.issue(buyer.address, "m", 5)
    auths.issue(buyer.address, "m", 5)
    with pytest.raises(TooManyAuthorizations):
        auths.issue(buyer.address, "m", 5)
    signature = _sign(buyer, auths, grant)
    deadline = time.monotonic() + 5
    while time.time() < grant.expiry and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(AuthorizationError, match="expired"):
        auths.check(buyer.address, "0x" + grant.nonce.hex(), signature, 5)
    auths.issue(buyer.address, "m", 5)  # expired ones make room
