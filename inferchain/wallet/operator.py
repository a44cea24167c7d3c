"""A node operator's transactions and balances: register, stake, unstake, withdraw, claim; each checked first.

Every action is planned before it is sent (`Plan`: what it will do, in words), pre-checked against chain state so
the common mistakes (no gas, too little INFER, below the minimum stake, nothing to unstake) fail with a plain
sentence instead of a revert, and every revert that still happens is explained by `explain`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from inferchain.wallet.chain import Chain
from inferchain.wallet.deployment import ONE_TOKEN
from inferchain.wallet.tx import TransactionFailed, send

#: Epochs scanned for claimable rewards (newest first); older rewards need `claim --epochs`.
MAX_EPOCH_SCAN = 500


class OperatorError(RuntimeError):
    """An operator action cannot succeed; the message says why in plain words."""


def parse_amount(text: str) -> int:
    """'100', '0.5', '1e3' INFER -> token wei. Raises OperatorError for anything else."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise OperatorError(f"not an amount of INFER: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise OperatorError(f"the amount must be a positive number of INFER, got {text!r}")
    wei = value * ONE_TOKEN
    if wei != wei.to_integral_value():
        raise OperatorError(f"{text} INFER has more than 18 decimals")
    return int(wei)


def fmt_token(wei: int) -> str:
    """Token wei as INFER, without trailing zeros: 1500000000000000000 -> '1.5'."""
    text = f"{Decimal(wei) / ONE_TOKEN:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_eth(wei: int) -> str:
    return fmt_token(wei)  # 18 decimals as well


_EXPLAIN: dict[str, Callable[[tuple[Any, ...]], str]] = {
    "NotRegistered": lambda a: "this wallet is not registered as a node: run `inferchain node register` first",
    "AlreadyRegistered": lambda a: "this wallet is already registered as a node",
    "InsufficientStake": lambda a: f"only {fmt_token(a[0])} INFER is staked; cannot unstake {fmt_token(a[1])}",
    "NothingToWithdraw": lambda a: "nothing is unbonding: run `inferchain node unstake` first",
    "UnbondingNotReady": lambda a: f"the unbonding stake becomes withdrawable at {_when(a[0])}",
    "NodeJailed": lambda a: f"the node is jailed until {_when(a[0])}",
    "NothingToClaim": lambda a: "there is nothing to claim",
    "ZeroAmount": lambda a: "the amount must be positive",
    "ReceiptAlreadySettled": lambda a: "the receipt was already settled",
    "ReceiptExpired": lambda a: "the receipt has expired and can no longer be settled",
    "InsufficientDeposit": lambda a: "the buyer's escrow deposit does not cover the receipt",
    "InvalidBuyerSignature": lambda a: "the buyer's countersignature does not match the receipt",
    "InvalidNodeSignature": lambda a: "the node's signature does not match the receipt",
    "SelfDealing": lambda a: "a node cannot be its own buyer",
    "ERC20InsufficientBalance": lambda a: f"the wallet holds {fmt_token(a[1])} INFER, {fmt_token(a[2])} needed",
    "ERC20InsufficientAllowance": lambda a: f"allowance {fmt_token(a[1])} INFER is below {fmt_token(a[2])}",
}


def _when(ts: int) -> str:
    left = int(ts) - int(time.time())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(ts)))
    return f"{stamp} (in {left} s)" if left > 0 else stamp


def explain(exc: BaseException) -> str:
    """One plain sentence for a failed transaction or an RPC problem."""
    if isinstance(exc, TransactionFailed) and exc.error in _EXPLAIN:
        try:
            return _EXPLAIN[exc.error](exc.error_args)
        except (IndexError, TypeError):
            return str(exc)
    text = str(exc)
    if "insufficient funds" in text.lower():
        return "the wallet has not enough ETH to pay for gas"
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Balances:
    address: str
    eth: int
    token: int
    registered: bool
    stake: int
    unbonding: int
    unbonding_ready_at: int
    jailed_until: int
    routable: bool
    min_stake: int
    escrow: int
    earnings: int
    rewards: int
    reward_epochs: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("eth", "token", "stake", "unbonding", "min_stake", "escrow", "earnings", "rewards"):
            out[k] = str(out[k])  # wei exceeds what JSON consumers hold exactly as numbers
        out["reward_epochs"] = {str(e): str(v) for e, v in self.reward_epochs.items()}
        return out


def claimable_rewards(chain: Chain, node: str, epochs: list[int] | None = None) -> dict[int, int]:
    """Ended epochs (newest MAX_EPOCH_SCAN unless given) with an unclaimed reward for `node`."""
    pool = chain.contracts.reward_pool
    node = Web3.to_checksum_address(node)
    if epochs is None:
        current = int(pool.functions.currentEpoch().call())
        epochs = list(range(max(0, current - MAX_EPOCH_SCAN), current))
    out: dict[int, int] = {}
    for e in epochs:
        if int(pool.functions.contributionOf(e, node).call()) == 0:
            continue
        amount = int(pool.functions.claimable(e, node).call())
        if amount:
            out[e] = amount
    return out


def balances(chain: Chain, address: str) -> Balances:
    address = Web3.to_checksum_address(address)
    info = chain.node_info(address)
    rewards = claimable_rewards(chain, address)
    return Balances(
        address=address,
        eth=int(chain.w3.eth.get_balance(address)),
        token=chain.token_balance(address),
        registered=bool(info["registered"]),
        stake=int(info["stake"]),
        unbonding=int(info["unbonding"]),
        unbonding_ready_at=int(info["unbonding_ready_at"]),
        jailed_until=int(info["jailed_until"]),
        routable=chain.is_routable(address),
        min_stake=int(chain.contracts.staking.functions.minStake().call()),
        escrow=chain.escrow_balance(address),
        earnings=chain.earnings(address),
        rewards=sum(rewards.values()),
        reward_epochs=rewards,
    )


@dataclass
class Outcome:
    """What a sent action did: transaction hashes and blocks, plus action-specific figures."""

    action: str
    txs: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def record(self, receipt: Any, what: str) -> None:
        self.txs.append(
            {
                "what": what,
                "tx": "0x" + bytes(receipt["transactionHash"]).hex(),
                "block": int(receipt["blockNumber"]),
                "gas": int(receipt["gasUsed"]),
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "txs": self.txs, **self.details}


@dataclass
class Plan:
    """An operator action, checked and described before anything is sent."""

    action: str
    description: str
    run: Callable[[], Outcome]


class WalletActor:
    """One wallet's transactions on one deployment: the plumbing operators and payers share."""

    def __init__(self, chain: Chain, account: LocalAccount) -> None:
        self.chain = chain
        self.account = account
        self.address = Web3.to_checksum_address(account.address)

    def _send(self, out: Outcome, call: Any, what: str) -> None:
        out.record(send(self.chain.w3, self.account, call, what=what), what)

    def _need_gas(self) -> None:
        if self.chain.w3.eth.get_balance(self.address) == 0:
            raise OperatorError(f"{self.address} has no ETH to pay for gas; fund it first")


class Operator(WalletActor):
    """One wallet's operator actions on one deployment."""

    def _info(self) -> dict[str, Any]:
        return self.chain.node_info(self.address)

    def plan_register(self, metadata_hash: bytes = bytes(32)) -> Plan:
        if self._info()["registered"]:
            raise OperatorError(f"{self.address} is already registered as a node")
        self._need_gas()

        def run() -> Outcome:
            out = Outcome("register")
            self._send(out, self.chain.contracts.staking.functions.register(metadata_hash), "register")
            return out

        return Plan("register", f"register {self.address} as a node on NodeStaking", run)

    def plan_stake(self, amount: int, allow_below_minimum: bool = False) -> Plan:
        info = self._info()
        if not info["registered"]:
            raise OperatorError("this wallet is not registered as a node: run `inferchain node register` first")
        balance = self.chain.token_balance(self.address)
        if amount > balance:
            raise OperatorError(
                f"insufficient INFER balance: {self.address} holds {fmt_token(balance)}, "
                f"staking needs {fmt_token(amount)}"
            )
        minimum = int(self.chain.contracts.staking.functions.minStake().call())
        total = int(info["stake"]) + amount
        if total < minimum and not allow_below_minimum:
            raise OperatorError(
                f"staking {fmt_token(amount)} INFER leaves {fmt_token(total)} staked, below the minimum of "
                f"{fmt_token(minimum)} INFER a node needs to be routable; stake at least "
                f"{fmt_token(minimum - int(info['stake']))}"
            )
        self._need_gas()
        staking = self.chain.contracts.staking

        def run() -> Outcome:
            out = Outcome("stake", details={"amount": str(amount)})
            token = self.chain.contracts.token
            self._send(out, token.functions.approve(staking.address, amount), "approve")
            self._send(out, staking.functions.stake(amount), "stake")
            out.details["stake"] = str(self._info()["stake"])
            return out

        return Plan(
            "stake",
            f"approve and stake {fmt_token(amount)} INFER from {self.address} (total stake {fmt_token(total)})",
            run,
        )

    def plan_unstake(self, amount: int | None = None) -> Plan:
        info = self._info()
        if not info["registered"]:
            raise OperatorError("this wallet is not registered as a node: run `inferchain node register` first")
        staked = int(info["stake"])
        if staked == 0:
            what = f" ({fmt_token(info['unbonding'])} INFER is already unbonding)" if info["unbonding"] else ""
            raise OperatorError(f"nothing is staked to unstake{what}")
        amount = staked if amount is None else amount
        if amount > staked:
            raise OperatorError(f"only {fmt_token(staked)} INFER is staked; cannot unstake {fmt_token(amount)}")
        self._need_gas()
        delay = int(self.chain.contracts.staking.functions.unbondingDelay().call())

        def run() -> Outcome:
            out = Outcome("unstake", details={"amount": str(amount)})
            self._send(out, self.chain.contracts.staking.functions.requestUnbond(amount), "requestUnbond")
            after = self._info()
            out.details.update(unbonding=str(after["unbonding"]), ready_at=int(after["unbonding_ready_at"]))
            return out

        restart = " (restarts the unbonding timer of what is already unbonding)" if info["unbonding"] else ""
        return Plan(
            "unstake",
            f"start unbonding {fmt_token(amount)} INFER; withdrawable after {delay} s{restart}",
            run,
        )

    def plan_withdraw(self) -> Plan:
        info = self._info()
        if int(info["unbonding"]) == 0:
            raise OperatorError("nothing is unbonding: run `inferchain node unstake` first")
        now = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        if now < int(info["unbonding_ready_at"]):
            raise OperatorError(
                f"{fmt_token(info['unbonding'])} INFER is unbonding; withdrawable in "
                f"{int(info['unbonding_ready_at']) - now} s"
            )
        if now < int(info["jailed_until"]):
            raise OperatorError(f"the node is jailed for another {int(info['jailed_until']) - now} s")
        self._need_gas()

        def run() -> Outcome:
            out = Outcome("withdraw", details={"amount": str(info["unbonding"])})
            self._send(out, self.chain.contracts.staking.functions.withdraw(), "withdraw")
            return out

        return Plan("withdraw", f"withdraw {fmt_token(info['unbonding'])} INFER of unbonded stake", run)

    def plan_claim(self) -> Plan:
        earnings = self.chain.earnings(self.address)
        rewards = claimable_rewards(self.chain, self.address)
        if not earnings and not rewards:
            raise OperatorError("there is nothing to claim: no settled earnings and no rewards of ended epochs")
        self._need_gas()
        parts = []
        if earnings:
            parts.append(f"{fmt_token(earnings)} INFER of settled earnings from the escrow")
        if rewards:
            parts.append(f"{fmt_token(sum(rewards.values()))} INFER of rewards for epochs {sorted(rewards)}")

        def run() -> Outcome:
            out = Outcome("claim", details={"earnings": str(earnings), "rewards": str(sum(rewards.values()))})
            before = self.chain.token_balance(self.address)
            if earnings:
                self._send(out, self.chain.contracts.escrow.functions.claimEarnings(), "claimEarnings")
            if rewards:
                self._send(out, self.chain.contracts.reward_pool.functions.claim(sorted(rewards)), "claim rewards")
            out.details["received"] = str(self.chain.token_balance(self.address) - before)
            return out

        return Plan("claim", "claim " + " and ".join(parts), run)
