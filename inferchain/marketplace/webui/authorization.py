"""The buyer's session authorisation: before a paid market starts browser chats for a wallet, that wallet signs
(EIP-712, `eth_signTypedData_v4`) that this market may open paid sessions for it, at most at a price cap, until
an expiry. The market holds no key: it only checks the wallet's signature.

Why, though every receipt is countersigned in the wallet anyway: without it, a page could start chats in the name
of any address (the nodes would serve answers that wallet never countersigns), and the market could not tell a
buyer from someone who merely names one. With it, each chat is tied to a wallet that asked for it, under a cap
that wallet approved.

Flow: `POST /app/api/chats/authorization {buyer, max_price_per_1k}` answers the typed data with a fresh nonce; the
page signs it and sends `{nonce, signature}` with each chat. The market keeps issued nonces in memory (bounded,
expiring): a restarted market answers 401 and the page signs again.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

DOMAIN_NAME = "inferchain market"
DOMAIN_VERSION = "1"
TTL_S = 3600  # an authorisation lets its wallet chat for an hour
MAX_PENDING = 10_000  # authorisations kept at once (issued and not expired)

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


class TooManyAuthorizations(RuntimeError):
    pass


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
    """Issued authorisations, by nonce. Thread-safe; at most `MAX_PENDING` unexpired ones."""

    def __init__(self, chain_id: int, ttl_s: int = TTL_S, max_pending: int = MAX_PENDING) -> None:
        self.chain_id, self.ttl_s, self.max_pending = chain_id, ttl_s, max_pending
        self._grants: dict[bytes, Grant] = {}
        self._lock = threading.Lock()

    def issue(self, buyer: str, market: str, max_price_per_1k: int) -> Grant:
        now = int(time.time())
        grant = Grant(to_checksum_address(buyer), market, max_price_per_1k, secrets.token_bytes(32), now + self.ttl_s)
        with self._lock:
            for nonce in [n for n, g in self._grants.items() if g.expiry <= now]:
                del self._grants[nonce]
            if len(self._grants) >= self.max_pending:
                raise TooManyAuthorizations("too many chat authorisations are open; try again later")
            self._grants[grant.nonce] = grant
        return grant

    def check(self, buyer: str, nonce_hex: str, signature_hex: str, max_price_per_1k: int) -> Grant:
        """The grant a chat may run under, or AuthorizationError saying what is wrong."""
        try:
            nonce = bytes.fromhex(nonce_hex.removeprefix("0x"))
        except ValueError:
            raise AuthorizationError("the authorisation's nonce is not hex") from None
        with self._lock:
            grant = self._grants.get(nonce)
        if grant is None:
            raise AuthorizationError("unknown authorisation (this market did not issue it, or restarted): sign again")
        if grant.expiry <= time.time():
            raise AuthorizationError("the authorisation has expired: sign again")
        if grant.buyer != to_checksum_address(buyer):
            raise AuthorizationError(f"the authorisation is for {grant.buyer}, not {to_checksum_address(buyer)}")
        if max_price_per_1k > grant.max_price_per_1k:
            raise AuthorizationError(
                f"the chat's price cap {max_price_per_1k} is above the authorised {grant.max_price_per_1k}: sign again"
            )
        try:
            message = encode_typed_data(full_message=grant.typed_data(self.chain_id))
            signer = Account.recover_message(message, signature=bytes.fromhex(signature_hex.removeprefix("0x")))
        except Exception as e:  # malformed signature bytes from the page
            raise AuthorizationError(f"unreadable authorisation signature: {e}") from None
        if signer != grant.buyer:
            raise AuthorizationError(f"the authorisation is signed by {signer}, not the buyer {grant.buyer}")
        return grant
