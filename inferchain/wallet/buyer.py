"""The buyer's side of a receipt: check what a node signed at session close, then countersign it.

A buyer countersigns only a receipt that names itself as buyer, the session and span it opened, exactly the
tokens it sent through that span, a price within its limit, an expiry it accepts, and that the node really
signed in the escrow's domain. Anything else is refused (and the node's receipt stays unsettleable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from inferchain.wallet.receipts import InvalidReceipt, Receipt, SignedReceipt
from inferchain.wallet.typed_data import Domain

MIN_EXPIRY_S = 3600  # a receipt must stay settleable at least this long


def receipt_from_wire(data: dict[str, Any]) -> Receipt:
    """A receipt as carried in `closed` (Receipt.to_json with the uint256 price as text)."""
    values = dict(data)
    values["price_per_1k"] = int(values.get("price_per_1k", -1))
    return Receipt.from_json(values)


def receipt_to_wire(receipt: Receipt) -> dict[str, Any]:
    data = receipt.to_json()
    data["price_per_1k"] = str(data["price_per_1k"])  # msgpack integers stop at 2**64
    return data


@dataclass
class Buyer:
    """A buyer key (or a key the buyer authorised on the escrow) that countersigns receipts."""

    account: LocalAccount
    domain: Domain
    max_price_per_1k: int
    buyer: str | None = None  # the depositor, when `account` is only its authorised signer

    @property
    def address(self) -> str:
        return self.buyer or str(self.account.address)

    def countersign(
        self, data: dict[str, Any], node_signature: bytes, *, session_id: str, span: tuple[int, int], tokens: int
    ) -> SignedReceipt:
        """Checks a node's receipt against what this buyer saw; returns it countersigned or raises InvalidReceipt."""
        receipt = receipt_from_wire(data)
        problems = []
        if receipt.buyer.lower() != self.address.lower():
            problems.append(f"buyer {receipt.buyer} is not {self.address}")
        if "0x" + receipt.session_id.hex() != session_id.lower():
            problems.append("another session id")
        if (receipt.span_start, receipt.span_end) != span:
            problems.append(f"span {receipt.span_start}:{receipt.span_end} instead of {span[0]}:{span[1]}")
        if receipt.tokens_in + receipt.tokens_out != tokens:
            problems.append(f"{receipt.tokens_in + receipt.tokens_out} tokens billed, {tokens} sent")
        if receipt.price_per_1k > self.max_price_per_1k:
            problems.append(f"price {receipt.price_per_1k} above the limit {self.max_price_per_1k}")
        if receipt.expiry < time.time() + MIN_EXPIRY_S:
            problems.append(f"expiry {receipt.expiry} too soon")
        if problems:
            raise InvalidReceipt("refusing to countersign: " + "; ".join(problems))
        signer = receipt.recover(node_signature, self.domain)
        if signer != receipt.node:
            raise InvalidReceipt(f"refusing to countersign: node signature is by {signer}, not {receipt.node}")
        return SignedReceipt(receipt, node_signature, receipt.sign(self.account, self.domain))
