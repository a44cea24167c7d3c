"""The node's receipt store, its paid-session rules, and signed offers (no chain needed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from eth_account import Account

from inferchain.node.receipts import DuplicateReceipt, ReceiptSigner, ReceiptStore, SessionBilling
from inferchain.wallet.offers import InvalidOffer, Offer, SignedOffer, model_id_bytes32
from inferchain.wallet.receipts import InvalidReceipt
from inferchain.wallet.typed_data import Domain
from inferchain.wire.errors import ErrorCode, WireError

NODE = Account.from_key("0x" + "11" * 32)
BUYER = Account.from_key("0x" + "22" * 32)
DOMAIN = Domain(31337, "0x" + "44" * 20)
MODEL = "sha256:" + "ab" * 32
SID = "0x" + "01" * 32


def signer(tmp_path: Path, price: int = 1000) -> ReceiptSigner:
    return ReceiptSigner(ReceiptStore(tmp_path), NODE, DOMAIN, price, ttl_s=86400)


def test_sign_store_countersign_and_refuse_a_second_receipt(tmp_path: Path) -> None:
    s = signer(tmp_path)
    billing = SessionBilling(s, model_id_bytes32(MODEL))
    paid = billing.begin(SID, BUYER.address, "1000", 0, 10)
    paid.observe(5, b"out-1")
    paid.observe(6, b"out-2")
    stored = billing.close(paid, 6)
    assert stored.state == "signed" and stored.receipt.tokens_in == 5 and stored.receipt.tokens_out == 1
    assert stored.receipt.recover(stored.node_signature, DOMAIN) == NODE.address
    with pytest.raises(WireError, match="use a new session id"):
        billing.begin(SID, BUYER.address, "1000", 0, 10)  # in flight on another stream
    billing.end(paid)
    with pytest.raises(WireError, match="use a new session id"):
        billing.begin(SID, BUYER.address, "1000", 0, 10)  # already signed: would be equivocation
    with pytest.raises(DuplicateReceipt):
        s.sign(stored.receipt.session_id, BUYER.address, stored.receipt.model_id, (0, 10), 1, 1, b"\0" * 32)

    with pytest.raises(InvalidReceipt, match="countersignature is by"):
        s.countersigned(stored.key, stored.receipt.sign(NODE, DOMAIN))  # not the buyer
    done = s.countersigned(stored.key, stored.receipt.sign(BUYER, DOMAIN))
    assert done.state == "countersigned" and done.signed.buyer_signature
    assert s.store.summary()["by_state"] == {"countersigned": 1}

    s.store.mark_settled([stored.key], "0x" + "aa" * 32, 7)
    s.store.mark_failed(stored.key, "late", permanent=True)  # never demotes a settled receipt
    again = ReceiptStore(tmp_path).get(stored.key)
    assert again.state == "settled" and again.settled_block == 7 and again.to_json()["amount"] == str(
        stored.receipt.amount_owed
    )


@pytest.mark.parametrize(
    ("buyer", "price", "sid", "code", "text"),
    [
        (None, None, SID, ErrorCode.UNAUTHORIZED, "paid sessions only"),
        (BUYER.address, "999", SID, ErrorCode.UNAUTHORIZED, "above your limit"),
        ("not-an-address", "1000", SID, ErrorCode.BAD_MESSAGE, "must be an address"),
        (BUYER.address, "1000", "session-1", ErrorCode.BAD_MESSAGE, "64 hex digits"),
        (NODE.address, "1000", SID, ErrorCode.BAD_MESSAGE, "to itself"),
    ],
)
def test_paid_open_refusals(tmp_path: Path, buyer, price, sid, code, text) -> None:  # type: ignore[no-untyped-def]
    billing = SessionBilling(signer(tmp_path), model_id_bytes32(MODEL))
    with pytest.raises(WireError, match=text) as caught:
        billing.begin(sid, buyer, price, 0, 10)
    assert caught.value.code == code


def test_acknowledged_receipts_survive_sigkill(tmp_path: Path) -> None:
    """A process signs receipts and prints each key only after `sign` returned (= acknowledged), then is
    SIGKILLed mid-stream; every printed key must be in the store afterwards."""
    script = textwrap.dedent(
        f"""
        import sys, os
        from pathlib import Path
        from eth_account import Account
        from inferchain.node.receipts import ReceiptSigner, ReceiptStore
        from inferchain.wallet.typed_data import Domain
        s = ReceiptSigner(ReceiptStore(Path({str(tmp_path)!r})), Account.from_key("0x" + "11" * 32),
                          Domain(31337, "0x" + "44" * 20), 1000, 86400)
        buyer = Account.from_key("0x" + "22" * 32).address
        for i in range(100000):
            stored = s.sign(i.to_bytes(32, "big"), buyer, b"\\1" * 32, (0, 10), 3, 4, b"\\2" * 32)
            print(stored.key, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(acked) < 20 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(acked) >= 20
    store = ReceiptStore(tmp_path)
    assert all(store.has(key) for key in acked)
    assert all(r.state == "signed" for r in store.list())


def test_offer_sign_verify_expiry_and_tampering() -> None:
    now = int(time.time())
    offer = Offer(NODE.address, model_id_bytes32(MODEL), 0, 10, 1000, 25_000, ("/ip4/127.0.0.1/tcp/1/p2p/x",), now,
                  now + 600)  # fmt: skip
    signed = offer.sign(NODE, DOMAIN)
    signed.verify(DOMAIN)
    again = SignedOffer.from_json(signed.to_json())
    assert again == signed
    again.verify(DOMAIN)
    with pytest.raises(InvalidOffer, match="expired"):
        signed.verify(DOMAIN, now=now + 601)
    with pytest.raises(InvalidOffer, match="signed by"):
        signed.verify(Domain(1, DOMAIN.verifying_contract))  # another chain
    forged = SignedOffer.from_json({**signed.to_json(), "price_per_1k": "1"})
    with pytest.raises(InvalidOffer, match="signed by"):
        forged.verify(DOMAIN)
    with pytest.raises(InvalidOffer, match="cannot sign"):
        offer.sign(BUYER, DOMAIN)
    with pytest.raises(InvalidOffer, match="malformed"):
        SignedOffer.from_json({"node": NODE.address})
    with pytest.raises(ValueError, match="sha256"):
        model_id_bytes32("md5:abc")
