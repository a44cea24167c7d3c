"""Countersigning receipts in the buyer's browser wallet.

The client library countersigns each node's receipt at session close through `Buyer.countersign`, which checks the
receipt and then calls `account.sign_typed_data(full_message=...)`. `WalletSigner` is that account for a browser
wallet: it hands the EIP-712 typed data to the page (an event on the chat's stream), waits, bounded, for the page to
post the wallet's `eth_signTypedData_v4` signature, checks that the signature recovers to the buyer, and returns it.
No key is held here.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from inferchain.wallet.receipts import InvalidReceipt

# The node waits 30 s for a countersignature (inferchain/node/server.py); the wallet must answer before that.
SIGN_TIMEOUT_S = 25.0


@dataclass(frozen=True)
class SignedTypedData:
    signature: bytes


class WalletSigner:
    """An eth-account-like signer whose `sign_typed_data` is answered by the buyer's browser wallet."""

    def __init__(self, address: str, ask: Callable[[str, dict[str, Any]], None], timeout_s: float = SIGN_TIMEOUT_S):
        """`ask(request_id, typed_data)` tells the page to sign (an event on the chat stream)."""
        self.address = to_checksum_address(address)
        self._ask, self.timeout_s = ask, timeout_s
        self._answers: dict[str, queue.Queue[str]] = {}
        self._lock = threading.Lock()

    def sign_typed_data(self, full_message: dict[str, Any]) -> SignedTypedData:
        request_id = secrets.token_hex(8)
        box: queue.Queue[str] = queue.Queue(maxsize=1)
        with self._lock:
            self._answers[request_id] = box
        try:
            self._ask(request_id, full_message)
            try:
                answer = box.get(timeout=self.timeout_s)
            except queue.Empty:
                raise InvalidReceipt(f"the wallet did not countersign within {self.timeout_s:.0f} s") from None
        finally:
            with self._lock:
                self._answers.pop(request_id, None)
        try:
            signature = bytes.fromhex(answer.removeprefix("0x"))
            signer = Account.recover_message(encode_typed_data(full_message=full_message), signature=signature)
        except Exception as e:  # malformed hex or signature bytes from the page
            raise InvalidReceipt(f"unreadable wallet signature: {e}") from None
        if signer != self.address:
            raise InvalidReceipt(f"the countersignature is by {signer}, not the buyer {self.address}")
        return SignedTypedData(signature)

    def answer(self, request_id: str, signature: str) -> bool:
        """The page's answer to a request; False when no such request is waiting (unknown, answered, timed out)."""
        with self._lock:
            box = self._answers.get(request_id)
        if box is None:
            return False
        try:
            box.put_nowait(signature)
        except queue.Full:
            return False
        return True
