"""A deployment bound to a live chain: the calls the rest of inferchain makes (stake, deposit, settle, ...).

Every other room reaches the contracts through `Chain`; nothing outside `inferchain.wallet` imports web3.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from web3 import Web3

from inferchain.wallet.deployment import Deployment, DeploymentError, default_deployment_path
from inferchain.wallet.receipts import Receipt, SignedReceipt
from inferchain.wallet.tx import Sender, call_view, send, sender_address

RPC_TIMEOUT_S = 10.0


def connect(rpc_url: str, timeout_s: float = RPC_TIMEOUT_S) -> Web3:
    """A Web3 over HTTP JSON-RPC with a bounded request timeout; raises DeploymentError if unreachable."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
    try:
        w3.eth.chain_id  # noqa: B018 - probe the connection
    except Exception as exc:
        raise DeploymentError(f"no Ethereum JSON-RPC answering at {rpc_url}: {exc}") from exc
    return w3


class Chain:
    """The inferchain contracts of one deployment, on one chain."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.contracts = deployment.contracts(w3)

    @classmethod
    def open(cls, deployment: Deployment | Path | None = None, rpc_url: str | None = None) -> Chain:
        """Connects to the deployment's RPC URL (or `rpc_url`) and checks the contracts are there.

        Without `deployment`, reads the devnet's (`default_deployment_path()`, under $INFERCHAIN_HOME).
        """
        if deployment is None:
            deployment = default_deployment_path()
        dep = deployment if isinstance(deployment, Deployment) else Deployment.load(deployment)
        url = rpc_url or dep.rpc_url
        if not url:
            raise DeploymentError("the deployment records no RPC URL; pass one")
        w3 = connect(url)
        dep.check(w3)
        return cls(w3, dep)

    # -- token ---------------------------------------------------------------------------------------------

    def token_balance(self, account: str) -> int:
        return int(self.contracts.token.functions.balanceOf(Web3.to_checksum_address(account)).call())

    def approve(self, sender: Sender, spender: str, amount: int) -> Any:
        return send(self.w3, sender, self.contracts.token.functions.approve(spender, amount))

    # -- nodes ---------------------------------------------------------------------------------------------

    def register_node(self, sender: Sender, metadata_hash: bytes, stake: int = 0) -> None:
        """Registers the sender as a node and stakes `stake` token wei (approving the staking contract)."""
        staking = self.contracts.staking
        send(self.w3, sender, staking.functions.register(metadata_hash))
        if stake:
            self.stake(sender, stake)

    def stake(self, sender: Sender, amount: int) -> None:
        self.approve(sender, self.deployment.addresses.staking, amount)
        send(self.w3, sender, self.contracts.staking.functions.stake(amount))

    def is_routable(self, node: str) -> bool:
        return bool(self.contracts.staking.functions.isRoutable(Web3.to_checksum_address(node)).call())

    def node_info(self, node: str) -> dict[str, Any]:
        fields = (
            "registered",
            "metadata_hash",
            "stake",
            "unbonding",
            "unbonding_ready_at",
            "jailed_until",
            "slashed",
        )
        values = self.contracts.staking.functions.nodes(Web3.to_checksum_address(node)).call()
        return dict(zip(fields, values, strict=True))

    # -- buyers --------------------------------------------------------------------------------------------

    def deposit(self, sender: Sender, amount: int) -> None:
        """Approves the escrow and deposits `amount` token wei for the sender."""
        self.approve(sender, self.deployment.addresses.escrow, amount)
        send(self.w3, sender, self.contracts.escrow.functions.deposit(amount))

    def escrow_balance(self, buyer: str) -> int:
        return int(self.contracts.escrow.functions.balanceOf(Web3.to_checksum_address(buyer)).call())

    def authorize_signer(self, sender: Sender, signer: str, authorized: bool = True) -> None:
        fn = self.contracts.escrow.functions.setSignerAuthorization(
            Web3.to_checksum_address(signer), authorized
        )
        send(self.w3, sender, fn)

    def is_authorized_signer(self, buyer: str, signer: str) -> bool:
        fn = self.contracts.escrow.functions.isAuthorizedSigner
        return bool(fn(Web3.to_checksum_address(buyer), Web3.to_checksum_address(signer)).call())

    def authorized_signers(self, ttl_s: float = 30.0) -> Callable[[str, str], bool]:
        """`is_authorized_signer` with answers cached for `ttl_s` (a node asks once per paid session's close)."""
        cache: dict[tuple[str, str], tuple[float, bool]] = {}

        def check(buyer: str, signer: str) -> bool:
            now = time.monotonic()
            hit = cache.get((buyer, signer))
            if hit is None or now - hit[0] > ttl_s:
                hit = (now, self.is_authorized_signer(buyer, signer))
                cache[(buyer, signer)] = hit
            return hit[1]

        return check

    # -- settlement ----------------------------------------------------------------------------------------

    def is_settled(self, receipt: Receipt) -> bool:
        return bool(self.contracts.escrow.functions.settled(receipt.key).call())

    def receipt_digest(self, receipt: Receipt) -> bytes:
        """The escrow's EIP-712 digest of `receipt`; equals `receipt.digest(deployment.receipt_domain)`."""
        return bytes(call_view(self.contracts.escrow.functions.receiptDigest(receipt.as_tuple())))

    def settle(self, sender: Sender, signed: SignedReceipt) -> Any:
        fn = self.contracts.escrow.functions.settle(
            signed.receipt.as_tuple(), signed.node_signature, signed.buyer_signature
        )
        return send(self.w3, sender, fn, what="settle")

    def settle_batch_call(self, batch: Sequence[SignedReceipt]) -> Any:
        """The escrow's `settleBatch` call for `batch`, not sent."""
        return self.contracts.escrow.functions.settleBatch(
            [s.receipt.as_tuple() for s in batch],
            [s.node_signature for s in batch],
            [s.buyer_signature for s in batch],
        )

    def settle_batch(self, sender: Sender, batch: Sequence[SignedReceipt]) -> Any:
        """Settles `batch` in one transaction (all or nothing; the error names the failing receipt's key)."""
        return send(self.w3, sender, self.settle_batch_call(batch), what=f"settleBatch({len(batch)})")

    def earnings(self, node: str) -> int:
        return int(self.contracts.escrow.functions.earnings(Web3.to_checksum_address(node)).call())

    def claim_earnings(self, sender: Sender) -> int:
        before = self.token_balance(sender_address(sender))
        send(self.w3, sender, self.contracts.escrow.functions.claimEarnings())
        return self.token_balance(sender_address(sender)) - before
