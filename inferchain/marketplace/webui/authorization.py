"""The buyer's session authorisation: before a paid market starts browser chats for a wallet, that wallet signs
(EIP-712, `eth_signTypedData_v4`) that this market may open paid sessions for it, at most at a price cap, until
an expiry. The market holds no wallet key: it only checks the wallet's signature.

Why, though every receipt is countersigned in the wallet anyway: without it, a page could start chats in the name
of any address (the nodes would serve answers that wallet never countersigns), and the market could not tell a
buyer from someone who merely names one. With it, each chat is tied to a wallet that asked for it, under a cap
that wallet approved.

Flow: `POST /app/api/chats/authorization {buyer, max_price_per_1k}` answers the typed data; the page has the wallet
sign it and sends the signed message's fields (`nonce`, `maxPricePer1k`, `expiry`, `market`) and the signature with
each chat. The market stores nothing per authorisation: the nonce is an HMAC, under a key that lives only in this
process, of what the message says, so a nonce proves the market issued exactly that message and no one can flood
the market with authorisations to keep. A restarted market has a new key: its old authorisations fail with 401,
and the page signs again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

DOMAIN_NAME = "inferchain market"
DOMAIN_VERSION = "1"
TTL_S = 3600  # an authorisation lets its wallet chat for an hour

TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
    ],
    "ChatSession": [
        {"name": "buyer", "type": "address"},
        {"name": "market", "type": "string"},
        {"name": "maxPricePer1k", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
        {"name": "expiry", "type": "uint64"},
    ],
}


class AuthorizationError(ValueError):
    """A chat's authorisation is missing, unknown, expired, for another wallet, over its cap, or badly signed."""


@dataclass(frozen=True)
class Grant:
    buyer: str
    market: str
    max_price_per_1k: int
    nonce: bytes
    expiry: int

    def typed_data(self, chain_id: int) -> dict[str, Any]:
        """What the wallet signs (uint256 as decimal text, so JavaScript loses no digit)."""
        return {
            "types": TYPES,
            "primaryType": "ChatSession",
            "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
            "message": {
                "buyer": self.buyer,
                "market": self.market,
                "maxPricePer1k": str(self.max_price_per_1k),
                "nonce": "0x" + self.nonce.hex(),
                "expiry": self.expiry,
            },
        }


class Authorizations:
    """Issues and checks chat authorisations; keeps no state but its HMAC key."""

    def __init__(self, chain_id: int, ttl_s: int = TTL_S) -> None:
        self.chain_id, self.ttl_s = chain_id, ttl_s
        self._key = secrets.token_bytes(32)

    def _nonce(self, buyer: str, market: str, max_price_per_1k: int, expiry: int) -> bytes:
        text = f"{buyer}|{market}|{max_price_per_1k}|{expiry}".encode()
        return hmac.new(self._key, text, hashlib.sha256).digest()

    def issue(self, buyer: str, market: str, max_price_per_1k: int) -> Grant:
        buyer, expiry = to_checksum_address(buyer), int(time.time()) + self.ttl_s
        return Grant(buyer, market, max_price_per_1k, self._nonce(buyer, market, max_price_per_1k, expiry), expiry)

    def check(self, buyer: str, signed: Grant, signature_hex: str, max_price_per_1k: int) -> Grant:
        """`signed`: the message the wallet signed, as the page sends it back. Returns it if a chat for `buyer`
        at `max_price_per_1k` may run under it, else raises AuthorizationError saying what is wrong."""
        try:
            named = to_checksum_address(signed.buyer)
        except ValueError:
            raise AuthorizationError("the authorisation's buyer is not an address") from None
        expected = self._nonce(named, signed.market, signed.max_price_per_1k, signed.expiry)
        if not hmac.compare_digest(expected, signed.nonce):
            raise AuthorizationError("unknown authorisation (this market did not issue it, or restarted): sign again")
        if signed.expiry <= time.time():
            raise AuthorizationError("the authorisation has expired: sign again")
        if named != to_checksum_address(buyer):
            raise AuthorizationError(f"the authorisation is for {named}, not {to_checksum_address(buyer)}")
        if max_price_per_1k > signed.max_price_per_1k:
            raise AuthorizationError(
                f"the chat's price cap {max_price_per_1k} is above the authorised {signed.max_price_per_1k}: sign again"
            )
        try:
            message = encode_typed_data(full_message=signed.typed_data(self.chain_id))
            signer = Account.recover_message(message, signature=bytes.fromhex(signature_hex.removeprefix("0x")))
        except Exception as e:  # malformed signature bytes from the page
            raise AuthorizationError(f"unreadable authorisation signature: {e}") from None
        if signer != named:
            raise AuthorizationError(f"the authorisation is signed by {signer}, not the buyer {named}")
        return signed
