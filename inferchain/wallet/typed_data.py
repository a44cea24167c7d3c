"""EIP-712 domains shared by every signed inferchain message (receipts, verdicts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

#: Domain name and version of every inferchain contract that verifies signatures.
DOMAIN_NAME = "inferchain"
DOMAIN_VERSION = "1"


@dataclass(frozen=True)
class Domain:
    """EIP-712 domain: which chain and which contract a signature is valid for.

    Receipts are signed for the PaymentEscrow; verdicts for the NodeStaking contract.
    """

    chain_id: int
    verifying_contract: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
