"""Sending contract transactions from an unlocked node account or a local key, with decoded reverts."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi import decode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from inferchain.wallet.artifacts import CONTRACT_NAMES, load_artifact

#: Who sends a transaction: an address the RPC node holds unlocked (devnet, eth-tester) or a local key.
Sender = str | LocalAccount

RECEIPT_TIMEOUT_S = 60.0


class TransactionFailed(RuntimeError):
    """A transaction was rejected or reverted; `error` names the contract's custom error when known."""

    def __init__(self, message: str, *, error: str | None = None, args: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


def _signature(item: dict[str, Any]) -> str:
    def typ(inp: dict[str, Any]) -> str:
        if inp["type"].startswith("tuple"):
            return "(" + ",".join(typ(c) for c in inp["components"]) + ")" + inp["type"][5:]
        return str(inp["type"])

    return f"{item['name']}({','.join(typ(i) for i in item['inputs'])})"


@cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in CONTRACT_NAMES:
        for item in load_artifact(name).abi:
            if item.get("type") == "error":
                sig = _signature(item)
                table[keccak(text=sig)[:4]] = (item["name"], [i["type"] for i in item["inputs"]])
    return table


def decode_error(data: str | bytes | None) -> tuple[str, tuple[Any, ...]] | None:
    """(name, args) of an inferchain contract's custom error from revert data, or None if unknown."""
    if data is None:
        return None
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    entry = _error_table().get(raw[:4])
    if entry is None:
        return None
    name, types = entry
    try:
        values = decode(types, raw[4:])
    except Exception:  # malformed payload: still report the name
        return name, ()
    return name, tuple(
        to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True)
    )


def _revert_data(exc: BaseException) -> str | bytes | None:
    """Raw revert data from web3's error, or from the in-process tester's exception chain."""
    seen: BaseException | None = exc
    while seen is not None:
        for item in (getattr(seen, "data", None), *seen.args):
            if isinstance(item, dict):  # Hardhat: {"message": ..., "data": "0x..."}
                item = item.get("data")
            if isinstance(item, str) and item.startswith(("b'", 'b"')):  # eth-tester's eth_call: repr of the bytes
                with contextlib.suppress(ValueError, SyntaxError):
                    item = ast.literal_eval(item)
            if isinstance(item, str) and item.startswith("0x") and len(item) >= 10:
                return item
            if isinstance(item, bytes) and len(item) >= 4:  # eth-tester: raw revert bytes
                return item
        seen = seen.__cause__ or seen.__context__
    return None


def _is_revert(exc: BaseException) -> bool:
    if isinstance(exc, ContractLogicError):
        return True
    return type(exc).__name__ == "TransactionFailed" and type(exc).__module__.startswith("eth_tester")


def _revert(exc: BaseException, what: str) -> TransactionFailed:
    decoded = decode_error(_revert_data(exc))
    if decoded is not None:
        name, args = decoded
        shown = ", ".join(a.hex() if isinstance(a, bytes) else str(a) for a in args)
        return TransactionFailed(f"{what} reverted: {name}({shown})", error=name, args=args)
    return TransactionFailed(f"{what} reverted: {exc}")


def sender_address(sender: Sender) -> str:
    return sender if isinstance(sender, str) else str(sender.address)


@dataclass(frozen=True)
class SignedTx:
    """A transaction signed by a local key but maybe not sent yet: record it, then `broadcast` it (the same bytes
    sent again are the same transaction, so re-sending after a crash can never pay twice)."""

    hash: str
    raw: bytes
    sender: str
    nonce: int


def sign_call(w3: Web3, account: LocalAccount, call: Any, *, what: str | None = None, value: int = 0) -> SignedTx:
    """Builds and signs `call` at the sender's next (pending) nonce; gas estimation raises TransactionFailed,
    naming the contract's custom error, when the call would revert."""
    label = what or getattr(call, "fn_name", None) or "transaction"
    address = Web3.to_checksum_address(account.address)
    try:
        nonce = w3.eth.get_transaction_count(address, "pending")
        tx = call.build_transaction({"from": address, "value": value, "nonce": nonce, "chainId": w3.eth.chain_id})
    except Exception as exc:
        if not _is_revert(exc):
            raise
        raise _revert(exc, label) from exc
    signed = account.sign_transaction(tx)
    return SignedTx("0x" + bytes(signed.hash).hex(), bytes(signed.raw_transaction), address, int(nonce))


def broadcast(w3: Web3, tx: SignedTx) -> None:
    """Sends a signed transaction; one the node already holds (a re-send after a crash) is not an error."""
    try:
        w3.eth.send_raw_transaction(tx.raw)
    except Exception as exc:
        text = str(exc).lower()
        if "already known" in text or "already imported" in text or "known transaction" in text:
            return
        raise


def wait_mined(w3: Web3, tx_hash: Any, label: str, timeout_s: float = RECEIPT_TIMEOUT_S) -> Any:
    """The transaction's receipt once mined; TransactionFailed if it reverted."""
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
    if receipt["status"] != 1:
        shown = tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex()
        raise TransactionFailed(f"{label} reverted in block {receipt['blockNumber']} (tx {shown})")
    return receipt


def send(w3: Web3, sender: Sender, call: Any, *, what: str | None = None, value: int = 0) -> Any:
    """Sends `call` (a bound contract function or constructor) and waits for its receipt.

    Raises TransactionFailed, naming the contract's custom error, when the call would revert or reverted.
    """
    label = what or getattr(call, "fn_name", None) or "transaction"
    if not isinstance(sender, str):
        signed = sign_call(w3, sender, call, what=label, value=value)
        w3.eth.send_raw_transaction(signed.raw)
        return wait_mined(w3, signed.hash, label)
    try:
        tx_hash = call.transact({"from": Web3.to_checksum_address(sender), "value": value})
    except Exception as exc:
        if not _is_revert(exc):
            raise
        raise _revert(exc, label) from exc
    return wait_mined(w3, tx_hash, label)


def call_view(call: Any, *, what: str | None = None) -> Any:
    """Runs a view function, raising TransactionFailed with the decoded custom error if it reverts."""
    try:
        return call.call()
    except Exception as exc:
        if not _is_revert(exc):
            raise
        raise _revert(exc, what or str(getattr(call, "fn_name", "call"))) from exc


def signatures(items: Iterable[bytes]) -> list[bytes]:
    """Signature list for a `bytes[]` argument (copies, so callers may pass generators)."""
    return [bytes(s) for s in items]
