"""The browser-wallet countersigner: the client library's Buyer checks a node's receipt, the page's wallet signs the
EIP-712 typed data, and only a signature by the buyer itself comes back (a wrong, malformed or late one is refused
with InvalidReceipt, which the client records as the receipt's error)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from inferchain.marketplace.webui.wallet_signer import WalletSigner
from inferchain.wallet.buyer import Buyer, receipt_to_wire
from inferchain.wallet.receipts import InvalidReceipt, Receipt
from inferchain.wallet.typed_data import Domain

DOMAIN = Domain(31337, "0x" + "12" * 20)
SESSION = "0x" + "ab" * 32


def _receipt(buyer: str, node: LocalAccount) -> Receipt:
    return Receipt(
        session_id=bytes.fromhex(SESSION[2:]), buyer=buyer, node=node.address, model_id=b"\x01" * 32,
        span_start=0, span_end=10, tokens_in=5, tokens_out=3, price_per_1k=2 * 10**15,
        activation_commitment=b"\x02" * 32, expiry=int(time.time()) + 7200,
    )  # fmt: skip


def _countersign(signer: WalletSigner, receipt: Receipt, node: LocalAccount) -> bytes:
    buyer = Buyer(cast(LocalAccount, signer), DOMAIN, max_price_per_1k=10**16)
    signed = buyer.countersign(
        receipt_to_wire(receipt), receipt.sign(node, DOMAIN), session_id=SESSION, span=(0, 10), tokens=8
    )
    return signed.buyer_signature


class Page:
    """Stands in for the browser page: answers each signing request from another thread, as the page does over HTTP,
    with `reply(typed_data)` (None: never answers)."""

    def __init__(self, buyer: str, reply: Callable[[dict[str, Any]], str | None], timeout_s: float = 5.0) -> None:
        self.reply, self.asked = reply, []
        self.signer = WalletSigner(buyer, self.ask, timeout_s=timeout_s)

    def ask(self, request_id: str, typed_data: dict[str, Any]) -> None:
        self.asked.append(typed_data)
        answer = self.reply(typed_data)
        if answer is not None:
            threading.Thread(target=self.signer.answer, args=(request_id, answer)).start()


def _signs_with(account: LocalAccount) -> Callable[[dict[str, Any]], str]:
    return lambda typed: "0x" + bytes(account.sign_typed_data(full_message=typed).signature).hex()


def test_the_wallet_countersigns_and_the_signature_recovers_to_the_buyer() -> None:
    wallet, node = Account.create(), Account.create()
    page = Page(wallet.address, _signs_with(wallet))
    receipt = _receipt(wallet.address, node)
    signature = _countersign(page.signer, receipt, node)
    assert receipt.recover(signature, DOMAIN) == wallet.address
    (asked,) = page.asked
    assert asked["primaryType"] == "Receipt" and asked["domain"]["verifyingContract"] == DOMAIN.verifying_contract


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (_signs_with(Account.create()), "not the buyer"),
        (lambda _t: "0x1234", "unreadable wallet signature"),
        (lambda _t: None, "did not countersign within"),
    ],
)
def test_a_wrong_malformed_or_missing_signature_is_refused(reply: Callable, error: str) -> None:
    wallet, node = Account.create(), Account.create()
    page = Page(wallet.address, reply, timeout_s=0.3)
    with pytest.raises(InvalidReceipt, match=error):
        _countersign(page.signer, _receipt(wallet.address, node), node)


def test_a_receipt_the_buyer_would_refuse_never_reaches_the_wallet() -> None:
    wallet, node = Account.create(), Account.create()
    page = Page(wallet.address, _signs_with(wallet))
    with pytest.raises(InvalidReceipt, match="buyer"):
        _countersign(page.signer, _receipt(Account.create().address, node), node)  # names another buyer
    assert page.asked == []


def test_answers_to_unknown_or_finished_requests_are_refused() -> None:
    wallet = Account.create()
    page = Page(wallet.address, lambda _t: None)
    assert page.signer.answer("nope", "0x" + "00" * 65) is False
