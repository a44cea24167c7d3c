"""What the pages read from the chain beyond the wallet's own calls: settlements (with transaction hashes) from the
escrow's `ReceiptSettled` events, a node's standing, earnings and claimable epoch rewards. Receipt lookups and
reward amounts reuse the wallet room's `find_settled` and `claimable_rewards`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from web3 import Web3

from inferchain.wallet.chain import Chain
from inferchain.wallet.operator import claimable_rewards
from inferchain.wallet.settlement import find_settled

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

    def node_settlements(self, node: str) -> list[dict[str, Any]]:
        """The escrow's `ReceiptSettled` events paying `node`, oldest first, with time and transaction hash."""
        event = self.chain.contracts.escrow.events.ReceiptSettled
        logs = event.get_logs(argument_filters={"node": node}, from_block=self.from_block)
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
        """The settlement (transaction, block, time) of each of `keys` that the escrow paid."""
        found = find_settled(self.chain, keys)
        return {k: {"tx": s.tx, "block": s.block, "time": self.block_time(s.block)} for k, s in found.items()}

    def operator(self, node: str) -> dict[str, Any]:
        node = Web3.to_checksum_address(node)
        info = self.chain.node_info(node)
        pool = self.chain.contracts.reward_pool
        # The epochs the node contributed in, from the pool's events (a scan of every epoch would cost a call each).
        logs = pool.events.ContributionRecorded.get_logs(argument_filters={"node": node}, from_block=self.from_block)
        epochs = sorted({int(log["args"]["epoch"]) for log in logs})
        rewards = [
            {"epoch": e, "amount": str(a)} for e, a in sorted(claimable_rewards(self.chain, node, epochs).items())
        ]
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
