"""A payer's escrow actions (buyers and resellers): deposit, delayed withdrawal, and authorising another key
(a market's gateway key, a browser session key) to countersign receipts paid from this deposit.

Like the operator's actions, each is a `Plan` checked against chain state first, so the usual mistakes (no gas,
too little INFER, nothing to withdraw, a withdrawal that is not ready yet) fail with a plain sentence.
"""

from __future__ import annotations

import time
from typing import Any

from web3 import Web3

from inferchain.wallet.chain import Chain
from inferchain.wallet.operator import OperatorError, Outcome, Plan, WalletActor, fmt_token


class PayerError(OperatorError):
    """A payer action cannot succeed; the message says why in plain words."""


def escrow_status(chain: Chain, address: str) -> dict[str, Any]:
    """A payer's INFER, escrow deposit and pending withdrawal (token wei as text); reads only."""
    escrow = chain.contracts.escrow
    address = Web3.to_checksum_address(address)
    amount, available_at = escrow.functions.withdrawals(address).call()
    return {
        "address": address,
        "infer": str(chain.token_balance(address)),
        "escrow": str(chain.escrow_balance(address)),
        "withdrawal": {"amount": str(amount), "available_at": int(available_at)} if amount else None,
        "withdraw_delay_s": int(escrow.functions.withdrawDelay().call()),
    }


class Payer(WalletActor):
    """One wallet's escrow actions on one deployment."""

    def status(self) -> dict[str, Any]:
        return escrow_status(self.chain, self.address)

    def is_authorized(self, signer: str) -> bool:
        fn = self.chain.contracts.escrow.functions.isAuthorizedSigner(self.address, Web3.to_checksum_address(signer))
        return bool(fn.call())

    def plan_deposit(self, amount: int) -> Plan:
        if amount <= 0:
            raise PayerError("deposit a positive amount of INFER")
        balance = self.chain.token_balance(self.address)
        if amount > balance:
            raise PayerError(
                f"insufficient INFER balance: {self.address} holds {fmt_token(balance)}, the deposit needs "
                f"{fmt_token(amount)}"
            )
        self._need_gas()
        escrow = self.chain.contracts.escrow

        def run() -> Outcome:
            out = Outcome("deposit", details={"amount": str(amount)})
            token = self.chain.contracts.token
            allowance = int(token.functions.allowance(self.address, escrow.address).call())
            if allowance < amount:
                self._send(out, token.functions.approve(escrow.address, amount), "approve")
            self._send(out, escrow.functions.deposit(amount), "deposit")
            out.details["escrow"] = str(self.chain.escrow_balance(self.address))
            return out

        return Plan("deposit", f"approve and deposit {fmt_token(amount)} INFER into the escrow for {self.address}", run)

    def plan_request_withdrawal(self, amount: int | None) -> Plan:
        balance = self.chain.escrow_balance(self.address)
        amount = balance if amount is None else amount
        if amount <= 0 or amount > balance:
            raise PayerError(f"the escrow holds {fmt_token(balance)} INFER for {self.address}: nothing to withdraw"
                             if balance == 0 else f"ask for between 0 and {fmt_token(balance)} INFER")  # fmt: skip
        self._need_gas()
        delay = int(self.chain.contracts.escrow.functions.withdrawDelay().call())

        def run() -> Outcome:
            out = Outcome("request-withdrawal", details={"amount": str(amount)})
            self._send(out, self.chain.contracts.escrow.functions.requestWithdrawal(amount), "requestWithdrawal")
            out.details["available_at"] = int(self.chain.contracts.escrow.functions.withdrawals(self.address).call()[1])
            return out

        return Plan(
            "request-withdrawal",
            f"ask to withdraw {fmt_token(amount)} INFER from the escrow (possible after {delay} s; the deposit keeps "
            "paying receipts until then)",
            run,
        )

    def plan_withdraw(self) -> Plan:
        amount, available_at = self.chain.contracts.escrow.functions.withdrawals(self.address).call()
        if not amount:
            raise PayerError("no withdrawal pending: ask first with `inferchain escrow request-withdrawal`")
        now = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        if now < available_at:
            raise PayerError(
                f"the withdrawal of {fmt_token(int(amount))} INFER is possible in {available_at - now} s "
                f"(at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(available_at))})"
            )
        self._need_gas()

        def run() -> Outcome:
            out = Outcome("withdraw")
            before = self.chain.token_balance(self.address)
            self._send(out, self.chain.contracts.escrow.functions.withdraw(), "withdraw")
            out.details["amount"] = str(self.chain.token_balance(self.address) - before)
            return out

        return Plan("withdraw", f"withdraw up to {fmt_token(int(amount))} INFER from the escrow", run)

    def plan_authorize(self, signer: str, authorized: bool = True) -> Plan:
        if not Web3.is_address(signer):
            raise PayerError(f"not an address: {signer!r}")
        signer = Web3.to_checksum_address(signer)
        if self.is_authorized(signer) == authorized:
            raise PayerError(f"{signer} is already {'authorised' if authorized else 'not authorised'}")
        self._need_gas()

        def run() -> Outcome:
            out = Outcome("authorize", details={"signer": signer, "authorized": authorized})
            fn = self.chain.contracts.escrow.functions.setSignerAuthorization(signer, authorized)
            self._send(out, fn, "setSignerAuthorization")
            return out

        verb = "allow" if authorized else "stop"
        return Plan("authorize", f"{verb} {signer} to countersign receipts paid from {self.address}'s deposit", run)
