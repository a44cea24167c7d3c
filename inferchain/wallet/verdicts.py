"""The EIP-712 `Verdict` a validator signs about one session a node served.

Identical to `struct Verdict` in contracts/NodeStaking.sol (domain: the NodeStaking contract). A quorum of
distinct validators signing the same guilty verdict slashes the node; `NodeStaking.slashByVerdicts` wants the
signatures ordered by ascending signer address, which `order_signatures` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from inferchain.wallet.typed_data import EIP712_DOMAIN_TYPE, Domain

VERDICT_FIELDS: list[dict[str, str]] = [
    {"name": "node", "type": "address"},
    {"name": "sessionId", "type": "bytes32"},
    {"name": "guilty", "type": "bool"},
    {"name": "evidenceHash", "type": "bytes32"},
    {"name": "deadline", "type": "uint64"},
]


@dataclass(frozen=True)
class Verdict:
    """A validator's judgement: did `node` serve session `session_id` honestly?"""

    node: str
    session_id: bytes
    guilty: bool
    evidence_hash: bytes
    deadline: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "node", to_checksum_address(self.node))
        for name in ("session_id", "evidence_hash"):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray) or len(value) != 32:
                raise ValueError(f"{name} must be 32 bytes, got {value!r}")
        if not 0 <= self.deadline < 2**64:
            raise ValueError(f"deadline out of uint64 range: {self.deadline}")

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        return {
            "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Verdict": VERDICT_FIELDS},
            "primaryType": "Verdict",
            "domain": domain.as_dict(),
            "message": {
                "node": self.node,
                "sessionId": bytes(self.session_id),
                "guilty": self.guilty,
                "evidenceHash": bytes(self.evidence_hash),
                "deadline": self.deadline,
            },
        }

    def digest(self, domain: Domain) -> bytes:
        signable = encode_typed_data(full_message=self.typed_data(domain))
        return keccak(b"\x19" + signable.version + signable.header + signable.body)

    def sign(self, account: LocalAccount, domain: Domain) -> bytes:
        return bytes(account.sign_typed_data(full_message=self.typed_data(domain)).signature)

    def recover(self, signature: bytes, domain: Domain) -> str:
        signable = encode_typed_data(full_message=self.typed_data(domain))
        return str(Account.recover_message(signable, signature=signature))

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.node, bytes(self.session_id), self.guilty, bytes(self.evidence_hash), self.deadline)


def order_signatures(verdict: Verdict, signatures: list[bytes], domain: Domain) -> list[bytes]:
    """`signatures` sorted by ascending signer address, as `slashByVerdicts` requires."""
    return sorted(signatures, key=lambda sig: int(verdict.recover(sig, domain), 16))
