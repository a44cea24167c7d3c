"""The EIP-712 `Offer`: the one Python definition of what a node advertises (and signs with its wallet key).

An offer says: node N serves layers [spanStart, spanEnd) of model M at `pricePer1k` token wei per 1000 tokens
per layer (the receipt's unit), at about `throughputMilli` / 1000 tokens per second, reachable at `multiaddrs`,
valid from `issuedAt` until `expiry`, and where its operator says it runs (`region`, free text such as "eu-west" or
"Frankfurt"; "" when not given). Signed in the NodeStaking contract's domain (offers are about staked
nodes), so any peer can check the signer is a registered, staked node of this deployment.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from inferchain.wallet.typed_data import EIP712_DOMAIN_TYPE, Domain

OFFER_FIELDS: list[dict[str, str]] = [
    {"name": "node", "type": "address"},
    {"name": "modelId", "type": "bytes32"},
    {"name": "spanStart", "type": "uint32"},
    {"name": "spanEnd", "type": "uint32"},
    {"name": "pricePer1k", "type": "uint256"},
    {"name": "throughputMilli", "type": "uint64"},
    {"name": "multiaddrs", "type": "string[]"},
    {"name": "issuedAt", "type": "uint64"},
    {"name": "expiry", "type": "uint64"},
    {"name": "region", "type": "string"},
]
OFFER_TYPE_STRING = "Offer(" + ",".join(f"{f['type']} {f['name']}" for f in OFFER_FIELDS) + ")"
MAX_MULTIADDRS = 16
MAX_REGION = 64
_REGION = re.compile(r"^[A-Za-z0-9 ._:/-]*$")
_MODEL_ID = re.compile(r"^sha256:([0-9a-f]{64})$")


class InvalidOffer(ValueError):
    """An offer is malformed, expired, or not signed by the node it names."""


def check_region(region: str) -> str:
    """`region` if it may go into an offer, else InvalidOffer saying why."""
    if not isinstance(region, str) or len(region) > MAX_REGION or not _REGION.match(region):
        raise InvalidOffer(f"region must be at most {MAX_REGION} letters, digits, spaces or ._:/- characters")
    return region


def model_id_bytes32(model_id: str) -> bytes:
    """The manifest's content hash ('sha256:<64 hex>') as the bytes32 receipts and offers carry."""
    match = _MODEL_ID.match(model_id)
    if not match:
        raise ValueError(f"model id must look like sha256:<64 hex digits>, got {model_id!r}")
    return bytes.fromhex(match.group(1))


def model_id_text(value: bytes) -> str:
    return "sha256:" + bytes(value).hex()


@dataclass(frozen=True)
class Offer:
    node: str
    model_id: bytes
    span_start: int
    span_end: int
    price_per_1k: int
    throughput_milli: int
    multiaddrs: tuple[str, ...]
    issued_at: int
    expiry: int
    region: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "node", to_checksum_address(self.node))
        except ValueError as exc:
            raise InvalidOffer(f"node is not an address: {self.node!r}") from exc
        if not isinstance(self.model_id, bytes | bytearray) or len(self.model_id) != 32:
            raise InvalidOffer("model_id must be 32 bytes")
        if not 0 <= self.span_start < self.span_end < 2**32:
            raise InvalidOffer(f"empty or reversed span [{self.span_start}, {self.span_end})")
        if not 0 <= self.price_per_1k < 2**256 or not 0 <= self.throughput_milli < 2**64:
            raise InvalidOffer("price or throughput out of range")
        if not 0 <= self.issued_at < self.expiry < 2**64:
            raise InvalidOffer(f"expiry {self.expiry} must come after issue time {self.issued_at}")
        object.__setattr__(self, "multiaddrs", tuple(self.multiaddrs))
        if not 0 < len(self.multiaddrs) <= MAX_MULTIADDRS or not all(
            isinstance(a, str) and a.startswith("/") and len(a) < 300 for a in self.multiaddrs
        ):
            raise InvalidOffer(f"an offer needs 1..{MAX_MULTIADDRS} multiaddrs")
        check_region(self.region)

    def message(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "modelId": bytes(self.model_id),
            "spanStart": self.span_start,
            "spanEnd": self.span_end,
            "pricePer1k": self.price_per_1k,
            "throughputMilli": self.throughput_milli,
            "multiaddrs": list(self.multiaddrs),
            "issuedAt": self.issued_at,
            "expiry": self.expiry,
            "region": self.region,
        }

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        return {
            "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Offer": OFFER_FIELDS},
            "primaryType": "Offer",
            "domain": domain.as_dict(),
            "message": self.message(),
        }

    def sign(self, account: LocalAccount, domain: Domain) -> SignedOffer:
        if to_checksum_address(account.address) != self.node:
            raise InvalidOffer(f"{account.address} cannot sign an offer for node {self.node}")
        signed = account.sign_typed_data(full_message=self.typed_data(domain))
        return SignedOffer(self, bytes(signed.signature))


@dataclass(frozen=True)
class SignedOffer:
    offer: Offer
    signature: bytes

    def signer(self, domain: Domain) -> str:
        signable = encode_typed_data(full_message=self.offer.typed_data(domain))
        try:
            return str(Account.recover_message(signable, signature=self.signature))
        except Exception as exc:  # malformed signatures raise several types
            raise InvalidOffer(f"unreadable offer signature: {exc}") from None

    def verify(self, domain: Domain, now: float | None = None) -> None:
        """Raises InvalidOffer unless the named node signed this offer in `domain` and it has not expired.

        Whether the node is registered and staked is a chain question: ask `Chain.is_routable(offer.node)`.
        """
        now = time.time() if now is None else now
        if self.offer.expiry <= now:
            raise InvalidOffer(f"offer of {self.offer.node} expired at {self.offer.expiry}")
        if self.offer.issued_at > now + 300:
            raise InvalidOffer(f"offer of {self.offer.node} is issued in the future ({self.offer.issued_at})")
        signer = self.signer(domain)
        if signer != self.offer.node:
            raise InvalidOffer(f"offer for node {self.offer.node} is signed by {signer}")

    def to_json(self) -> dict[str, Any]:
        o = self.offer
        return {
            "node": o.node,
            "model_id": model_id_text(o.model_id),
            "span": [o.span_start, o.span_end],
            "price_per_1k": str(o.price_per_1k),
            "throughput_milli": o.throughput_milli,
            "multiaddrs": list(o.multiaddrs),
            "issued_at": o.issued_at,
            "expiry": o.expiry,
            "region": o.region,
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedOffer:
        try:
            offer = Offer(
                node=data["node"],
                model_id=model_id_bytes32(data["model_id"]),
                span_start=int(data["span"][0]),
                span_end=int(data["span"][1]),
                price_per_1k=int(data["price_per_1k"]),
                throughput_milli=int(data["throughput_milli"]),
                multiaddrs=tuple(data["multiaddrs"]),
                issued_at=int(data["issued_at"]),
                expiry=int(data["expiry"]),
                region=str(data.get("region", "")),
            )
            return cls(offer, bytes.fromhex(str(data["signature"]).removeprefix("0x")))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidOffer):
                raise
            raise InvalidOffer(f"malformed offer: {exc}") from None
