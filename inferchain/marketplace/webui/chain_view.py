"""What the pages read from the chain beyond the wallet's own calls: settlements (with transaction hashes) from the
escrow's `ReceiptSettled` events, a node's standing, earnings and claimable epoch rewards."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from web3 import Web3

from inferchain.wallet.chain import Chain

MAX_CACHED_BLOCKS = 4096


class ChainView:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._times: OrderedDict[int, int] = OrderedDict()  # block number -> timestamp (blocks never change here)
        self._lock = threading.Lock()

    @property
    def from_block(self) -> int:
        return self.chain.deployment.block

    def block_time(self, number: int) -> int:
        with self._lock:
            if number in self._times:
                self._times.move_to_end(number)
                return self._times[number]
        t = int(self.chain.w3.eth.get_block(number)["timestamp"])
        with self._lock:
            self._times[number] = t
            while len(self._times) > MAX_CACHED_BLOCKS:
                self._times.popitem(last=False)
        return t

    def settlements(self, **filters: str) -> list[dict[str, Any]]:
        """`ReceiptSettled` events (by `key`, `buyer` or `node`), oldest first, with time and transaction hash."""
        event = self.chain.contracts.escrow.events.ReceiptSettled
        logs = event.get_logs(argument_filters=filters, from_block=self.from_block)
        return [
            {
                "key": "0x" + bytes(log["args"]["key"]).hex(),
                "buyer": log["args"]["buyer"],
                "node": log["args"]["node"],
                "amount": str(log["args"]["amount"]),
                "fee": str(log["args"]["fee"]),
                "tx": "0x" + bytes(log["transactionHash"]).hex(),
                "block": int(log["blockNumber"]),
                "time": self.block_time(int(log["blockNumber"])),
            }
            for log in logs
        ]

    def settled_by_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The settlement event of each of `keys` that was settled (one log query per key: keys are indexed)."""
        out: dict[str, dict[str, Any]] = {}
        for key in keys:
            found = self.settlements(key=key)
            if found:
                out[key] = found[0]
        return out

    def operator(self, node: str) -> dict[str, Any]:
        node = Web3.to_checksum_address(node)
        info = self.chain.node_info(node)
        pool = self.chain.contracts.reward_pool
        epochs = sorted(
            {int(log["args"]["epoch"]) for log in pool.events.ContributionRecorded.get_logs(
                argument_filters={"node": node}, from_block=self.from_block)}
        )  # fmt: skip
        rewards = [{"epoch": e, "amount": str(pool.functions.claimable(e, node).call())} for e in epochs]
        return {
            "address": node,
            "registered": bool(info["registered"]),
            "stake": str(info["stake"]),
            "unbonding": str(info["unbonding"]),
            "jailed_until": int(info["jailed_until"]),
            "slashed": bool(info["slashed"]),
            "routable": self.chain.is_routable(node),
            "earnings": str(self.chain.earnings(node)),
            "current_epoch": int(pool.functions.currentEpoch().call()),
            "rewards": rewards,
        }

    def stakes(self, wallets: set[str]) -> dict[str, str]:
        return {w: str(self.chain.node_info(w)["stake"]) for w in wallets}
