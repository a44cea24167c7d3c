"""The buyer's signed chat authorisation (EIP-712 ChatSession): issued with an HMAC nonce, checked against the
buyer, its expiry, its price cap and the wallet's signature; nothing is stored per authorisation."""

from __future__ import annotations

import dataclasses
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from inferchain.marketplace.webui.authorization import AuthorizationError, Authorizations

CHAIN_ID = 31337


def _sign(account, auths: Authorizations, grant) -> str:
    signed = account.sign_message(encode_typed_data(full_message=grant.typed_data(auths.chain_id)))
    return "0x" + bytes(signed.signature).hex()


def test_a_wallet_signed_authorisation_lets_its_buyer_chat_under_its_cap() -> None:
    buyer, other = Account.create(), Account.create()
    auths = Authorizations(CHAIN_ID)
    grant = auths.issue(buyer.address.lower(), "127.0.0.1:8000", 10**16)
    typed = grant.typed_data(CHAIN_ID)
    assert typed["primaryType"] == "ChatSession" and typed["message"]["maxPricePer1k"] == str(10**16)
    assert typed["message"]["buyer"] == buyer.address and typed["domain"]["chainId"] == CHAIN_ID
    signature = _sign(buyer, auths, grant)
    assert auths.check(buyer.address, grant, signature, 10**16) == grant
    assert auths.check(buyer.address, grant, signature, 1) == grant  # any chat at or under the cap, until expiry

    with pytest.raises(AuthorizationError, match="above the authorised"):
        auths.check(buyer.address, grant, signature, 10**16 + 1)
    with pytest.raises(AuthorizationError, match="not the buyer"):
        auths.check(buyer.address, grant, _sign(other, auths, grant), 1)  # signed by another wallet
    with pytest.raises(AuthorizationError, match="is for"):
        auths.check(other.address, grant, signature, 1)  # someone else naming the buyer's grant
    with pytest.raises(AuthorizationError, match="unreadable"):
        auths.check(buyer.address, grant, "0x" + "00" * 65, 1)
    # a signature over another chain's domain does not recover to the buyer
    with pytest.raises(AuthorizationError, match="not the buyer"):
        auths.check(buyer.address, grant, _sign(buyer, Authorizations(CHAIN_ID + 1), grant), 1)


def test_only_messages_this_market_issued_are_accepted() -> None:
    """The wallet may sign anything; the market accepts only a message it issued, unchanged (the nonce is an HMAC
    of it under a key only this process has): a raised cap, a later expiry or another market's grant fail."""
    buyer = Account.create()
    auths = Authorizations(CHAIN_ID)
    grant = auths.issue(buyer.address, "m", 5)
    for forged in (
        dataclasses.replace(grant, max_price_per_1k=10**30),
        dataclasses.replace(grant, expiry=grant.expiry + 10**6),
        dataclasses.replace(grant, market="elsewhere"),
        dataclasses.replace(grant, nonce=bytes(32)),
        Authorizations(CHAIN_ID).issue(buyer.address, "m", 5),  # another market process (or this one restarted)
    ):
        with pytest.raises(AuthorizationError, match="unknown authorisation"):
            auths.check(buyer.address, forged, _sign(buyer, auths, forged), 1)


def test_authorisations_expire() -> None:
    buyer = Account.create()
    auths = Authorizations(CHAIN_ID, ttl_s=1)
    grant = auths.issue(buyer.address, "m", 5)
    signature = _sign(buyer, auths, grant)
    assert auths.check(buyer.address, grant, signature, 5) == grant
    deadline = time.monotonic() + 5
    while time.time() < grant.expiry and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(AuthorizationError, match="expired"):
        auths.check(buyer.address, grant, signature, 5)
