"""The EIP-712 `Receipt`: the one Python definition of what nodes sign and buyers countersign.

It must stay identical, field for field, to `struct Receipt` in contracts/libraries/Receipts.sol, which the
PaymentEscrow verifies; tests compare the digest computed here with the contract's `receiptDigest`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from inferchain.wallet.typed_data import EIP712_DOMAIN_TYPE, Domain

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

#: Field names and Solidity types, in signing order.
RECEIPT_FIELDS: list[dict[str, str]] = [
    {"name": "sessionId", "type": "bytes32"},
    {"name": "buyer", "type": "address"},
    {"name": "node", "type": "address"},
    {"name": "modelId", "type": "bytes32"},
    {"name": "spanStart", "type": "uint32"},
    {"name": "spanEnd", "type": "uint32"},
    {"name": "tokensIn", "type": "uint64"},
    {"name": "tokensOut", "type": "uint64"},
    {"name": "pricePer1k", "type": "uint256"},
    {"name": "activationCommitment", "type": "bytes32"},
    {"name": "expiry", "type": "uint64"},
]

RECEIPT_TYPE_STRING = "Receipt(" + ",".join(f"{f['type']} {f['name']}" for f in RECEIPT_FIELDS) + ")"
RECEIPT_TYPEHASH = keccak(text=RECEIPT_TYPE_STRING)


class InvalidReceipt(ValueError):
    """A receipt field is out of range or malformed."""


def _bytes32(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise InvalidReceipt(f"{name} must be 32 bytes, got {value!r}")
    return bytes(value)


@dataclass(frozen=True)
class Receipt:
    """A node's statement of the work it served for one session (see contracts/libraries/Receipts.sol).

    Amount owed: (tokens_in + tokens_out) x (span_end - span_start) x price_per_1k // 1000 token wei.
    """

    session_id: bytes
    buyer: str
    node: str
    model_id: bytes
    span_start: int
    span_end: int
    tokens_in: int
    tokens_out: int
    price_per_1k: int
    activation_commitment: bytes
    expiry: int

    def __post_init__(self) -> None:
        for name in ("session_id", "model_id", "activation_commitment"):
            object.__setattr__(self, name, _bytes32(name, getattr(self, name)))
        for name in ("buyer", "node"):
            try:
                object.__setattr__(self, name, to_checksum_address(getattr(self, name)))
            except ValueError as exc:
                raise InvalidReceipt(f"{name} is not an address: {getattr(self, name)!r}") from exc
        for name, top in (
            ("span_start", UINT32_MAX),
            ("span_end", UINT32_MAX),
            ("tokens_in", UINT64_MAX),
            ("tokens_out", UINT64_MAX),
            ("expiry", UINT64_MAX),
            ("price_per_1k", 2**256 - 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise InvalidReceipt(f"{name} must be an integer in [0, {top}], got {value!r}")
        if self.span_end <= self.span_start:
            raise InvalidReceipt(f"empty or reversed span [{self.span_start}, {self.span_end})")

    # -- amounts -------------------------------------------------------------------------------------------

    @property
    def layers(self) -> int:
        return self.span_end - self.span_start

    @property
    def contribution(self) -> int:
        """Tokens x layers: the unit the reward pool shares rewards by."""
        return (self.tokens_in + self.tokens_out) * self.layers

    @property
    def amount_owed(self) -> int:
        """What settling this receipt takes from the buyer's deposit, in token wei."""
        return self.contribution * self.price_per_1k // 1000

    @property
    def key(self) -> bytes:
        """Replay-protection key: keccak256(abi.encode(sessionId, node, spanStart, spanEnd))."""
        from eth_abi import encode

        return keccak(
            encode(
                ["bytes32", "address", "uint32", "uint32"],
                [self.session_id, self.node, self.span_start, self.span_end],
            )
        )

    # -- EIP-712 -------------------------------------------------------------------------------------------

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (Solidity field names)."""
        return {
            "sessionId": self.session_id,
            "buyer": self.buyer,
            "node": self.node,
            "modelId": self.model_id,
            "spanStart": self.span_start,
            "spanEnd": self.span_end,
            "tokensIn": self.tokens_in,
            "tokensOut": self.tokens_out,
            "pricePer1k": self.price_per_1k,
            "activationCommitment": self.activation_commitment,
            "expiry": self.expiry,
        }

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """Full EIP-712 typed data (what a browser wallet's eth_signTypedData_v4 receives)."""
        return {
            "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Receipt": RECEIPT_FIELDS},
            "primaryType": "Receipt",
            "domain": domain.as_dict(),
            "message": self.message(),
        }

    def digest(self, domain: Domain) -> bytes:
        """The 32-byte EIP-712 hash that is signed (equals PaymentEscrow.receiptDigest)."""
        signable = encode_typed_data(full_message=self.typed_data(domain))
        return keccak(b"\x19" + signable.version + signable.header + signable.body)

    def sign(self, account: LocalAccount, domain: Domain) -> bytes:
        """65-byte signature (r || s || v) of this receipt by `account`."""
        signed = account.sign_typed_data(full_message=self.typed_data(domain))
        return bytes(signed.signature)

    def recover(self, signature: bytes, domain: Domain) -> str:
        """Address that produced `signature` over this receipt in `domain`."""
        signable = encode_typed_data(full_message=self.typed_data(domain))
        return str(Account.recover_message(signable, signature=signature))

    def as_tuple(self) -> tuple[Any, ...]:
        """Positional form for contract calls taking a `Receipt` struct."""
        return tuple(self.message().values())

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (bytes as 0x-hex) for persistence; see `from_json`."""
        out = asdict(self)
        for name in ("session_id", "model_id", "activation_commitment"):
            out[name] = "0x" + out[name].hex()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Receipt:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidReceipt(f"unknown receipt fields: {sorted(unknown)}")
        values = dict(data)
        for name in ("session_id", "model_id", "activation_commitment"):
            raw = values.get(name)
            if isinstance(raw, str):
                values[name] = bytes.fromhex(raw.removeprefix("0x"))
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidReceipt(str(exc)) from exc


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt with the node's signature and the buyer's (or its authorised signer's) countersignature."""

    receipt: Receipt
    node_signature: bytes
    buyer_signature: bytes

    def check(self, domain: Domain, buyer_signer: str | None = None) -> None:
        """Raises InvalidReceipt unless the node signed and the buyer (or `buyer_signer`) countersigned."""
        node = self.receipt.recover(self.node_signature, domain)
        if node != self.receipt.node:
            raise InvalidReceipt(f"node signature is by {node}, not the receipt's node {self.receipt.node}")
        expected = to_checksum_address(buyer_signer) if buyer_signer else self.receipt.buyer
        signer = self.receipt.recover(self.buyer_signature, domain)
        if signer != expected:
            raise InvalidReceipt(f"countersignature is by {signer}, expected {expected}")
